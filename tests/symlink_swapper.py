"""Swap a folder for a symlink to an outside folder, in a loop: the second process of the
symlink-race tests (``test_local_races``, ``test_results_debris``).

    python symlink_swapper.py BASE OUTSIDE UNTIL [--hold SECONDS] [--restore]

Until the wall-clock time UNTIL, renames ``BASE/sub`` away, puts a symlink to OUTSIDE in its
place for ``--hold`` seconds, then puts the folder back; prints how many swaps it made. When the
process under test re-creates ``sub`` between the rename and the symlink, ``--restore`` puts the
renamed folder back (the writers' race wants ``sub`` to stay a folder as often as it can); without
it the swapper just tries again (the prune race re-creates the folder itself).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time


def swap(base: str, outside: str, until: float, hold: float, restore: bool) -> int:
    sub = os.path.join(base, "sub")
    swaps = attempt = 0
    while time.time() < until:
        attempt += 1
        real = f"{sub}.real{attempt}"
        try:
            os.rename(sub, real)  # the folder goes away...
        except OSError:
            time.sleep(hold / 5)
            continue
        try:
            os.symlink(outside, sub)  # ...and a symlink to the outside takes its name
        except OSError:  # the other process re-created "sub" first
            if restore:
                with contextlib.suppress(OSError):
                    os.rename(real, sub)  # put ours back if it is empty, else keep theirs
            continue
        swaps += 1
        time.sleep(hold)
        try:
            os.unlink(sub)
            os.rename(real, sub)
        except OSError:
            pass
    return swaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base")
    parser.add_argument("outside")
    parser.add_argument("until", type=float, help="time.time() at which to stop")
    parser.add_argument("--hold", type=float, default=0.0005, help="seconds the symlink stays")
    parser.add_argument("--restore", action="store_true", help="put the folder back on a clash")
    args = parser.parse_args()
    print(swap(args.base, args.outside, args.until, args.hold, args.restore))


if __name__ == "__main__":
    main()
