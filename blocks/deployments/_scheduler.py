"""The scheduler: a pass that inserts each active deployment's next runs and applies its
catch-up policy to the slots no worker started in time.

Any number of passes may run at once (every worker runs one on its loop): a slot's run is made
once by the unique key, and each change of state is conditional. A pass makes runs ahead: up to
`MAX_RUNS` per schedule within `HORIZON`, and at least `MIN_RUNS`.

Example:
    >>> report = schedule_pass(RunStore.default())
    >>> report.inserted
    3
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from blocks import settings
from blocks.deployments._records import dumps
from blocks.deployments._runs import SlotPlan
from blocks.deployments._store import DeploymentRecord, RunStore, utcnow

__all__ = [
    "HORIZON",
    "MAX_RUNS",
    "MIN_RUNS",
    "PassReport",
    "plan_slots",
    "schedule_deployment",
    "schedule_pass",
]

MAX_RUNS = 100
MIN_RUNS = 3
HORIZON = timedelta(hours=1)


@dataclass(slots=True)
class PassReport:
    deployments: int = 0
    inserted: int = 0
    late: int = 0
    skipped: int = 0


def schedule_deployment(
    store: RunStore,
    deployment: DeploymentRecord,
    now: datetime | None = None,
    summary: dict[str, tuple[datetime | None, int]] | None = None,
) -> int:
    """Insert the deployment's next slots (none when it is paused); return how many were new.

    `summary` is the deployment's `slot_summary` when the caller read it already."""
    now = now or utcnow()
    if summary is None:
        summary = store.slot_summary(deployment.id, now)
    return len(store.insert_planned(plan_slots(deployment, now, summary)))


def plan_slots(
    deployment: DeploymentRecord, now: datetime, summary: dict[str, tuple[datetime | None, int]]
) -> list[SlotPlan]:
    """The slots the deployment's active schedules still need (none when it is paused), from
    `summary` (per slug: its latest slot to come and how many runs are due later). Pure: a
    pass plans every deployment, then inserts all in one transaction."""
    if deployment.paused:
        return []
    document = deployment.document
    plans = []
    for entry in document.get("schedules", []):
        if not entry.get("active", True):
            continue
        slug = entry["slug"]
        last, later = summary.get(slug, (None, 0))
        want = MAX_RUNS - later
        if want <= 0 or (last is not None and last >= now + HORIZON and later >= MIN_RUNS):
            continue
        text = dumps(entry["schedule"])
        if last is not None and later >= MIN_RUNS:
            following = _slot_after(text, last)
            if following is None or following >= now + HORIZON:
                continue  # the next slot is beyond the horizon: nothing to make yet
        schedule = _schedule(text)
        start = max(now, last) if last is not None else now
        dates = schedule.get_dates(n=want, start=start, end=now + HORIZON)
        if later + len(dates) < MIN_RUNS:
            dates = schedule.get_dates(n=MIN_RUNS, start=start)
        if last is not None:
            dates = [date for date in dates if date > last]  # `start` is inclusive
        if dates:
            plans.append(
                SlotPlan(
                    deployment,
                    [(slug, date) for date in dates],
                    {**document.get("parameters", {}), **entry.get("parameters", {})},
                    int(document.get("retries", 0)) + 1,
                )
            )
    return plans


@functools.lru_cache(maxsize=4096)
def _schedule(text: str) -> Any:
    """A schedule from its JSON text, parsed once per process (a worker passes every few
    seconds over the same deployments)."""
    from blocks.deployments.schedules import schedule_from_json

    return schedule_from_json(json.loads(text))


@functools.lru_cache(maxsize=8192)
def _slot_after(text: str, last: datetime) -> datetime | None:
    """The schedule's first slot after `last` (None when it has no more)."""
    later = [date for date in _schedule(text).get_dates(n=2, start=last) if date > last]
    return later[0] if later else None


def schedule_pass(
    store: RunStore, now: datetime | None = None, *, pool_name: str | None = None
) -> PassReport:
    """One pass over every deployment (of one pool): new slots, then the catch-up policy."""
    now = now or utcnow()
    report = PassReport()
    deployments = {d.id: d for d in store.deployments_for_pass(pool_name)}
    summaries = store.slot_summaries(now, pool_name=pool_name)
    plans = []
    for deployment in deployments.values():
        report.deployments += 1
        plans += plan_slots(deployment, now, summaries.get(deployment.id, {}))
    report.inserted = len(store.insert_planned(plans)) if plans else 0
    late, skipped = catch_up_plan(
        store, deployments, now - timedelta(seconds=settings.late_after_seconds())
    )
    if late or skipped:
        report.late, report.skipped = store.mark_missed(
            late, skipped, "missed its slot; the catch-up policy runs a newer one or none"
        )
    return report


def catch_up_plan(
    store: RunStore, deployments: dict[str, DeploymentRecord], before: datetime
) -> tuple[list[str], list[str]]:
    """Which overdue runs become Late (they will run) and which Skipped, by each deployment's
    policy: ``latest`` keeps the newest per schedule, ``all`` every one, ``none`` none."""
    groups: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for run_id, deployment_id, slug, _due, state in store.overdue(before):
        if deployment_id in deployments:
            groups[(deployment_id, slug)].append((run_id, state.value))
    late: list[str] = []
    skipped: list[str] = []
    for (deployment_id, _slug), runs in groups.items():
        policy = deployments[deployment_id].document.get("catchup", "latest")
        keep = runs if policy == "all" else runs[-1:] if policy == "latest" else []
        kept = {run_id for run_id, _ in keep}
        late += [run_id for run_id, state in keep if state == "Scheduled"]
        skipped += [run_id for run_id, _ in runs if run_id not in kept]
    return late, skipped
