"""The run process a `process` worker starts: load the deployment's flow and call it.

Started as ``python -m blocks.deployments._launch`` in the deployment's working folder, in a
session of its own, with a JSON spec on stdin: the entrypoint, the verified parameters, the
folders the worker serves and the worker's pid. It first asks the kernel to SIGKILL it when its
worker dies (``prctl(PR_SET_PDEATHSIG)`` on Linux), so a run never outlives its worker: a dead
worker's run is retried elsewhere, and two live attempts of one run would be a bug.

A worker keeps one such process started ahead ("a spare"): it has already set its death signal
and imported the runtime and pydantic (`warm`) and waits for its spec, so a claimed run's body
starts without paying for a Python start and those imports (most of the time from due to body).
The spec carries the run's environment variables, set before the flow's module is loaded.

Run history: the run's task runs and run-logger lines are written to the run store by the
process itself, in batches (`blocks.deployments._history`); its flow states carry the run's
scheduled time. SIGTERM (a cancel, a stopping worker) ends the flow Crashed, writes what is
left, and ends the process by the same signal, which the worker records.

Exit codes: 0 the flow completed, 1 it failed, 3 the entrypoint was refused or not found.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import importlib.util
import inspect
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from blocks.runtime._signals import TerminationSignal

EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_REFUSED = 3
#: Not this process's: a dask pool's run whose Dask worker was lost (its last line says why).
EXIT_LOST = 4
_PR_SET_PDEATHSIG = 1
#: The worker's pid, set in a spare's environment (its death signal is set before it waits).
WORKER_PID_ENV = "BLOCKS_WORKER_PID"


class Refused(Exception):
    """The entrypoint cannot be run by this worker (outside its folders, missing, not a flow)."""


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when the worker that started it dies (Linux); elsewhere the lease
    expiry stops the run's worker-side bookkeeping and the reaper marks it Crashed."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the worker died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)


def inside(path: Path, roots: list[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def load_flow(entrypoint: str, folder: Path, roots: list[Path]) -> Any:
    """The flow object an entrypoint names, refused unless its file is under one of `roots`."""
    target, sep, attribute = entrypoint.rpartition(":")
    if not sep or not target or not attribute.isidentifier():
        raise Refused(f"entrypoint {entrypoint!r} is not path/file.py:function or module:function")
    if target.endswith(".py"):
        file = (folder / target).resolve()
        if not inside(file, roots):
            raise Refused(f"{file} is outside the folders this worker serves")
        if not file.is_file():
            raise Refused(f"{file} does not exist")
        spec = importlib.util.spec_from_file_location(file.stem, file)
        name = file.stem
    else:
        spec = importlib.util.find_spec(target)
        name = target
        origin = Path(spec.origin).resolve() if spec is not None and spec.origin else None
        if origin is None or not inside(origin, roots):
            raise Refused(f"module {target!r} ({origin}) is outside the folders this worker serves")
    if spec is None or spec.loader is None:
        raise Refused(f"cannot load {target!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    found = getattr(module, attribute, None)
    from blocks.runtime import Flow

    if not isinstance(found, Flow):
        raise Refused(f"{entrypoint!r} is not a @flow")
    return found


def warm() -> None:
    """Import what every run needs before its spec arrives: the runtime, and pydantic with its
    plugins loaded (a flow's first call builds a parameter model; the plugin scan reads every
    installed distribution's metadata)."""
    import pydantic

    import blocks.deployments._history  # run history: the run store and SQLAlchemy
    import blocks.runtime

    pydantic.create_model("_Warm", x=(int, 0)).model_validate({"x": 1})
    assert blocks.runtime.Flow is not None
    assert blocks.deployments._history.FLUSH_SECONDS > 0


def main() -> int:
    started_in = os.getcwd()
    parent = os.environ.get(WORKER_PID_ENV)
    if parent is not None:
        die_with_parent(int(parent))
        warm()
    spec = json.loads(sys.stdin.read())
    if parent is None:
        die_with_parent(int(spec["worker_pid"]))
    os.environ.update(spec.get("env", {}))
    folder = Path(spec["path"]).resolve()
    roots = [Path(root).resolve() for root in spec["roots"]]
    if not inside(folder, roots):
        print(f"Refused: working folder {folder} is outside the folders this worker serves")
        return EXIT_REFUSED
    os.chdir(folder)
    # `python -m` put the folder it started in first on the path; a spare started in the
    # worker's folder, so only the deployment's folder is searched, as for a fresh process.
    sys.path[:] = [entry for entry in sys.path if entry not in ("", started_in)]
    sys.path.insert(0, str(folder))
    try:
        flow = load_flow(spec["entrypoint"], folder, roots)
    except Refused as exc:
        print(f"Refused: {exc}", flush=True)
        return EXIT_REFUSED
    try:
        with _recorded():
            state = flow(**spec["parameters"], return_state=True)
            if inspect.iscoroutine(state):  # an async flow
                state = asyncio.run(state)
    except TerminationSignal as exc:
        # Crashed and flushed: end as the signal would have, so the worker names it.
        signal.signal(exc.signal, signal.SIG_DFL)
        os.kill(os.getpid(), exc.signal)
        raise
    print(f"Flow run finished in state {state.name}", flush=True)
    return EXIT_COMPLETED if state.is_completed() else EXIT_FAILED


def _recorded() -> contextlib.AbstractContextManager[object]:
    """Run history for the worker's run (`BLOCKS_FLOW_RUN_ID`): its task runs and run-log
    lines go to the run store, and its flow states carry its scheduled time."""
    run_id = os.environ.get("BLOCKS_FLOW_RUN_ID")
    if not run_id:
        return contextlib.nullcontext()
    from datetime import datetime

    from blocks.core._registry import Registry
    from blocks.deployments._history import recording
    from blocks.deployments._store import RunStore

    scheduled = os.environ.get("BLOCKS_FLOW_RUN_SCHEDULED") or None
    return recording(
        lambda: RunStore(Registry.default(), create_tables=False),  # its worker made them
        run_id,
        int(os.environ.get("BLOCKS_FLOW_RUN_ATTEMPT") or 1),
        datetime.fromisoformat(scheduled) if scheduled else None,
    )


if __name__ == "__main__":
    sys.exit(main())
