"""Misses that explain themselves: compare a call's key components with an earlier record's.

Every record written under a cache policy keeps its key's components in its header (a digest
per part: ``code`` and ``code:<part>``, ``param:<name>``, ``version``, ``run_id``, ...). On a
miss, the task's newest earlier record in the same storage says what changed, as one INFO line:

    cache miss for task 'price': code changed (helper 'rate_for')
    cache miss for task 'f': parameter 'x' changed
    cache miss for task 'f': the stored result expired at 2026-11-26T14:00:00+00:00

Only names are printed, never a parameter's value. The header holds digests keyed under the
results key that signed it (and no digest at all of a secret, only a marker), so a fresh
call's components are keyed under that same key before they are compared, and two records
compare only if one key signed both.
``block results why KEY`` / ``--task NAME`` prints the same comparison.

Example:
    >>> changes({"param:x": "a1"}, {"param:x": "b2"})
    ["parameter 'x' changed"]
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from blocks.errors import ConfigurationError, CorruptRecord
from blocks.results._signing import SECRET_COMPONENT

if TYPE_CHECKING:
    from blocks.results import RecordHeader, ResultStore

__all__ = ["Explanation", "changes", "explain_miss", "task_records", "why"]

logger = logging.getLogger("blocks.caching")

#: At most this many keys are listed, and headers read, to find a task's earlier record: a
#: miss pays a bounded price for its explanation (the newest among those read is used).
MAX_SCANNED_KEYS = 2_000
MAX_HEADERS_READ = 32


def changes(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """What differs between two components maps, in words (names only, never values)."""
    reasons: list[str] = []
    if old.get("code") != new.get("code") or old.get("key_fn") != new.get("key_fn"):
        if "code" in old or "code" in new:
            parts = sorted(
                name[5:]
                for name in old.keys() | new.keys()
                if name.startswith("code:")
                and name != "code:note"
                and old.get(name) != new.get(name)
            )
            reasons.append(f"code changed ({', '.join(parts) or 'fingerprint'})")
            if new.get("code:note"):
                reasons[-1] += f" [{new['code:note']}]"
        if old.get("key_fn") != new.get("key_fn"):
            reasons.append("the cache_key_fn gave another key")
    if old.get("version") != new.get("version"):
        reasons.append("version changed")
    for prefix, word in (("param:", "parameter"), ("flow_parameter:", "flow parameter")):
        for name in sorted(k for k in old.keys() | new.keys() if k.startswith(prefix)):
            label = name[len(prefix) :]
            if name not in old:
                reasons.append(f"{word} {label!r} is new")
            elif name not in new:
                reasons.append(f"{word} {label!r} is no longer part of the key")
            elif old[name] != new[name]:
                reasons.append(f"{word} {label!r} changed")
    if old.get("run_id") != new.get("run_id"):
        reasons.append("another flow run (the policy includes RUN_ID)")
    if not reasons:
        secrets = sorted(
            name.split(":", 1)[1]
            for name in old.keys() & new.keys()
            if old[name] == new[name] == SECRET_COMPONENT
        )
        if secrets:
            named = ", ".join(repr(name) for name in secrets)
            reasons.append(f"a secret ({named}) may have changed: secrets are never compared")
    return reasons


def _candidates(store: ResultStore, prefix: str) -> Iterator[str]:
    """Keys that look like this task's policy keys (``<prefix>-<digest>`` at the top)."""
    start = f"{prefix}-"
    for scanned, key in enumerate(store.storage.walk_keys("")):
        if scanned >= MAX_SCANNED_KEYS:
            return
        if key.startswith(start) and "/" not in key:
            yield key


def latest_record(
    store: ResultStore, task: str, prefix: str, *, exclude: str
) -> tuple[str, RecordHeader] | None:
    """The task's newest record with components, other than `exclude` (bounded scan)."""
    best: tuple[str, RecordHeader] | None = None
    for read, key in enumerate(_candidates(store, prefix)):
        if read >= MAX_HEADERS_READ:
            break
        if key == exclude:
            continue
        try:
            header = store.load_header(key)
        except (CorruptRecord, OSError):
            continue
        if header.task != task or not header.components:
            continue
        if best is None or header.created > best[1].created:
            best = (key, header)
    return best


def explain_miss(
    store: ResultStore, key: str, task: str, prefix: str, components: dict[str, str]
) -> str | None:
    """The INFO line for a miss on `key`, or None when there is nothing to compare with."""
    head = f"cache miss for task {task!r}"
    try:
        header = store.load_header(key)
    except FileNotFoundError:
        header = None
    except CorruptRecord:
        return f"{head}: the stored record is corrupt; recomputing"
    if header is not None:
        if header.is_expired():
            assert header.expires is not None
            return f"{head}: the stored result expired at {header.expires.isoformat()}"
        return f"{head}: the stored record is corrupt; recomputing"
    earlier = latest_record(store, task, prefix, exclude=key)
    if earlier is None:
        return None
    assert earlier[1].components is not None
    signer = store.keys.by_id.get(earlier[1].signer)
    if signer is None:  # verified, so one of ours; `header_verifies` decides, not this name
        return None
    reasons = changes(earlier[1].components, signer.keyed_components(components))
    return f"{head}: {'; '.join(reasons) or 'no earlier record has the same key'}"


# -- ``block results why`` ---------------------------------------------------------------------


@dataclass(frozen=True)
class Explanation:
    """How the record under `key` differs from the task's previous record `against`."""

    key: str
    task: str | None
    against: str | None
    reasons: list[str]

    def line(self) -> str:
        if self.against is None:
            return f"{self.key}: no earlier record of task {self.task!r} to compare with"
        why = "; ".join(self.reasons) or "same components"
        return f"{self.key} (task {self.task!r}) differs from {self.against}: {why}"


def task_records(
    store: ResultStore, task: str, flow: str | None = None
) -> list[tuple[str, RecordHeader]]:
    """Every readable record of `task` (and `flow`, if given), oldest first."""
    found = [
        (key, header)
        for key, header in store.records()
        if header is not None and header.task == task and (flow is None or header.flow == flow)
    ]
    found.sort(key=lambda item: item[1].created)
    return found


def why(store: ResultStore, *, key: str | None = None, task: str | None = None) -> Explanation:
    """Compare the record under `key` (or `task`'s newest) with the task's previous record.

    Raises `FileNotFoundError` if there is no such record.
    """
    if key is not None:
        header = store.load_header(key)
        name = header.task
        history = task_records(store, name) if name is not None else []
    elif task is not None:
        history = task_records(store, task)
        if not history:
            raise FileNotFoundError(f"no record of task {task!r}")
        key, header = history[-1]
        name = task
    else:
        raise ConfigurationError("give a key or a task")
    earlier = [
        (k, h) for k, h in history if k != key and h.created <= header.created and h.components
    ]
    if not earlier or not header.components:
        return Explanation(key, name, None, [])
    against, previous = earlier[-1]
    assert previous.components is not None
    if previous.signer != header.signer:
        # Digests keyed under two results keys (a rotation in between) never compare equal.
        return Explanation(key, name, against, [_ANOTHER_KEY])
    return Explanation(key, name, against, changes(previous.components, header.components))


_ANOTHER_KEY = "signed under another results key (a key rotation in between): not comparable"
