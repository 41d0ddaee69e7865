"""`notify`: a state hook that sends a run's state to a notification block, never failing or
holding up the run."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from blocks import settings
from blocks.core._block import Block, split_slug
from blocks.core._masking import mask
from blocks.errors import BlocksError, NotificationError
from blocks.notifications._base import NotificationBlock

_logger = logging.getLogger("blocks.notifications")


def notify(
    block: str | NotificationBlock, *, subject: str | None = None
) -> Callable[[Any, Any, Any], None]:
    """A state hook that sends the run's flow or task, run name and id, state and error
    (masked: never a known secret) to a notification block, by ``"type/name"`` or itself.

    Use it for any hook: ``on_failure``, ``on_crashed``, ``on_completion``, ... A send that
    fails or takes longer than ``BLOCKS_NOTIFY_TIMEOUT`` is logged as one warning and never
    changes or holds up the run.

    Example:
        >>> @flow(on_failure=[notify("slack-webhook/ops")], on_crashed=[notify("smtp-email/ops")])
        ... def etl() -> None: ...
    """
    if isinstance(block, str):
        split_slug(block)  # a typo fails here, when the flow is defined
    elif not isinstance(block, NotificationBlock):
        raise TypeError(
            f"notify() takes a notification block or its 'type/name', not {type(block).__name__}."
        )
    label = block if isinstance(block, str) else block.get_block_type_slug()

    def send_state(owner: Any, run: Any, state: Any) -> None:
        title, text = run_message(owner, run, state)
        budget = settings.notify_timeout()
        failure: list[str] = []

        def deliver() -> None:
            try:
                target = Block.load(block) if isinstance(block, str) else block
                if not isinstance(target, NotificationBlock):
                    raise NotificationError(f"{label} is not a notification block.")
                target.notify(text, subject=subject or title)
            except BlocksError as exc:
                failure.append(str(exc))
            except Exception as exc:  # a hook never fails the run; the reason is logged
                failure.append(f"{type(exc).__name__}: {exc}")

        worker = threading.Thread(target=deliver, name="blocks-notify", daemon=True)
        worker.start()
        worker.join(budget + 0.5)  # notify keeps to the budget; this bounds anything else
        if worker.is_alive():
            failure.append(f"not delivered within BLOCKS_NOTIFY_TIMEOUT ({budget:g} s)")
        if failure:
            _logger.warning(mask(f"Notification to {label} about {title!r} failed: {failure[0]}"))

    send_state.__name__ = f"notify[{label}]"
    send_state.__qualname__ = send_state.__name__
    return send_state


def run_message(owner: Any, run: Any, state: Any) -> tuple[str, str]:
    """(subject, body) describing `run` of flow or task `owner` in `state`, masked."""
    kind = "Task" if hasattr(run, "task") else "Flow"
    state_name = getattr(state, "name", None) or str(getattr(state, "type", "?"))
    run_name = getattr(run, "name", "?")
    lines = [
        f"{kind}: {getattr(owner, 'name', owner)}",
        f"Run: {run_name} (id {getattr(run, 'id', '?')})",
        f"State: {state_name}",
    ]
    message = getattr(state, "message", None)
    if message:
        lines.append(f"Message: {message}")
    exc = getattr(state, "exception", None)
    if isinstance(exc, BaseException):
        lines.append(f"Error: {type(exc).__name__}: {exc}"[:2000])
    return mask(f"{kind} run {run_name} {state_name}"), mask("\n".join(lines))
