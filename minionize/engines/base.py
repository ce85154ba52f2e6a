"""The Engine protocol: where params come from, and where their outcome goes back.

An engine hands out :class:`Delivery` objects and settles each one exactly once, in one
of four ways chosen by the minion loop (never by the engine):

* :meth:`Engine.ack`: the param succeeded; it is done.
* :meth:`Engine.retry`: an attempt failed; put the param back, the attempt counts.
* :meth:`Engine.release`: the minion stops (SIGTERM); put the param back, the attempt
  does not count.
* :meth:`Engine.dead_letter`: the last attempt failed; keep the param, with the reason,
  where a person can see and replay it. Never mark it done.

Threads: :meth:`Engine.take` is called by one thread at a time; the settling methods and
:meth:`Engine.extend` may be called from other threads at the same time, so engines
guard their state with a lock.

Queue administration (``minion-queue``) uses the optional methods at the end
(:meth:`fill`, :meth:`status`, ...); an engine that cannot do one raises
:class:`~minionize.errors.UnsupportedOperation`.

The contract every engine keeps, checked for each of them by one parametrized suite
(``tests/integration/test_engine_contract.py``):

* ``attempt`` counts from 1. A retry counts an attempt, a release never does, and an
  expired lease does (the run started) where the engine can know it.
* A lease (:meth:`lease_renewal_interval`, :meth:`extend`) keeps a running param from every
  other minion; once it expires, the param goes to another minion.
* Params are stored as canonical JSON (``kit.canonical_json``): equal params are one
  param, and NaN or infinities are refused (ValueError), never written.
* :meth:`fill` skips a param already in the queue, done or not, where the engine keeps a
  record of what it holds (sweep, redis, memory; Pub/Sub and Pulsar cannot).
* :meth:`status` returns exactly the keys of :data:`STATUS_KEYS` (ints, or None where
  the engine cannot know); :meth:`list` rows have ``id``, ``param``, ``attempts`` (the
  attempts that ran: a param done on its first run says 1) and, for dead letters,
  ``reason``.
* An unreachable server is ridden out for ``MINION_OUTAGE_TIMEOUT`` seconds under the
  one outage policy (``kit.Outage``), then :class:`~minionize.errors.EngineError`.
  Meanwhile it is an outage, never an empty queue: :meth:`take` does not return nothing
  for a server it could not ask, and :meth:`reachable_since` says when the outage ended
  (the idle timeout counts from then; ``tests/integration/test_engine_outage.py``).
* Messages never carry a credential (``kit.redact``).
* An engine with ``keeps_results = True`` stores the result given to
  ``ack(delivery, result)`` (the JSON text of what the task returned) with the param, and
  :meth:`results` reads them back in queue order: ``minion-queue results``. The loop
  passes a result only to such an engine.

How an engine on a queue service is laid out (redis, pubsub, pulsar; copy ``pulsar``,
the smallest, to write a new one), one package per engine:

* ``engine.py``: the engine class, keyword-only constructor and ``from_settings``, then
  the minion's verbs in this order: taking, settling, leases, lifecycle. It holds its
  client and its admin, never inherits them.
* ``client.py``: what the minion's verbs and the administration share: the client
  (imported with ``kit.optional_import``), decoding a message, and ``errors(what)``,
  the one place where the client's exceptions become ours (``kit.Unreachable``,
  ConfigError, EngineError); every call goes through ``calls(what, fn)``
  (``kit.Calls``), which rides out an outage for the minion's verbs.
* ``admin.py``: ``minion-queue``'s verbs (fill, list, requeue_dead, reset_expired,
  status, results), an :class:`Admin` over the same client, which the engine returns
  from :meth:`Engine.administration` (the engine's verbs of those names hand
  themselves to it; a verb the admin lacks is unsupported).
"""

from __future__ import annotations

import abc
import enum
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from ..errors import UnsupportedOperation
from ..params import Param

if TYPE_CHECKING:
    from ..config import Settings

#: The keys of :meth:`Engine.status`, the same for every engine.
STATUS_KEYS = ("todo", "in_flight", "expired", "done", "dead", "total")


class Settle(enum.Enum):
    """How a delivery is settled, the loop's choice (:mod:`minionize.minion.settle`):
    :meth:`Engine.ack`, :meth:`Engine.retry`, :meth:`Engine.dead_letter` or
    :meth:`Engine.release`. Not the callback's :class:`~minionize.callbacks.base.Outcome`
    (ok, failed, rejected: how the task ended), which the loop turns into a settle.

    The values are the words of reports and counts (a task record's ``outcome``), in
    the order of a report's counts.
    """

    DONE = "done"
    RETRY = "retry"
    DEAD = "dead"
    RELEASED = "released"


