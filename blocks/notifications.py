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

import logging
import re
import threading
import time
import urllib.parse
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from blocks import settings
from blocks.core._block import Block, SecretDict, split_slug
from blocks.core._masking import mask
from blocks.core._masking import note as note_secret
from blocks.core._references import is_reference
from blocks.errors import BlocksError, MissingDependency, NotificationError, WebhookError
from blocks.system import Webhook

__all__ = [
    "AppriseNotification",
    "CustomWebhookNotificationBlock",
    "DiscordWebhook",
    "MicrosoftTeamsWebhook",
    "NotificationBlock",
    "SMTPEmail",
    "SlackWebhook",
    "notify",
]

NOTIFICATIONS_EXTRA = "pip install 'blocks[notifications]'"
_logger = logging.getLogger("blocks.notifications")
_USER_AGENT = "blocks-notifications"


class NotificationBlock(Block):
    """Base of the notification blocks: ``notify(body, subject=None)`` sends one message."""

    _block_is_abstract = True

    def notify(self, body: str, subject: str | None = None) -> None:
        """Send `body` (with `subject` as its title), retried while ``BLOCKS_NOTIFY_TIMEOUT``
        allows; `NotificationError` when it could not be delivered."""
        deadline = time.monotonic() + settings.notify_timeout()
        retries = settings.notify_retries()
        for attempt in range(retries + 1):
            try:
                self._send(body, subject, timeout=max(deadline - time.monotonic(), 0.05))
                return
            except NotificationError as exc:
                delay = 0.5 * 2**attempt
                if attempt == retries or not _retryable(exc):
                    raise
                if time.monotonic() + delay >= deadline:
                    raise NotificationError(
                        f"{exc} Gave up after {attempt + 1} attempt(s): no time left within "
                        f"BLOCKS_NOTIFY_TIMEOUT ({settings.notify_timeout():g} s)."
                    ) from None
                time.sleep(delay)

    async def anotify(self, body: str, subject: str | None = None) -> None:
        """`notify` for async code (runs in a worker thread; the loop is never blocked)."""
        import asyncio

        await asyncio.to_thread(self.notify, body, subject)

    @abstractmethod
    def _send(self, body: str, subject: str | None, *, timeout: float) -> None:
        """One attempt within `timeout` seconds; `NotificationError` if it failed."""

    def _label(self) -> str:
        return self.get_block_type_slug()


def _retryable(exc: NotificationError) -> bool:
    status = getattr(exc, "status_code", None)
    return status is None or status == 429 or status >= 500


# -- services reached by one HTTP POST of their JSON ------------------------------------------


