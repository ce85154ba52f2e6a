"""The small kit that every engine uses, so that siblings behave alike.

* :func:`optional_import`: an engine's client library, imported lazily, with the
  ``pip install 'minionize[extra]'`` hint when it is missing.
* :func:`redact`: a URL or message without its credentials, for every message and report.
* :class:`Outage`: the one outage policy. An engine call that fails because the server
  cannot be reached is retried with a growing pause (0.1 s, doubling, at most 5 s) for
  ``MINION_OUTAGE_TIMEOUT`` seconds (default 60) counted from the first failure; then
  :class:`~minionize.errors.EngineError` names the queue and how long it was down. Nothing
  is lost meanwhile: params in flight keep their leases on the server side, or come back
  when those expire. It also tells since when the server has been reachable
  (``Outage.up_since``, an engine's ``reachable_since``): the minion's idle time counts
  only from then, so an outage never looks like an empty queue.
* :class:`Calls`: the one shape of a client's calls to its library, held by each
  engine's client: ``calls(what, fn)`` runs ``fn()`` inside the client's ``errors(what)``
  (which turns its library's exceptions into ours: :class:`Unreachable` while the server
  cannot be reached, ConfigError for a wrong setting, EngineError naming ``what`` for the
  rest) and, for the worker's verbs, under its :class:`Outage`.
"""

from __future__ import annotations

import importlib
import logging
import re
import threading
import time
from contextlib import AbstractContextManager
from types import ModuleType
from typing import Callable, Optional, TypeVar

from ..errors import EngineError, MissingExtraError

log = logging.getLogger("minionize.engines")

T = TypeVar("T")

#: Default of ``MINION_OUTAGE_TIMEOUT``: how long an engine rides out an unreachable server.
DEFAULT_OUTAGE_SECONDS = 60.0
_FIRST_PAUSE = 0.1
_LONGEST_PAUSE = 5.0


def optional_import(module: str, what: str, extra: str, package: str | None = None) -> ModuleType:
    """``importlib.import_module(module)``, or :class:`MissingExtraError` saying
    ``pip install 'minionize[extra]'`` (``what`` is e.g. ``"the redis engine"``)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(what, extra, package or module) from None


# user:password@, :password@, user@ (a token as user name), and ?password=... / &password=
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@")
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&;](?:password|passwd|pass|pwd|token|secret|auth|access_token|api_key|key)=)[^&#\s]*",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with every credential in a URL replaced by ``***``: the user-info part
    (everything before the last ``@`` of the authority, since a password may itself hold
    ``@``) and query parameters such as ``password=`` or ``token=``."""
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}***@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m.group('key')}***", text)


class Unreachable(EngineError):
    """The queue's server cannot be reached now (refused, reset, timed out, unavailable):
    what :class:`Outage` rides out. Raised by an engine's ``_errors``; the message names
    the setting to check."""


class Interrupted(Exception):
    """A take that was riding out an outage gave up: the minion stops (nothing taken)."""


class Outage:
    """The outage policy for one engine. ``outage.call(fn, transient)`` runs ``fn()``,
    retrying while it raises one of ``transient`` and the server has been unreachable for
    less than ``limit`` seconds; then it raises :class:`EngineError`.

    ``what`` names the queue in messages (``"redis stream minion-params at redis://..."``,
    already redacted). One object per engine instance: it remembers when the outage
    started, so that a take loop that calls it again and again still gives up on time.
    """

    def __init__(self, what: str, limit: float = DEFAULT_OUTAGE_SECONDS,
                 sleep: Optional[Callable[[float], None]] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.limit = limit
        #: Set when the minion stops: a take riding out the outage gives up at once.
        self.stopping = threading.Event()
        self._sleep = sleep or self._pause
        self._clock = clock
        self._down_since: float | None = None
        self._up_since = clock()

    @property
    def down(self) -> bool:
        """True while the last call failed and the outage is still being ridden out."""
        return self._down_since is not None

    @property
    def up_since(self) -> float | None:
        """When (``clock()``) the server was last reached after an outage (or this
        policy was made); None while it cannot be reached."""
        return None if self._down_since is not None else self._up_since

    def _pause(self, seconds: float) -> None:
        self.stopping.wait(seconds)

    def call(self, fn: Callable[[], T],
             transient: tuple[type[BaseException], ...] = (Unreachable,),
             interruptible: bool = False) -> T:
        """``fn()``, ridden out while it raises ``transient``. ``interruptible`` (a take):
        once :attr:`stopping` is set, an unreachable server raises :class:`Interrupted`
        at once instead of being waited for (a settle is always ridden out)."""
        pause = _FIRST_PAUSE
        while True:
            started = self._clock()
            try:
                result = fn()
            except transient as exc:
                now = self._clock()
                if self._down_since is None:
                    # From the start of the call that failed: a client that takes its own
                    # time to give up must not stretch the limit.
                    self._down_since = started
                    log.warning("%s is unreachable (%s); retrying for up to %gs "
                                "(MINION_OUTAGE_TIMEOUT)", self.what, redact(str(exc)), self.limit)
                down_for = now - self._down_since
                if interruptible and self.stopping.is_set():
                    raise Interrupted(self.what) from None
                if down_for >= self.limit:
                    raise EngineError(
                        f"{self.what} unreachable for {down_for:.0f}s: {redact(str(exc))} "
                        f"(raise MINION_OUTAGE_TIMEOUT to wait longer)"
                    ) from None
                self._sleep(min(pause, self.limit - down_for))
                pause = min(pause * 2, _LONGEST_PAUSE)
                if interruptible and self.stopping.is_set():
                    raise Interrupted(self.what) from None
                continue
            if self._down_since is not None:
                log.warning("%s is reachable again", self.what)
                self._down_since = None
                self._up_since = self._clock()
            return result


class Calls:
    """How one client calls its library. ``errors(what)`` is the client's context that
    turns its library's exceptions into :class:`Unreachable`,
    :class:`~minionize.errors.ConfigError` or :class:`EngineError` naming ``what``;
    ``outage`` is the client's outage policy (one per engine instance)."""

    def __init__(self, errors: Callable[[str], AbstractContextManager[None]],
                 outage: Outage) -> None:
        self._errors = errors
        self.outage = outage

    def __call__(self, what: str, fn: Callable[[], T], *, ride_out: bool = True,
                 interruptible: bool = False) -> T:
        """``fn()`` with its errors translated; retried while the server is unreachable
        when ``ride_out`` (the worker's verbs), else failing at once (a command);
        ``interruptible``: see :meth:`Outage.call`."""

        def once() -> T:
            with self._errors(what):
                return fn()

        return self.outage.call(once, interruptible=interruptible) if ride_out else once()

    def reachable_since(self) -> float | None:
        """:meth:`Engine.reachable_since <minionize.engines.base.Engine.reachable_since>`
        from the outage policy: every worker's call goes through it."""
        return self.outage.up_since
