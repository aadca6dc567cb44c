"""Stops: SIGTERM and SIGINT (``kill PID``, a scheduler's stop, Ctrl-C) end a command cleanly, in any pass.

Inside :func:`stoppable` (every command's entry point: ``run.py``, ``evaluate``, the writers, the captioner) both
signals raise :class:`Stopped` in the main thread at once, wherever it is: training, an evaluation or masking pass
(where Lightning itself only sets a flag that its predict loop never reads), herding, a writer's loop. ``Stopped``
is a ``BaseException``, so no ``except Exception`` swallows it, and it is not a ``KeyboardInterrupt``, which
Lightning would turn into ``sys.exit(1)``. Every file is written atomically (:mod:`emmcil.atomic`), so a stop leaves
what was saved as it was. The entry point then says where re-running resumes and exits with
:data:`STOPPED_EXIT_CODE`, which tells "stopped, re-run to resume" apart from "finished" (0) and "failed" (1): the
experiment scripts and the SLURM script read it so.

A block that must not be cut short (a phase's checkpoint and results) runs inside :func:`deferred`: a signal that
arrives there is raised when the block ends. Forked DataLoader workers inherit the handler and ignore the signals
(the main process stops them); an error that follows a stop (a worker that the same signal killed, seen by the
main process while it stops) is the stop too (:func:`stop_of`).
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
from typing import Iterator

# EX_TEMPFAIL of sysexits.h, "a temporary failure: the user is invited to retry": a stopped command resumes (or
# starts again) when it is run again.
STOPPED_EXIT_CODE = 75
SIGNALS = (signal.SIGTERM, signal.SIGINT)

# torch's message for a DataLoader worker that a signal killed: "DataLoader worker (pid 123) is killed by signal:
# Terminated."
_WORKER_KILLED = re.compile(r"DataLoader worker \(pid.*\) is killed by signal: (Terminated|Interrupt)")


class Stopped(BaseException):
    """The command was stopped by ``signum`` (SIGTERM or SIGINT)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    def __str__(self) -> str:
        return f"stopped by {self.signal_name}"


class _State:
    owner: int | None = None   # the process that installed the handlers (a forked worker is another one)
    depth = 0                  # nested stoppable() blocks
    deferring = 0              # nested deferred() blocks
    received: int | None = None  # the signal that asked for the stop


_state = _State()


def _handler(signum, frame) -> None:
    if os.getpid() != _state.owner:  # a forked DataLoader worker: the main process stops it
        return
    if _state.received is not None:  # a second signal while stopping: the stop is already under way
        return
    _state.received = signum
    if not _state.deferring:
        raise Stopped(signum)


@contextlib.contextmanager
def stoppable() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise :class:`Stopped` (in the main thread; elsewhere a no-op). The
    previous handlers come back on exit; call :func:`stop_of` inside the block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS} if _state.depth == 0 else {}
    if _state.depth == 0:
        _state.owner, _state.received = os.getpid(), None
        for s in SIGNALS:
            signal.signal(s, _handler)
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        if _state.depth == 0:
            for s, h in previous.items():
                signal.signal(s, h if h is not None else signal.SIG_DFL)
            _state.owner, _state.received = None, None


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A block that a stop must not cut short: a signal received inside it raises :class:`Stopped` when the block
    has ended (and not if the block raised something else)."""
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
    if not _state.deferring and _state.received is not None:
        raise Stopped(_state.received)


def requested() -> int | None:
    """The signal that asked for a stop in this :func:`stoppable` block, or None."""
    return _state.received


def stop_of(error: BaseException) -> Stopped | None:
    """``error`` as a stop, or None: a :class:`Stopped`; any error once a stop was asked for (e.g. Lightning or a
    DataLoader failing while the stop unwinds it); a DataLoader worker killed by SIGTERM or SIGINT."""
    if isinstance(error, Stopped):
        return error
    if _state.received is not None and isinstance(error, BaseException):
        return Stopped(_state.received)
    seen = set()
    while error is not None and id(error) not in seen:  # the worker's death may be the cause of what is raised
        seen.add(id(error))
        match = _WORKER_KILLED.search(str(error))
        if match:
            return Stopped(signal.SIGTERM if match.group(1) == "Terminated" else signal.SIGINT)
        error = error.__cause__ or error.__context__
    return None