class _WebhookNotification(NotificationBlock):
    """A service whose incoming webhook takes one JSON POST to a secret URL."""

    _block_is_abstract = True

    url: SecretStr = Field(title="Webhook URL", description="The incoming webhook URL.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: SecretStr) -> SecretStr:
        if is_reference(value):  # read from where it points when a message is sent
            return value  # type: ignore[return-value]
        parts = urllib.parse.urlsplit(value.get_secret_value())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an http:// or https:// URL with a host")  # not the URL
        return value

    @abstractmethod
    def _payload(self, body: str, subject: str | None) -> dict[str, Any]:
        """The JSON the service expects."""

    def _send(self, body: str, subject: str | None, *, timeout: float) -> None:
        url = self.url.get_secret_value()
        note_secret(url)  # masked in run logs from now on
        _post(self._label(), url, self._payload(body, subject), {}, timeout)


def _post(
    label: str,
    url: str,
    payload: Any,
    headers: dict[str, str],
    timeout: float,
    method: str = "POST",
) -> None:
    headers = {"User-Agent": _USER_AGENT, **headers}
    try:
        hook = Webhook(
            url=url,
            method=method,
            headers=SecretDict(headers),
            timeout=timeout,
        )
        hook.call(payload)
    except WebhookError as exc:
        error = NotificationError(f"{label}: {exc}")
        error.status_code = exc.status_code  # type: ignore[attr-defined]
        raise error from None
    except ValueError:  # the URL (after templating) is not http(s): never repeat it
        raise NotificationError(
            f"{label}: the URL is not an http:// or https:// URL with a host."
        ) from None


class SlackWebhook(_WebhookNotification):
    """Send notifications to a Slack channel through an incoming webhook.

    Slack gets ``{"text": "*subject*\\nbody"}`` (its mrkdwn, with ``& < >`` escaped).

    Example:
        >>> SlackWebhook(url="https://hooks.slack.com/services/T0/B0/XXX").notify("done")
    """

    _block_type_name = "Slack Webhook"
    _description = "Send notifications to a Slack channel through an incoming webhook URL."

    def _payload(self, body: str, subject: str | None) -> dict[str, Any]:
        text = _slack_escape(body)
        if subject:
            text = f"*{_slack_escape(subject)}*\n{text}"
        return {"text": text}


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class MicrosoftTeamsWebhook(_WebhookNotification):
    """Send notifications to a Microsoft Teams channel through its webhook (a Workflows
    "post to a channel when a webhook request is received" URL, or a legacy connector).

    Teams gets a message holding one Adaptive Card: the subject in bold, then the body.
    """

    _block_type_name = "Microsoft Teams Webhook"
    _block_type_slug = "ms-teams-webhook"
    _description = "Send notifications to a Microsoft Teams channel through its webhook URL."

    def _payload(self, body: str, subject: str | None) -> dict[str, Any]:
        blocks: list[dict[str, Any]] = []
        if subject:
            blocks.append({"type": "TextBlock", "text": subject, "weight": "Bolder", "wrap": True})
        blocks.append({"type": "TextBlock", "text": body, "wrap": True})
        card = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": blocks,
        }
        return {
            "type": "message",
            "attachments": [
                {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}
            ],
        }


class DiscordWebhook(_WebhookNotification):
    """Send notifications to a Discord channel through a webhook URL.

    Discord gets ``{"content": "**subject**\\nbody"}`` (cut to Discord's 2,000 characters),
    with ``username``, ``avatar_url`` and ``tts`` when set.
    """

    _block_type_name = "Discord Webhook"
    _description = "Send notifications to a Discord channel through a webhook URL."

    botname: str | None = Field(default=None, description="Name shown as the message's author.")
    avatar_url: str | None = Field(default=None, description="Image shown beside the message.")
    tts: bool = Field(default=False, description="Read the message aloud (text-to-speech).")

    def _payload(self, body: str, subject: str | None) -> dict[str, Any]:
        content = f"**{subject}**\n{body}" if subject else body
        if len(content) > 2000:
            content = content[:1999] + "…"
        payload: dict[str, Any] = {"content": content}
        if self.botname:
            payload["username"] = self.botname
        if self.avatar_url:
            payload["avatar_url"] = self.avatar_url
        if self.tts:
            payload["tts"] = True
        return payload


# -- any HTTP endpoint, from templates --------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_\-]*)\s*\}\}")
_CONTEXT_KEYS = ("subject", "body", "name")


