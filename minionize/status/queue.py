"""The queue's own counters for ``minion-status`` and ``mtop``, when the engine can tell.

Which queue: the one named by ``--queue-dir`` (it overrides), else the ones the reports
name (each minion's start record says which queue it serves, see
:mod:`minionize.reporters.queue_ref`), else the configured one (``MINION_ENGINE`` ...,
for reports written before they named it). A directory of reports of several queues is
shown per queue (:func:`status_by_queue`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

from ..reporters.queue_ref import queue_variables, ref_key, ref_label
from .model import Status
from .read import Report, read_reports, summarize

#: The most params in flight listed to tell what lost minions hold (beyond: counters).
LIST_IN_FLIGHT = 10_000


@dataclass
class QueueAnswer:
    """What a queue said: its counters (None if unknown) and why not or what it is, and
    the params it has in flight (``id``, holder) when it can list them."""

    counters: Optional[dict[str, Any]]
    note: str
    in_flight: Optional[list[dict[str, Any]]] = None


def _ask(values: Optional[Mapping[str, str]], answer: dict[str, Any]) -> None:
    try:
        from ..config import Settings
        from ..engines import load_engine

        settings = Settings.from_env(values)
        if settings.engine.strip().lower() in ("sweep", "execo"):
            # Asking must not create an empty queue in the working directory.
            where = settings.env.str("EXECO_PERSISTENCE_DIR", "sweeps") or "sweeps"
            if not os.path.isdir(where):
                answer["note"] = f"queue size unknown: no sweep queue in {where}"
                return
        engine = load_engine(settings)
        counters = engine.status()
        answer["queue"] = dict(counters)
        answer["note"] = engine.describe()
        flying = counters.get("in_flight")
        if isinstance(flying, int) and 0 < flying <= LIST_IN_FLIGHT:
            answer["in_flight"] = _list_in_flight(engine)
        elif flying == 0:
            answer["in_flight"] = []
    except Exception as error:  # the queue is optional here: say why, go on
        answer["note"] = f"queue size unknown: {error}"


def _list_in_flight(engine: Any) -> Optional[list[dict[str, Any]]]:
    """The params in flight, if the engine can list them (``minion-queue list in-flight``)."""
    for kind in ("in-flight", "in_flight"):
        try:
            return [dict(r) for r in engine.list(kind) if isinstance(r, Mapping)]
        except Exception:  # not every engine can: the counters say enough
            continue
    return None


def ask_queues(
    queues: Mapping[Any, Optional[Mapping[str, str]]], timeout: float = 3.0
) -> dict[Any, QueueAnswer]:
    """Ask each queue (by key: the variables to build its engine from, None for the
    environment) at once, each in a thread, all within ``timeout`` seconds, so that an
    unreachable queue service cannot hang the status. Engines are not opened:
    ``status()`` is an administration call."""
    answers: dict[Any, dict[str, Any]] = {key: {} for key in queues}
    threads = {
        key: threading.Thread(target=_ask, args=(values, answers[key]), daemon=True,
                              name="minion-status-queue")
        for key, values in queues.items()
    }
    for thread in threads.values():
        thread.start()
    deadline = time.monotonic() + timeout
    result = {}
    for key, thread in threads.items():
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            note = f"queue size unknown: the queue did not answer within {timeout:g} s"
            result[key] = QueueAnswer(None, note)
        else:
            answer = answers[key]
            result[key] = QueueAnswer(answer.get("queue"), str(answer.get("note", "")),
                                      answer.get("in_flight"))
    return result


def query_queue(
    timeout: float = 3.0, values: Optional[Mapping[str, str]] = None
) -> tuple[Optional[dict[str, Any]], str]:
    """The counters of the queue ``values`` configure (default: the environment's,
    ``MINION_ENGINE`` ...), or None and why not."""
    answer = ask_queues({None: values}, timeout)[None]
    return answer.counters, answer.note


def reported_queue(directory: str | os.PathLike[str]) -> Optional[dict[str, str]]:
    """The variables of the one queue the reports in ``directory`` name (for ``mtop``),
    None when they name none, several, or one that cannot be asked."""
    reports, _ = read_reports(directory, time.time())
    refs = {ref_key(r.queue): r.queue for r in reports}
    if len(refs) != 1 or None in refs:
        return None
    try:
        return queue_variables(next(iter(refs.values())), os.environ)
    except ValueError:
        return None


@dataclass
class QueueGroup:
    """The runs of one queue in a report directory."""

    ref: Any
    label: str
    status: Status


def status_by_queue(
    directory: str | os.PathLike[str],
    lost_after: Optional[float] = None,
    ask: bool = True,
    override: Optional[Mapping[str, str]] = None,
    timeout: float = 3.0,
) -> tuple[Status, list[QueueGroup]]:
    """The reports of ``directory``: all of them, and per queue they name.

    ``override``: the variables of the queue to ask for every report (``--queue-dir``).
    Without it, each queue is asked as its reports name it; reports that name none
    (older ones) are matched with the configured queue. With one queue, the whole is that
    queue's; with several, the whole sums the reports (its ``queue`` is None) and each
    group has its own counters.
    """
    now = time.time()
    reports, warnings = read_reports(directory, now, lost_after)
    groups: dict[Any, list[Report]] = {}
    refs: dict[Any, Any] = {}
    for report in reports:
        key = None if override is not None else ref_key(report.queue)
        groups.setdefault(key, []).append(report)
        refs.setdefault(key, report.queue if key is not None else None)
    if not groups:
        groups[None] = []
    environment = dict(os.environ)
    if override is not None:
        environment.update(override)
    answers: dict[Any, QueueAnswer] = {}
    if ask:
        askable: dict[Any, Optional[Mapping[str, str]]] = {}
        for key in groups:
            try:
                askable[key] = environment if key is None else queue_variables(refs[key], environment)
            except ValueError as error:
                answers[key] = QueueAnswer(None, f"queue size unknown: {error}")
        answers.update(ask_queues(askable, timeout))
    none = QueueAnswer(None, "not asked (--no-queue)")
    shown = []
    for key, members in groups.items():
        answer = answers.get(key, none)
        status = summarize(directory, members, now, answer.counters, answer.note,
                           answer.in_flight)
        shown.append(QueueGroup(refs.get(key), ref_label(refs.get(key)), status))
    if len(shown) == 1:
        whole = shown[0].status
        whole.warnings.extend(warnings)
        return whole, shown
    # Lost minions were matched with their own queue above: what they hold stands.
    whole = summarize(directory, reports, now, warnings=warnings)
    whole.queue_note = f"{len(shown)} queues: see each below"
    remaining = [g.status.remaining for g in shown]
    if all(r is not None for r in remaining):
        whole.remaining = sum(r for r in remaining if r is not None)
    return whole, shown
