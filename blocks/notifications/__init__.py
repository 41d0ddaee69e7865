"""Notification blocks (Prefect's `prefect.blocks.notifications`) and `notify`, a state hook
that sends a run's state to one of them.

Slack, Microsoft Teams, Discord and a custom webhook are one HTTPS POST each to the URL the
service gave you: they go through `Webhook`'s HTTP path (no extra package), so the URL may point
anywhere (a GovSlack host, a Teams Workflows URL, a proxy). `SMTPEmail` and
`AppriseNotification` (any of Apprise's ~130 services by URL, e.g. ``pagerduty://``,
``tgram://``, ``ntfy://``) use Apprise, the ``notifications`` extra, imported on the first send.

Every block has ``notify(body, subject=None)`` and ``anotify`` for async code. A send that
fails (unreachable, slower than its time, HTTP 429 or 5xx) is retried after 0.5 s, 1 s, ...
(``BLOCKS_NOTIFY_RETRIES``), all within ``BLOCKS_NOTIFY_TIMEOUT`` seconds; then
`NotificationError` names the block type, the host and why, never the URL or a password.

Example:
    >>> SlackWebhook(url="https://hooks.slack.com/services/T0/B0/XXX").save("ops")
    >>> SlackWebhook.load("ops").notify("Nightly load finished", subject="ETL")
    >>> @flow(on_failure=[notify("slack-webhook/ops")])
    ... def etl() -> None: ...
"""

from __future__ import annotations

from blocks.notifications._apprise import AppriseNotification, SMTPEmail
from blocks.notifications._base import NOTIFICATIONS_EXTRA, NotificationBlock
from blocks.notifications._hook import notify, run_message
from blocks.notifications._webhooks import (
    CustomWebhookNotificationBlock,
    DiscordWebhook,
    MicrosoftTeamsWebhook,
    SlackWebhook,
)

__all__ = [
    "NOTIFICATIONS_EXTRA",
    "AppriseNotification",
    "CustomWebhookNotificationBlock",
    "DiscordWebhook",
    "MicrosoftTeamsWebhook",
    "NotificationBlock",
    "SMTPEmail",
    "SlackWebhook",
    "notify",
    "run_message",
]