@dataclass
class Delivery:
    """One param handed to this minion, for one attempt.

    ``id`` is the engine's stable name for the param (the same across attempts where the
    engine can tell); ``attempt`` counts from 1; ``handle`` is private to the engine.
    ``error`` is set by an engine that could not decode the message: the loop then
    dead-letters it at once with that reason instead of running it (a bad message never
    crash-loops a minion). ``number`` is the param's position in its input, counting from
    1, where the engine knows it (the file engine's line or record number): GNU
    parallel's ``{#}``.
    """

    param: Param
    id: str
    attempt: int = 1
    handle: Any = None
    error: Optional[str] = None
    number: Optional[int] = None


def _renewal_by_old_name(self: Engine) -> Optional[float]:
    """``lease_renewal_interval`` of an engine that overrides only ``heartbeat_interval``."""
    return self.heartbeat_interval()


class Engine(abc.ABC):
    """A queue of params. Subclasses keep this method order: construction, taking,
    settling, leases, lifecycle, administration."""

    #: The name users give in ``MINION_ENGINE``.
    name: ClassVar[str] = "engine"
    #: Whether :meth:`ack` stores a task's result and :meth:`results` reads it back.
    keeps_results: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "heartbeat_interval" in vars(cls) and "lease_renewal_interval" not in vars(cls):
            # An engine written for the old name: the loop asks the new one, which
            # answers with the old one's value, even over a parent's new-name method.
            warnings.warn(
                f"{cls.__qualname__}.heartbeat_interval is deprecated: name it "
                "lease_renewal_interval (it still works meanwhile)",
                DeprecationWarning,
                stacklevel=2,
            )
            cls.lease_renewal_interval = _renewal_by_old_name  # type: ignore[method-assign]

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings: Settings) -> Engine:
        """Build the engine from validated settings; engine variables are read from
        ``settings.env`` (raise :class:`~minionize.errors.ConfigError` naming them)."""

    # -- taking ----------------------------------------------------------------------
    @abc.abstractmethod
    def take(self, max_count: int, timeout: float) -> list[Delivery]:
        """Up to ``max_count`` deliveries, waiting at most ``timeout`` seconds for the
        first. An empty list means none right now; see :meth:`exhausted`."""

    def exhausted(self) -> bool:
        """True when nothing will ever be available again (a finite queue is drained).

        The loop asks this after an empty :meth:`take`, when this minion runs nothing.
        Endless queues (Pub/Sub, Redis, Pulsar) return False and rely on
        ``MINION_IDLE_TIMEOUT``.
        """
        return False

    def reachable_since(self) -> Optional[float]:
        """Since when (a ``time.monotonic()`` value) the engine has reached its server
        without a failure; None while it cannot (an outage being ridden out).

        An empty :meth:`take` means "asked, and nothing now" only for an engine that
        could ask: ``MINION_IDLE_TIMEOUT`` counts from this time on, never during an
        outage. Engines built on ``kit.Calls`` get it from the outage policy (every
        call of the minion's verbs goes through it); the default, 0.0, is an engine
        without a server (file, sweep, memory), always reachable. An engine whose
        client hides an outage (it only times out) must raise ``kit.Unreachable`` in
        :meth:`take` rather than return nothing.
        """
        return 0.0

    def peek(self, limit: int) -> Iterable[Param]:
        """Up to ``limit`` params that would be taken next, without taking them (``DRY``):
        a list, or an iterator that reads them as they are asked for (the sweep engine's:
        ``DRY=1`` asks for every param and shows each as it comes)."""
        raise UnsupportedOperation(f"the {self.name} engine cannot show params without taking them")

    # -- settling --------------------------------------------------------------------
    @abc.abstractmethod
    def ack(self, delivery: Delivery, result: Optional[str] = None) -> None:
        """The param succeeded. ``result``: the JSON text of what the task returned
        (given only to an engine that :attr:`keeps_results`; None: nothing returned),
        stored with the param so that :meth:`results` reads it back."""

    @abc.abstractmethod
    def retry(self, delivery: Delivery, reason: str) -> None:
        """The attempt failed and attempts remain: make the param available again."""

    @abc.abstractmethod
    def release(self, delivery: Delivery) -> None:
        """Give the param back without counting an attempt (graceful stop)."""

    @abc.abstractmethod
    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """The last attempt failed: keep the param aside with ``reason``."""

    # -- leases ----------------------------------------------------------------------
    def lease_renewal_interval(self) -> Optional[float]:
        """How often the loop must renew leases with :meth:`extend` while tasks run
        (None: never)."""
        return None

    def heartbeat_interval(self) -> Optional[float]:
        """The old name of :meth:`lease_renewal_interval`, kept because third-party
        engines may still override it (with a DeprecationWarning): override the new
        name; the loop calls only the new one. A heartbeat is a report's sign of life
        (:meth:`minionize.reporters.base.Reporter.heartbeat`), never a lease renewal."""
        if type(self).lease_renewal_interval is _renewal_by_old_name:
            return None  # an old engine's super().heartbeat_interval(), as it always was
        return self.lease_renewal_interval()

    def stop_waiting(self) -> None:
        """The minion stops: a :meth:`take` riding out an outage returns now, with
        nothing (what the server holds stays there). Engines that ride out outages do it;
        the others have nothing to interrupt."""

    def extend(self, deliveries: Sequence[Delivery]) -> None:
        """Renew the leases of running deliveries."""

    def flush(self) -> None:
        """Write settles the engine batched. The loop calls it every 0.1 s (and
        :meth:`close` must do it), so a batched settle waits at most that long; a
        crash in between loses the record, never the param (its lease brings it back)."""

    # -- lifecycle -------------------------------------------------------------------
    def create(self) -> None:
        """Create the queue if it does not exist (``minion-queue fill`` calls it before
        :meth:`open`; a minion never does, so a mistyped queue name is an error)."""

    def open(self) -> None:
        """Connect and check that the queue is usable; raise EngineError/ConfigError."""

    def close(self) -> None:
        """Release resources. Called once, after every delivery was settled."""

    def describe(self) -> str:
        """A short human description (``sweep queue in ./sweeps``)."""
        return f"{self.name} engine"

    # -- administration (minion-queue) -----------------------------------------------
    def administration(self) -> Admin:
        """The object that does ``minion-queue``'s verbs on this engine's queue. An engine
        with an administration returns its own (built over the same client); by default
        every verb is unsupported. The verbs below hand themselves to it."""
        return Admin(self.name)

    def counts_params(self) -> bool:
        """Whether :meth:`status` can count this queue's params (the engine, or its
        administration, implements it), e.g. for ``--progress``'s total."""
        return type(self).status is not Engine.status or (
            type(self.administration()).status is not Admin.status)

    def fill(self, params: Iterable[Param]) -> tuple[int, int]:
        """Add params; return (added, skipped as already present, done or not).
        Raises ValueError for what standard JSON cannot hold (NaN, infinities)."""
        return self.administration().fill(params)

    def status(self) -> dict[str, Any]:
        """Counters, with exactly the keys of :data:`STATUS_KEYS`: ``todo``,
        ``in_flight``, ``expired``, ``done``, ``dead``, ``total`` (ints; None for a
        counter the engine cannot know, documented by the engine)."""
        return self.administration().status()

    def requeue_dead(self) -> int:
        """Make dead-lettered params available again; return how many."""
        return self.administration().requeue_dead()

    def reset_expired(self) -> int:
        """Put params whose lease expired back now; return how many."""
        return self.administration().reset_expired()

    def list(self, kind: str) -> Iterator[dict[str, Any]]:
        """Records of ``kind`` (``done`` or ``dead``), each with ``id``, ``param``,
        ``attempts`` (the attempts that ran) and, for dead letters, ``reason``."""
        return self.administration().list(kind)

    def results(self) -> Iterator[dict[str, Any]]:
        """Every done param in queue order (the order it was filled in), with ``id``,
        ``param`` and ``result``: the value its task returned, decoded from JSON (None
        when it returned nothing). Only an engine that :attr:`keeps_results`."""
        return self.administration().results()


