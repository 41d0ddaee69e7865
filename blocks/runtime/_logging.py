"""Run loggers: `get_run_logger()` and the ``log_prints`` capture of ``print()``.

Run loggers are stdlib loggers (``blocks.flow_runs`` and ``blocks.task_runs``) wrapped in a
`logging.LoggerAdapter` whose records carry ``flow_run_name`` / ``task_run_name``. They
propagate to the root logger (so pytest's ``caplog`` and your own handlers see them); when the
root logger has no handler, one console handler of ours prints them, so a plain script shows its
run logs without any logging set-up. The level comes from ``BLOCKS_LOG_LEVEL`` (default INFO).

Example:
    >>> from blocks import flow, get_run_logger
    >>> @flow
    ... def hello() -> None:
    ...     get_run_logger().info("hi")   # 12:00:00.000 | INFO    | Flow run 'hello-1' - hi
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import sys
import threading
from typing import TYPE_CHECKING, Any

from blocks import settings
from blocks.core import _masking as masking
from blocks.runtime import _context as context
from blocks.runtime import _history

if TYPE_CHECKING:
    from blocks.runtime._states import State

__all__ = ["get_run_logger", "install_print_capture", "log_failure", "run_logger"]

FLOW_LOGGER = "blocks.flow_runs"
TASK_LOGGER = "blocks.task_runs"
OUTSIDE_LOGGER = "blocks.runs"

_setup_lock = threading.Lock()
_configured = False
_original_print = builtins.print


class _ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Prints run logs only while nobody else handles them (the root logger has no handler,
    and no run-history recorder keeps them)."""

    def emit(self, record: logging.LogRecord) -> None:
        if logging.root.handlers or _history.active is not None:
            return
        super().emit(record)


class _HistoryHandler(logging.Handler):
    """Hands each run-log line (masked already by the loggers' filter) to the process's
    run-history recorder, when one is installed (a deployment's run process)."""

    def emit(self, record: logging.LogRecord) -> None:
        recorder = _history.active
        if recorder is None:
            return
        try:
            line = _LINE_FORMATTER.format(record)
        except Exception:
            self.handleError(record)
            return
        recorder.log(record.created, record.levelname, line)


class _RunFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        task_run = getattr(record, "task_run_name", None)
        flow_run = getattr(record, "flow_run_name", None)
        if task_run:
            record.run_label = f"Task run {task_run!r} - "
        elif flow_run:
            record.run_label = f"Flow run {flow_run!r} - "
        else:
            record.run_label = ""
        return super().format(record)


class _MaskingFilter(logging.Filter):
    """Hides every recorded secret value (`blocks.core._masking`) in a run log record before
    any handler, ours or the root's, sees it. Costs one check per record while no secret is
    recorded; a record without a secret is left as it was (its ``args`` kept)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if masking.known():
            _mask_record(record)
        return True


def _mask_record(record: logging.LogRecord) -> None:
    text = record.getMessage()
    masked = masking.mask(text)
    if masked != text:
        record.msg, record.args = masked, None
    if record.exc_info and record.exc_info[1] is not None:
        masking.mask_exception(record.exc_info[1])
        # The text handlers print (formatters reuse `exc_text`), masked as text too: an
        # exception whose __str__ ignores its args keeps the value in its object.
        if not record.exc_text:
            record.exc_text = _EXC_FORMATTER.formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = masking.mask(record.exc_text)
    if record.stack_info:
        record.stack_info = masking.mask(record.stack_info)


_EXC_FORMATTER = logging.Formatter()
_MASKING_FILTER = _MaskingFilter()
_LINE_FORMATTER = _RunFormatter("%(run_label)s%(message)s")


def _configure() -> None:
    """Install our console handler and level on the run loggers, once per process."""
    global _configured
    with _setup_lock:
        if _configured:
            return
        handler = _ConsoleHandler(sys.stderr)
        handler.setFormatter(
            _RunFormatter(
                "%(asctime)s.%(msecs)03d | %(levelname)-7s | %(run_label)s%(message)s",
                datefmt="%H:%M:%S",
            )
        )
        level = settings.log_level()
        history = _HistoryHandler()
        for name in (FLOW_LOGGER, TASK_LOGGER, OUTSIDE_LOGGER):
            logger = logging.getLogger(name)
            logger.setLevel(level)
            logger.addHandler(handler)
            if name != OUTSIDE_LOGGER:
                logger.addHandler(history)
            logger.addFilter(_MASKING_FILTER)
        _configured = True


def run_logger(run: context.FlowRun | context.TaskRun) -> logging.LoggerAdapter[logging.Logger]:
    """The logger adapter of `run`, made once per run and only when asked for."""
    adapter = run._logger
    if adapter is None:
        if not _configured:
            _configure()
        if isinstance(run, context.TaskRun):
            extra: dict[str, Any] = {"task_run_name": run.name, "task_name": run.task.name}
            if run.flow_run is not None:
                extra["flow_run_name"] = run.flow_run.name
            adapter = logging.LoggerAdapter(logging.getLogger(TASK_LOGGER), extra)
        else:
            extra = {"flow_run_name": run.name, "flow_name": run.flow.name}
            adapter = logging.LoggerAdapter(logging.getLogger(FLOW_LOGGER), extra)
        run._logger = adapter
    return adapter


def get_run_logger() -> logging.LoggerAdapter[logging.Logger]:
    """The logger of the current task or flow run.

    Outside any run it returns a plain adapter over the ``blocks.runs`` logger, without a
    warning, so library code may call it anywhere.

    Example:
        >>> @task
        ... def extract(source: str) -> dict:
        ...     get_run_logger().info("extracting %s", source)
        ...     return {}
    """
    run = context.get_current()
    if run is None:
        if not _configured:
            _configure()
        return logging.LoggerAdapter(logging.getLogger(OUTSIDE_LOGGER), {})
    return run_logger(run)


def log_failure(
    logger: logging.LoggerAdapter[logging.Logger], state: State, retries: int, attempts: int
) -> None:
    """One ERROR record, with the traceback, for a run that ended failed."""
    tried = f" after {attempts} attempt(s)" if attempts > 1 else ""
    exc = state.exception
    # The traceback once: a flow failing with its task's exception does not repeat it.
    show = exc is not None and not getattr(exc, "__blocks_logged__", False)
    if show:
        with contextlib.suppress(AttributeError):  # exceptions with __slots__
            exc.__blocks_logged__ = True  # type: ignore[union-attr]
    logger.error(
        "Finished in state %s%s: %s",
        state.name,
        tried,
        state.message,
        exc_info=(type(exc), exc, exc.__traceback__) if show and exc is not None else None,
    )


# -- log_prints --------------------------------------------------------------------------------


def _print(
    *args: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None, flush: bool = False
) -> None:
    run = context.get_current()
    if run is not None and run.log_prints and (file is None or file is sys.stdout):
        text = (" " if sep is None else sep).join(str(arg) for arg in args)
        run_logger(run).info(text, extra={"from_print": True})
        return
    _original_print(*args, sep=sep, end=end, file=file, flush=flush)


def install_print_capture() -> None:
    """Route ``print()`` of runs with ``log_prints=True`` to their run logger.

    ``builtins.print`` is replaced once per process by a function that checks the current run
    and otherwise calls the original ``print`` unchanged.
    """
    if builtins.print is not _print:
        builtins.print = _print
