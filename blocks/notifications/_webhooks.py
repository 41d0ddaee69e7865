"""Slack, Microsoft Teams, Discord and a custom webhook: one HTTP request each, sent through
`Webhook`'s HTTP path (no extra package; the URL pasted is the URL called)."""

from __future__ import annotations

import re
import urllib.parse
from abc import abstractmethod
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from blocks.core._block import SecretDict
from blocks.core._masking import note as note_secret
from blocks.core._references import is_reference
from blocks.errors import NotificationError, WebhookError
from blocks.notifications._base import NotificationBlock
from blocks.system import Webhook

_USER_AGENT = "blocks-notifications"


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
