"""The wire between the minion and a function's process (see :mod:`.callback`).

One socket pair per function process. Each message is a frame: ``MAGIC``, the payload's
length (8 bytes), then a pickle. The minion sends ``("call", seq, param)``; the function
process answers ``("reply", seq, pid, outcome)``, ``seq`` being the request's number and
``pid`` its own. So every reply is matched to its request and to its writer:

* a process the function forked that comes back into the function process's loop (its
  function returned, or raised, in the child too) never reads a param: it answers
  ``("forked", seq, its pid, None)`` and exits, and the minion fails that attempt;
* a function process whose function forked checks, before it replies, that none of its
  children still holds the pipe (``/proc``): one that does could answer later, so the
  attempt fails and the function process is replaced;
* the minion never waits forever: it watches the function process (a pidfd, or a poll)
  while it reads, so one that died is a lost attempt even when a forked child keeps
  its end of the pipe open; a frame that does not begin with ``MAGIC``, cannot be
  unpickled, or stops in its middle for ``STALL_SECONDS`` is garbage
  (:class:`WireError`).
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import signal
import socket
import struct
import sys
import threading
import time
from typing import Any, Callable, Optional

from ..process.reaper import TOKEN_VARIABLE, Reaper

MAGIC = b"MNW1"
HEADER = struct.Struct("!4sQ")
#: A frame begun but not finished after this long (the process alive) is garbage.
STALL_SECONDS = 30.0
#: How often the minion looks at the process while waiting (without a pidfd, or for
#: a stalled frame).
POLL_SECONDS = 0.2
#: What a function process's reply says of a forked child that answered.
SECOND_WRITER = ("the function forked: a second process (pid {pid}) answered on the worker's "
                 "pipe; a forked child must end with os._exit(), never return or raise")
HELD_PIPE = ("the function forked: a second process (pid {pid}) still holds the worker's "
             "pipe as the function returns; wait for the processes it forks, or end them "
             "with os._exit()")

log = logging.getLogger(__name__)

#: The function process's end of its socket (in that process only; for tests).
process_fd: Optional[int] = None


class WireError(Exception):
    """The function process sent something that is not a frame of the wire."""


class ProcessGone(Exception):
    """The function process exited (or closed its end) and no whole message is left to
    read."""


def frame(message: Any) -> bytes:
    """``message`` as one frame (pickled first: an unpicklable value raises here, before
    anything is written)."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(MAGIC, len(payload)) + payload


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_exactly(fd: int, size: int) -> bytes:
    """``size`` bytes from ``fd`` (blocking); EOFError when it ends first."""
    chunks, left = [], size
    while left:
        data = os.read(fd, min(left, 1 << 20))
        if not data:
            raise EOFError
        chunks.append(data)
        left -= len(data)
    return b"".join(chunks)


def read_frame(fd: int) -> Any:
    """The next message on ``fd`` (the function process's side: its requests come from
    the minion)."""
    magic, size = HEADER.unpack(read_exactly(fd, HEADER.size))
    if magic != MAGIC:
        raise WireError("not a frame")
    return pickle.loads(read_exactly(fd, size))


