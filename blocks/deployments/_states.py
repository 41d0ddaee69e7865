"""The states of a deployment's flow run, and which changes between them the run store allows.

A run's life (DESIGN.md draws it): Scheduled -> (Late) -> Pending (claimed by a worker, under a
lease) -> Running -> Completed | Failed | Cancelled; a lease that expires makes it Crashed (and,
with retries left, Scheduled again as the next attempt); cancel goes through Cancelling.

Example:
    >>> RunState.RUNNING in LIVE
    True
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["CLAIMABLE", "FINAL", "LEASED", "LIVE", "RunState"]


class RunState(StrEnum):
    """A flow run's state as the registry stores it (Prefect's names)."""

    SCHEDULED = "Scheduled"
    LATE = "Late"
    PENDING = "Pending"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CRASHED = "Crashed"
    CANCELLING = "Cancelling"
    CANCELLED = "Cancelled"
    PAUSED = "Paused"
    SKIPPED = "Skipped"


#: A worker may claim a run in these states once it is due.
CLAIMABLE = frozenset({RunState.SCHEDULED, RunState.LATE})
#: A worker holds these under a lease (an expired lease means the worker is gone).
LEASED = frozenset({RunState.PENDING, RunState.RUNNING, RunState.CANCELLING})
#: Not ended yet.
LIVE = CLAIMABLE | LEASED | {RunState.PAUSED}
#: Ended: nothing changes a run in these.
FINAL = frozenset(
    {
        RunState.COMPLETED,
        RunState.FAILED,
        RunState.CRASHED,
        RunState.CANCELLED,
        RunState.SKIPPED,
    }
)

#: Where each state may go. Anything else is refused by the store (the UPDATE names the
#: states it comes from, so a change that lost a race changes nothing).
TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.SCHEDULED: frozenset(
        {RunState.LATE, RunState.PENDING, RunState.SKIPPED, RunState.CANCELLED, RunState.PAUSED}
    ),
    RunState.LATE: frozenset({RunState.PENDING, RunState.SKIPPED, RunState.CANCELLED}),
    RunState.PAUSED: frozenset({RunState.SCHEDULED, RunState.CANCELLED}),
    RunState.PENDING: frozenset(
        {
            RunState.RUNNING,
            RunState.COMPLETED,
            RunState.FAILED,
            RunState.CRASHED,
            RunState.CANCELLING,
            RunState.CANCELLED,
        }
    ),
    RunState.RUNNING: frozenset(
        {
            RunState.COMPLETED,
            RunState.FAILED,
            RunState.CRASHED,
            RunState.CANCELLING,
            RunState.CANCELLED,
        }
    ),
    RunState.CANCELLING: frozenset({RunState.CANCELLED, RunState.CRASHED}),
}


def sources_of(target: RunState) -> frozenset[RunState]:
    """The states a run may be in to move to `target`."""
    return frozenset(state for state, targets in TRANSITIONS.items() if target in targets)
