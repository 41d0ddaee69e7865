"""SIGTERM to a process running a flow: the flow run ends Crashed, naming the signal.

While a top-level flow run is in progress on the main thread, and SIGTERM still has its default
action (nobody else installed a handler), SIGTERM raises `TerminationSignal` where the main
thread is. The flow's engine catches it like any other crash: the run's state is Crashed with
the signal's name, its on_crashed hooks run and its log says so; then the exception goes on.
It is a `SystemExit` whose code is 128 + the signal number, so a script ends as a process
killed by the signal is reported by a shell (143 for SIGTERM), with no traceback.

Example:
    >>> with crash_on_sigterm():
    ...     run_the_flow()
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["TerminationSignal", "crash_on_sigterm"]


class TerminationSignal(SystemExit):
    """The process running a flow was asked to stop by a signal (Prefect's name)."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signal = signum
        self.signal_name = signal.Signals(signum).name

    def __str__(self) -> str:
        return f"the flow run's process received {self.signal_name} (signal {self.signal})"


def _raise(signum: int, frame: FrameType | None) -> None:
    raise TerminationSignal(signum)


@contextlib.contextmanager
def crash_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into `TerminationSignal` inside the block (main thread, default action
    only: a handler someone else installed is left alone)."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return
    signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