class Receiver:
    """The minion's side of one function process's socket: whole messages, never a wait
    that the process's death cannot end."""

    def __init__(self, fd: int, pid: int) -> None:
        self.fd = fd
        self.buffer = bytearray()
        self.exited_fd: Optional[int] = None
        self._poller: Optional[Any] = None
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            try:
                self.exited_fd = pidfd_open(pid)
            except OSError:  # an old kernel
                self.exited_fd = None

    def _parse(self) -> tuple[bool, Any]:
        if len(self.buffer) < HEADER.size:
            return False, None
        magic, size = HEADER.unpack_from(self.buffer)
        if magic != MAGIC:
            raise WireError(f"the worker sent something that is not a reply "
                            f"({bytes(self.buffer[:16])!r})")
        end = HEADER.size + size
        if len(self.buffer) < end:
            return False, None
        payload = bytes(self.buffer[HEADER.size:end])
        del self.buffer[:end]
        try:
            return True, pickle.loads(payload)
        except Exception as exc:
            raise WireError(f"the worker sent a reply that cannot be read: "
                            f"{type(exc).__name__}: {exc}") from None

    def receive(self, alive: Callable[[], bool]) -> Any:
        """The next message. ProcessGone once ``alive()`` is false (or the socket ended)
        and nothing whole is left; WireError for garbage."""
        poller = self._poller
        if poller is None:
            poller = self._poller = select.poll()
            poller.register(self.fd, select.POLLIN)
            if self.exited_fd is not None:
                poller.register(self.exited_fd, select.POLLIN)
        stalled_since: Optional[float] = None
        while True:
            whole, message = self._parse()
            if whole:
                return message
            events = dict(poller.poll(POLL_SECONDS * 1000 if self.exited_fd is None
                                      or self.buffer else None))
            if events.get(self.fd):
                try:
                    data = os.read(self.fd, 1 << 20)
                except OSError:
                    data = b""
                if not data:
                    raise ProcessGone
                self.buffer += data
                stalled_since = None
                continue
            if not alive():
                raise ProcessGone
            if self.buffer:
                now = time.monotonic()
                stalled_since = stalled_since or now
                if now - stalled_since > STALL_SECONDS:
                    raise WireError("the worker's reply stopped in its middle")

    def close(self) -> None:
        self._poller = None
        if self.exited_fd is not None:
            try:
                os.close(self.exited_fd)
            except OSError:
                pass
            self.exited_fd = None


def pipe_holders(fd: int) -> list[int]:
    """The children of this process (any thread's) that have ``fd``'s socket open:
    processes the function forked that could still answer on it (Linux; [] elsewhere)."""
    if not sys.platform.startswith("linux"):
        return []
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return []
    holders = []
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children") as handle:
                children = handle.read().split()
        except OSError:
            continue
        for child in children:
            try:
                names = os.listdir(f"/proc/{child}/fd")
            except OSError:  # gone, or a zombie
                continue
            for name in names:
                try:
                    if os.readlink(f"/proc/{child}/fd/{name}") == target:
                        holders.append(int(child))
                        break
                except OSError:
                    continue
    return holders


def serve(fd: int, run: Callable[[Any], tuple[bool, Any, str, str]]) -> None:
    """The function process's loop: a request in, its reply out, until the
    minion closes its end. ``run(param)`` is ``(ok, value, reason, tail)``."""
    global process_fd
    process_fd = fd
    me = os.getpid()
    forks = [0]
    os.register_at_fork(before=lambda: forks.__setitem__(0, forks[0] + 1))
    while True:
        try:
            _, seq, param = read_frame(fd)
        except (EOFError, OSError, WireError):
            return
        before = forks[0]
        outcome = run(param)
        if os.getpid() != me:  # a child the function forked came back here
            try:
                write_all(fd, frame(("forked", seq, os.getpid(), None)))
            finally:
                os._exit(0)
        if forks[0] != before:
            holders = pipe_holders(fd)
            if holders:
                outcome = (False, None, HELD_PIPE.format(pid=holders[0]), "")
        try:
            data = frame(("reply", seq, me, outcome))
        except Exception as exc:  # an unpicklable return value
            data = frame(("reply", seq, me, (False, None, f"the return value cannot be "
                                                          f"sent back: {exc}", "")))
        write_all(fd, data)


def watch_parent(parent: int, every: float) -> None:
    """In the function process: exit when the minion is gone (a minion killed with
    SIGKILL must not leave its function running for hours)."""

    def watch() -> None:
        while True:
            time.sleep(every)
            if os.getppid() != parent:
                # With what the function started in its process group (its
                # own setsid children carry the reaper's token).
                try:
                    os.killpg(0, signal.SIGKILL)
                finally:
                    os._exit(70)

    threading.Thread(target=watch, name="minion-parent-watch", daemon=True).start()