class Admin:
    """The administration half of the contract: ``minion-queue``'s verbs on one queue
    (see :class:`Engine`'s verbs of the same names for what each returns). An engine's
    admin overrides those it can do; the others raise UnsupportedOperation naming the
    engine (``engine_name``)."""

    def __init__(self, engine_name: str) -> None:
        self.engine_name = engine_name

    def fill(self, params: Iterable[Param]) -> tuple[int, int]:
        raise UnsupportedOperation(f"the {self.engine_name} engine cannot be filled by minion-queue")

    def status(self) -> dict[str, Any]:
        raise UnsupportedOperation(f"the {self.engine_name} engine cannot report its status")

    def requeue_dead(self) -> int:
        raise UnsupportedOperation(f"the {self.engine_name} engine cannot requeue dead letters")

    def reset_expired(self) -> int:
        raise UnsupportedOperation(f"the {self.engine_name} engine has no leases to reset")

    def list(self, kind: str) -> Iterator[dict[str, Any]]:
        raise UnsupportedOperation(f"the {self.engine_name} engine cannot list {kind} params")

    def results(self) -> Iterator[dict[str, Any]]:
        raise UnsupportedOperation(
            f"the {self.engine_name} engine does not keep results (the sweep, file and redis "
            "engines do)"
        )
