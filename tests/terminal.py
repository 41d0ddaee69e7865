"""Run the installed ``block`` command on a pseudo-terminal, as a person in a shell would.

The terminal is the child's controlling terminal and its stdin, stdout and stderr: every
``isatty()`` is true, prompts read from it, hidden input turns its echo off, and its window is
`rows` x `columns` (set with ``TIOCSWINSZ``, as a terminal emulator does; ``COLUMNS`` and
``LINES`` are not passed on, so the program asks the terminal).

Example:
    >>> code, text = on_terminal("delete", "secret/x", answers=[("Delete", "y")])
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import sys
import termios
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

BLOCK = str(Path(sys.executable).with_name("block"))
#: Marks, in a transcript, where an answer was typed (hidden answers are not echoed).
ANSWERED = "<answered>"


class Terminal(NamedTuple):
    """How a run on the terminal ended: its exit code and everything it showed."""

    code: int
    #: All output, ``\r\n`` read as ``\n``, with `ANSWERED` where each answer was typed.
    text: str


def on_terminal(
    *args: str,
    answers: Sequence[tuple[str, str]] = (),
    rows: int = 24,
    columns: int = 120,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    program: str = BLOCK,
    on_output: Callable[[bytes], None] | None = None,
) -> Terminal:
    """Run ``block ARGS`` on a `rows` x `columns` terminal until it exits.

    `answers`: ``(prompt, answer)`` pairs; each answer is typed (with Enter) once its prompt
    has been shown. `env`: variables set over this process's environment (``TERM`` is
    ``xterm-256color`` unless given). `on_output` sees each chunk as it arrives (benchmarks
    time the first screen with it). A run still going after `timeout` seconds is killed and
    raises `TimeoutError` with what it showed.
    """
    environment = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    environment.setdefault("TERM", "xterm-256color")
    environment.update(env or {})
    argv = [program, *args]
    pid, fd = pty.fork()
    if pid == 0:  # the child: size the window, then become the program
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
            os.execve(program, argv, environment)
        finally:
            os._exit(127)  # never go on running the caller (pytest) in the child
    transcript = b""
    pending = list(answers)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                shown = transcript.decode(errors="replace")
                raise TimeoutError(f"{argv} still running after {timeout} s; it showed:\n{shown}")
            if pending and pending[0][0].encode() in transcript:
                os.write(fd, pending.pop(0)[1].encode() + b"\n")
                transcript += ANSWERED.encode()
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:  # EIO: the child closed the terminal (it exited)
                break
            if not chunk:
                break
            transcript += chunk
            if on_output is not None:
                on_output(chunk)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    text = transcript.decode(errors="replace").replace("\r\n", "\n")
    return Terminal(os.waitstatus_to_exitcode(status), text)
