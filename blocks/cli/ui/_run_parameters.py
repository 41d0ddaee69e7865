"""A deployment's "run" form from its flow's parameters, the posted form back to values, and
parameters made fit to show (secrets masked).

The registry keeps, per deployment, the names its flow takes and the default values it was
deployed with, not the flow's code (a UI never imports code named by the registry). So each
input's kind follows the stored default: a string stays text, a number gets a number input, a
boolean a true/false choice, anything else JSON; a parameter without a default takes JSON or
plain text, as ``block deployment run --param k=v`` does. The flow checks and coerces the values
when the run starts, as a direct call would.

A parameter is masked when its value is pydantic's mask (a ``SecretStr`` stored as
``**********``), or holds the plaintext of any secret saved in the registry (a value that came
from a secret).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from blocks.cli.ui._forms import MASK
from blocks.errors import BlocksError

#: What pydantic's `SecretStr` turns into when stored as text.
PYDANTIC_MASK = "**********"


@dataclass
class ParameterInput:
    """One input of a run form; `value` is display text (a masked default shows empty)."""

    name: str
    kind: str  # text number boolean json secret
    value: str
    default: str  # how the deployment's default is shown ("" without one)


def run_form(
    names: Iterable[str], defaults: Mapping[str, Any], secrets: Iterable[str] = ()
) -> list[ParameterInput]:
    """The inputs of a run form: one per parameter name (and per default without a name)."""
    hidden = list(secrets)
    inputs = []
    for name in dict.fromkeys([*names, *defaults]):
        if name not in defaults:
            inputs.append(ParameterInput(name, "json", "", ""))
            continue
        value = defaults[name]
        if is_secret(value, hidden):
            inputs.append(ParameterInput(name, "secret", "", MASK))
        elif isinstance(value, bool):
            text = "true" if value else "false"
            inputs.append(ParameterInput(name, "boolean", text, text))
        elif isinstance(value, int | float):
            inputs.append(ParameterInput(name, "number", str(value), str(value)))
        elif isinstance(value, str):
            inputs.append(ParameterInput(name, "text", value, value))
        else:
            text = json.dumps(value, ensure_ascii=False)
            inputs.append(ParameterInput(name, "json", text, text))
    return inputs


def parse_run_form(
    inputs: list[ParameterInput], posted: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The parameters a posted run form gives (an input left empty gives none: the
    deployment's default, else the flow's, applies), and errors by parameter name."""
    given: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for item in inputs:
        text = posted.get(f"param.{item.name}", "")
        if item.kind != "secret":
            item.value = text
        if text.strip() == "":
            continue
        if item.kind in ("text", "secret"):
            given[item.name] = text
        elif item.kind == "boolean":
            if text not in ("true", "false"):
                errors[item.name] = "expects true or false"
                continue
            given[item.name] = text == "true"
        elif item.kind == "number":
            try:
                number = json.loads(text)
            except ValueError:
                number = None
            if not isinstance(number, int | float) or isinstance(number, bool):
                errors[item.name] = "expects a number"
                continue
            given[item.name] = number
        else:
            try:
                given[item.name] = json.loads(text)
            except ValueError:
                if text.strip()[:1] in ("[", "{"):
                    errors[item.name] = "is not valid JSON"
                    continue
                given[item.name] = text  # plain text, as `--param k=v` takes it
    return given, errors


def is_secret(value: Any, secrets: list[str]) -> bool:
    """Whether `value` is a masked `SecretStr` or holds any of `secrets`."""
    if isinstance(value, str):
        return value == PYDANTIC_MASK or any(s in value for s in secrets)
    if isinstance(value, dict):
        return any(is_secret(k, secrets) or is_secret(v, secrets) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(is_secret(item, secrets) for item in value)
    return False


def secret_names(defaults: Mapping[str, Any], secrets: list[str]) -> frozenset[str]:
    """The parameters whose deployed default is secret: a value typed for one of them into
    the run form's password input is a secret too, though no saved secret holds it."""
    return frozenset(name for name, value in defaults.items() if is_secret(value, secrets))


def shown_parameters(
    values: Mapping[str, Any], secrets: list[str], hidden: frozenset[str] = frozenset()
) -> list[tuple[str, str, bool]]:
    """``(name, text, masked)`` of a run's parameters, secrets (and `hidden` names) masked."""
    shown = []
    for name, value in values.items():
        if name in hidden or is_secret(value, secrets):
            shown.append((name, MASK, True))
        elif isinstance(value, str):
            shown.append((name, value, False))
        else:
            shown.append((name, json.dumps(value, ensure_ascii=False), False))
    return shown


def saved_secret_values() -> list[str]:
    """The plaintext of every secret saved in the registry (6+ characters; shorter ones would
    mask ordinary words), to mask a parameter or log line that holds one. Read per page, never
    kept; a block whose type cannot be loaded here is passed over."""
    from blocks.core._block import Block
    from blocks.core._registry import Registry
    from blocks.filesystems.base import secret_strings

    found: list[str] = []
    for row in Registry.default().list_documents():
        if not row.secrets:
            continue
        try:
            found += secret_strings(Block.load(row.slug))
        except (BlocksError, ImportError):
            continue
    return sorted(set(found), key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    """`text` with every one of `secrets` (longest first) replaced by the mask."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text