class CustomWebhookNotificationBlock(NotificationBlock):
    """Send notifications to any HTTP endpoint: the URL, query, JSON or form body, headers and
    cookies are templates where ``{{subject}}``, ``{{body}}``, ``{{name}}`` and each key of
    `secrets` are replaced when a message is sent (a string that is only one placeholder takes
    the value as it is: a number stays a number).

    Example:
        >>> CustomWebhookNotificationBlock(
        ...     name="pager", url="https://events.example.com/v1/alert",
        ...     json_data={"title": "{{subject}}", "text": "{{body}}", "key": "{{api_key}}"},
        ...     secrets={"api_key": "k-123"},
        ... ).notify("disk full", subject="db-1")
    """

    _block_type_name = "Custom Webhook"
    _block_type_slug = "custom-webhook"
    _description = "Send notifications to any HTTP endpoint, the request built from templates."

    name: str = Field(description="Name of the webhook ({{name}} in templates).")
    url: str = Field(title="Webhook URL", description="The URL (a template).")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    params: dict[str, str] | None = Field(default=None, title="Query params")
    json_data: dict[str, Any] | None = Field(
        default=None, title="JSON data", description="Send this JSON as the body."
    )
    form_data: dict[str, str] | None = Field(
        default=None, title="Form data", description="Send this form as the body (not with JSON)."
    )
    headers: dict[str, str] | None = None
    cookies: dict[str, str] | None = None
    timeout: float = Field(default=10.0, gt=0, description="Seconds for one request.")
    secrets: SecretDict = Field(
        default_factory=lambda: SecretDict({}),
        title="Custom secret values",
        description="Values for {{placeholders}} in the other fields; sealed at rest.",
    )

    _TEMPLATED: ClassVar[tuple[str, ...]] = (
        "url",
        "params",
        "json_data",
        "form_data",
        "headers",
        "cookies",
    )

    @model_validator(mode="after")
    def _templates_are_complete(self) -> CustomWebhookNotificationBlock:
        if self.json_data is not None and self.form_data is not None:
            raise ValueError("give json_data or form_data, not both")
        if is_reference(self.secrets):
            return self  # its keys are known when it is read, at the first send
        self._check_placeholders(set(self.secrets.get_secret_value()))
        return self

    def _check_placeholders(self, secret_keys: set[str]) -> None:
        allowed = set(_CONTEXT_KEYS) | secret_keys
        for field in self._TEMPLATED:
            for found in _placeholders(getattr(self, field)):
                if found not in allowed:
                    raise ValueError(
                        f"{field} uses {{{{{found}}}}}, which is neither subject, body, name "
                        "nor a key of secrets"
                    )

    def _label(self) -> str:
        return f"custom-webhook {self.name!r}"

    def _send(self, body: str, subject: str | None, *, timeout: float) -> None:
        secrets = dict(self.secrets.get_secret_value())
        if is_reference(self.secrets):
            try:
                self._check_placeholders(set(secrets))
            except ValueError as exc:
                raise NotificationError(f"{self._label()}: {exc}.") from None
        note_secret(secrets)
        values = {**secrets, "subject": subject or "", "body": body, "name": self.name}
        url = _fill(self.url, values)
        if self.params:
            query = urllib.parse.urlencode(_fill(self.params, values))
            url = f"{url}{'&' if urllib.parse.urlsplit(url).query else '?'}{query}"
        headers = {str(k): str(v) for k, v in _fill(self.headers or {}, values).items()}
        if self.cookies:
            cookies = _fill(self.cookies, values)
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        payload: Any = None
        if self.json_data is not None:
            payload = _fill(self.json_data, values)
        elif self.form_data is not None:
            payload = urllib.parse.urlencode(_fill(self.form_data, values)).encode()
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        _post(self._label(), url, payload, headers, min(timeout, self.timeout), self.method)


def _placeholders(template: Any) -> set[str]:
    if isinstance(template, str):
        return set(_PLACEHOLDER.findall(template))
    if isinstance(template, dict):
        return {p for k, v in template.items() for p in _placeholders(k) | _placeholders(v)}
    if isinstance(template, list):
        return {p for item in template for p in _placeholders(item)}
    return set()