class FunctionProcess:
    """One forked function process and the minion's end of its socket."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self.fd = fd
        self.receiver = Receiver(fd, pid)
        self.tasks = 0
        self.status: Optional[int] = None
        #: Set when it must not take another param (a process it forked answered).
        self.spoiled = False
        #: What the callback remembers of this process (what it sent it already).
        self.memo: dict[str, Any] = {}

    def running(self) -> bool:
        """False once the function process has exited (it is then reaped)."""
        if self.status is not None:
            return False
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            self.status = 0
            return False
        if pid:
            self.status = status
            return False
        return True

    def reap(self) -> int:
        """Wait for the (dying) function process; its wait status."""
        if self.status is None:
            try:
                _, self.status = os.waitpid(self.pid, 0)
            except ChildProcessError:
                self.status = 0
        return self.status

    def close(self) -> None:
        self.receiver.close()
        try:
            os.close(self.fd)
        except OSError:
            pass

    def stop(self, kill: bool = False) -> None:
        """Close the socket (the process exits at EOF) and reap it; kill its process
        group if it lingers (or at once with ``kill``: what it forked goes too)."""
        self.close()
        if self.status is None:
            try:
                if kill or os.waitpid(self.pid, os.WNOHANG)[0] == 0:
                    os.killpg(self.pid, signal.SIGKILL)  # before the reap: pid still ours
            except (ChildProcessError, ProcessLookupError, PermissionError):
                pass
        self.reap()

    def reply(self, seq: int) -> tuple[bool, Any, str, str]:
        """The process's outcome ``(ok, value, reason, tail)`` for request ``seq``. A
        message from another process (one the function forked) fails the attempt when it
        answers this request, and spoils this process (it is replaced) whatever request it
        names."""
        while True:
            message = self.receiver.receive(self.running)
            try:
                kind, number, pid, outcome = message
            except (TypeError, ValueError):
                raise WireError(f"the worker sent something that is not a reply "
                                f"({type(message).__name__})") from None
            if kind == "forked" or pid != self.pid:
                self.spoiled = True
                if number == seq:
                    return False, None, SECOND_WRITER.format(pid=pid), ""
                log.warning("a process forked by the function (pid %s) answered an earlier "
                            "request; its worker is replaced", pid)
                continue
            if number != seq or kind != "reply":
                raise WireError(f"the worker answered request {number!r}, not {seq}")
            try:
                ok, value, reason, tail = outcome
            except (TypeError, ValueError):
                raise WireError("the worker sent a reply that is not an outcome") from None
            if not ok and str(reason).startswith("the function forked"):
                self.spoiled = True
            return bool(ok), value, str(reason), str(tail)


def fork_process(run: Callable[[Any], tuple[bool, Any, str, str]], inherited: list[int],
                 reaper: Reaper, check_every: float) -> FunctionProcess:
    """Fork a function process that serves ``run(param)``. ``inherited``: the minion's
    descriptors of the other function processes, closed in the new one."""
    ours, theirs = (s.detach() for s in socket.socketpair())
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the function process: never returns
        code = 0
        try:
            os.setpgid(0, 0)
            watch_parent(parent, check_every)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            # Ctrl-C reaches the minion, which stops its tasks itself.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            reaper.forget_after_fork()  # only the minion keeps the reaper awake
            # What the function starts carries the token, for the reaper to find it.
            os.environ[TOKEN_VARIABLE] = reaper.token
            for fd in (ours, *inherited):
                os.close(fd)
            serve(theirs, run)
        except BaseException:
            code = 70
        finally:
            os._exit(code)
    os.close(theirs)
    try:
        os.setpgid(pid, pid)  # also from here: no race with a signal sent at once
    except OSError:
        pass
    return FunctionProcess(pid, ours)
