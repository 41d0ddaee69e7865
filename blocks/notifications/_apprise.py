"""E-mail over SMTP and any of Apprise's services: sent by Apprise (the ``notifications``
extra), imported on the first send, its log lines masked like run logs."""

from __future__ import annotations

import logging
import threading
import urllib.parse
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr

from blocks.core._masking import mask
from blocks.core._masking import note as note_secret
from blocks.errors import MissingDependency, NotificationError
from blocks.notifications._base import NOTIFICATIONS_EXTRA, NotificationBlock


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