def _fill(template: Any, values: dict[str, Any]) -> Any:
    """`template` with each ``{{key}}`` replaced; a string that is one placeholder only takes
    the value itself (so ``"{{retries}}"`` may become a number)."""
    if isinstance(template, str):
        whole = _PLACEHOLDER.fullmatch(template.strip())
        if whole:
            return values[whole.group(1)]
        return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), template)
    if isinstance(template, dict):
        return {_fill(k, values): _fill(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(item, values) for item in template]
    return template


# -- Apprise: e-mail and every other service -------------------------------------------------


class SMTPEmail(NotificationBlock):
    """Send notifications as e-mail through an SMTP server (Prefect's `EmailServerCredentials`
    with `prefect_email`'s send, in one block); sent by Apprise.

    Example:
        >>> SMTPEmail(host="smtp.example.com", username="etl@example.com", password="...",
        ...           from_address="etl@example.com", to=["ops@example.com"]).save("ops-mail")
    """

    _block_type_name = "SMTP Email"
    _block_type_slug = "smtp-email"
    _description = "Send notifications as e-mail through an SMTP server (SSL or STARTTLS)."

    host: str = Field(description="The SMTP server, e.g. smtp.gmail.com.")
    port: int | None = Field(
        default=None, gt=0, lt=65536, description="Default: 465 (SSL), 587 (STARTTLS), 25."
    )
    smtp_type: Literal["SSL", "STARTTLS", "INSECURE"] = Field(
        default="STARTTLS", description="SSL from the start, STARTTLS, or no TLS at all."
    )
    username: str | None = None
    password: SecretStr | None = None
    from_address: str
    to: list[str] = Field(min_length=1, description="Recipients' addresses.")
    verify: bool = Field(
        default=True, description="Check the server's TLS certificate (off: self-signed)."
    )

    _DEFAULT_PORTS: ClassVar[dict[str, int]] = {"SSL": 465, "STARTTLS": 587, "INSECURE": 25}

    def _apprise_url(self, timeout: float) -> str:
        quote = urllib.parse.quote
        scheme = "mailto" if self.smtp_type == "INSECURE" else "mailtos"
        login = ""
        if self.username:
            login = quote(self.username, safe="")
            if self.password is not None:
                password = self.password.get_secret_value()
                note_secret(password)
                login += ":" + quote(password, safe="")
            login += "@"
        port = self.port or self._DEFAULT_PORTS[self.smtp_type]
        query = {
            "smtp": self.host,
            "from": self.from_address,
            "to": ",".join(self.to),
            "cto": f"{timeout:.3f}",
            "rto": f"{timeout:.3f}",
        }
        if self.smtp_type != "INSECURE":
            query["mode"] = self.smtp_type.lower()
            query["verify"] = "yes" if self.verify else "no"
        return f"{scheme}://{login}{self.host}:{port}?{urllib.parse.urlencode(query)}"

    def _send(self, body: str, subject: str | None, *, timeout: float) -> None:
        _apprise_send(
            f"smtp-email via {self.host}", self._apprise_url(timeout), body, subject, "info"
        )


class AppriseNotification(NotificationBlock):
    """Send notifications to any service Apprise knows, by its Apprise URL (``pagerduty://``,
    ``tgram://``, ``ntfy://``, ``json://``, ... see Apprise's wiki); the URL is sealed.
    """

    _block_type_name = "Apprise Notification"
    _description = "Send notifications to any of Apprise's ~130 services, by Apprise URL."

    url: SecretStr = Field(title="Apprise URL", description="e.g. ntfy://ntfy.sh/my-topic")
    notify_type: Literal["info", "success", "warning", "failure"] = "info"

    def _send(self, body: str, subject: str | None, *, timeout: float) -> None:
        url = self.url.get_secret_value()
        note_secret(url)
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        query += [("cto", f"{timeout:.3f}"), ("rto", f"{timeout:.3f}")]
        timed = parts._replace(query=urllib.parse.urlencode(query)).geturl()
        note_secret(timed)
        _apprise_send(f"apprise {parts.scheme}://", timed, body, subject, self.notify_type)


_apprise_lock = threading.Lock()
_apprise_masked = False


def _apprise() -> Any:
    """Apprise, imported on the first send, its log lines masked like run logs."""
    global _apprise_masked
    try:
        import apprise
    except ImportError:
        raise MissingDependency(
            f"apprise is needed to send this notification: {NOTIFICATIONS_EXTRA}"
        ) from None
    with _apprise_lock:
        if not _apprise_masked:
            logging.getLogger("apprise").addFilter(_MaskFilter())
            _apprise_masked = True
    return apprise


class _MaskFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = mask(record.getMessage()), ()
        return True


def _apprise_send(label: str, url: str, body: str, subject: str | None, kind: str) -> None:
    apprise = _apprise()
    client = apprise.Apprise()
    if not client.add(url):
        scheme = url.split(":", 1)[0]
        raise NotificationError(f"{label}: Apprise does not accept this {scheme}:// URL.")
    with apprise.LogCapture(level=logging.WARNING) as captured:
        sent = client.notify(
            body=body, title=subject or "", notify_type=kind, body_format=apprise.NotifyFormat.TEXT
        )
    if not sent:
        lines = [line for line in mask(captured.getvalue()).splitlines() if line.strip()]
        why = lines[-1].split(" - ", 2)[-1] if lines else "Apprise reported a failure"
        raise NotificationError(f"{label} failed: {why}")


# -- the state hook ---------------------------------------------------------------------------


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
