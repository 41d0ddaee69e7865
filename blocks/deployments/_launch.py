"""The run process a `process` worker starts: load the deployment's flow and call it.

Started as ``python -m blocks.deployments._launch`` in the deployment's working folder, in a
session of its own, with a JSON spec on stdin: the entrypoint, the verified parameters, the
folders the worker serves and the worker's pid. It first asks the kernel to SIGKILL it when its
worker dies (``prctl(PR_SET_PDEATHSIG)`` on Linux), so a run never outlives its worker: a dead
worker's run is retried elsewhere, and two live attempts of one run would be a bug.

Exit codes: 0 the flow completed, 1 it failed, 3 the entrypoint was refused or not found.
"""

from __future__ import annotations

import asyncio
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

EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_REFUSED = 3
_PR_SET_PDEATHSIG = 1


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


def main() -> int:
    spec = json.loads(sys.stdin.read())
    die_with_parent(int(spec["worker_pid"]))
    folder = Path(spec["path"]).resolve()
    roots = [Path(root).resolve() for root in spec["roots"]]
    if not inside(folder, roots):
        print(f"Refused: working folder {folder} is outside the folders this worker serves")
        return EXIT_REFUSED
    os.chdir(folder)
    sys.path.insert(0, str(folder))
    try:
        flow = load_flow(spec["entrypoint"], folder, roots)
    except Refused as exc:
        print(f"Refused: {exc}", flush=True)
        return EXIT_REFUSED
    state = flow(**spec["parameters"], return_state=True)
    if inspect.iscoroutine(state):  # an async flow
        state = asyncio.run(state)
    print(f"Flow run finished in state {state.name}", flush=True)
    return EXIT_COMPLETED if state.is_completed() else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
