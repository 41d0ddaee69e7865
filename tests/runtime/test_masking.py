"""Masking: every secret value this process has loaded is replaced by ``***`` in run logs,
printed lines, state messages and tracebacks (`blocks/core/_masking.py`).

Each test is the leak it guards against: a flow that logs, prints and raises with secrets in
the message, then every log line, state message and formatted traceback is searched for them.
"""

from __future__ import annotations

import io
import logging
import secrets
import traceback
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from blocks import Block, SecretDict, flow, get_run_logger, mask_secret, task
from blocks.core import _masking
from blocks.system import Secret


class MaskingWarehouse(Block):
    """A test block with secret fields (opened on load, never `.get()`-ed)."""

    host: str
    password: SecretStr
    login: SecretDict


def _fresh(prefix: str) -> str:
    # Values unique to each test: the masker's set lives as long as the process.
    return f"{prefix}-{secrets.token_hex(8)}"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Every record of every logger, formatted with its traceback, as a handler on the root
    logger prints it (the run loggers propagate there)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def _everything(state: object, stream: io.StringIO) -> str:
    """Log text, the state's message and repr, and its exception's traceback as printed."""
    from blocks.runtime._states import State

    assert isinstance(state, State)
    parts = [stream.getvalue(), repr(state), state.message or ""]
    if state.exception is not None:
        parts.append("".join(traceback.format_exception(state.exception)))
    return "\n".join(parts)


def test_a_flow_that_logs_prints_and_raises_secrets_shows_none_of_them(
    captured: io.StringIO,
) -> None:
    api_key = _fresh("api-key")
    db_password = _fresh("db-pass")
    dict_user, dict_token = _fresh("user"), _fresh("token")
    Secret(value=api_key).save("api-key")
    MaskingWarehouse(
        host="db.internal",
        password=SecretStr(db_password),
        login={"user": dict_user, "token": dict_token},
    ).save("prod")

    @task(log_prints=True)
    def leaky() -> None:
        key = Secret.load("api-key").get()
        wh = MaskingWarehouse.load("prod")
        pw = wh.password.get_secret_value()
        login = wh.login.get_secret_value()
        logger = get_run_logger()
        logger.info("calling with key=%s and password %r", key, pw)
        logger.warning(f"login {login}")
        print("printed:", key, pw, login["token"])
        try:
            raise KeyError(login["user"])
        except KeyError as exc:
            logger.exception("lookup failed for %s", key)
            raise RuntimeError(f"connect failed: password={pw} key={key}") from exc

    @flow(log_prints=True)
    def etl() -> None:
        print("flow sees", Secret.load("api-key").get())
        leaky()

    state = etl(return_state=True)
    assert state.is_failed()
    shown = _everything(state, captured)
    task_state = state.exception
    leaked = [v for v in (api_key, db_password, dict_user, dict_token) if v in shown]
    lines = shown.count("\n")
    print(f"searched {lines} lines of logs, state and traceback: {len(leaked)} leaks")
    assert leaked == []
    assert "***" in shown
    assert "connect failed: password=*** key=***" in (state.message or "")
    assert "printed: *** *** ***" in shown
    assert "calling with key=*** and password '***'" in shown
    assert isinstance(task_state, RuntimeError)
    # The exception raised to the caller is the masked one, chain included.
    with pytest.raises(RuntimeError, match=r"password=\*\*\* key=\*\*\*"):
        state.result()


def test_a_value_shorter_than_five_characters_is_not_masked(captured: io.StringIO) -> None:
    Secret(value="abcd").save("short")
    long_one = _fresh("long")
    mask_secret({"pin": "1234", "nested": [long_one]})

    @flow
    def shows() -> None:
        get_run_logger().info("short %s long %s", Secret.load("short").get(), long_one)

    shows()
    text = captured.getvalue()
    assert "short abcd long ***" in text
    assert long_one not in text


def test_mask_secret_hides_a_users_own_value_in_a_failed_state() -> None:
    token = _fresh("partner-token")
    mask_secret(token)

    @flow
    def fails() -> None:
        raise ValueError(f"partner refused {token}")

    state = fails(return_state=True)
    assert state.message == "ValueError: partner refused ***"
    assert token not in "".join(traceback.format_exception(state.exception))


def test_a_value_containing_another_is_masked_whole() -> None:
    inner = _fresh("inner")
    outer = f"{inner}-and-more"
    mask_secret(inner)
    mask_secret(outer)
    assert _masking.mask(f"a {outer} b {inner}") == "a *** b ***"


def test_bytes_and_escaped_values_are_masked() -> None:
    raw = _fresh("bytes").encode()
    quoted = _fresh("it's\nquoted")
    mask_secret(raw)
    mask_secret(quoted)
    assert _masking.mask(f"{raw!r} {raw.decode()}") == "b'***' ***"
    assert _masking.mask(f"{quoted!r}") == '"***"'


def test_log_lines_without_secrets_keep_their_arguments(caplog: pytest.LogCaptureFixture) -> None:
    mask_secret(_fresh("unrelated"))

    @flow
    def plain() -> None:
        get_run_logger().info("rows %d", 42)

    with caplog.at_level(logging.INFO):
        plain()
    record = next(r for r in caplog.records if r.getMessage() == "rows 42")
    assert record.args == (42,)
