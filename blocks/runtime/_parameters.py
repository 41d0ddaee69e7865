"""Flow parameter validation: a flow's arguments checked and coerced against its type hints.

pydantic validates the arguments of type-hinted parameters before a flow starts; a bad one
raises `ParameterTypeError` naming the parameter and what was expected, never the value.

Example:
    >>> fields = parameter_hints(etl, inspect.signature(etl), "etl", None)
    >>> ParameterValidator("etl", fields)({"n": "3"})
    {'n': 3}
"""

from __future__ import annotations

import inspect
import sys
import types
import typing
import warnings
from collections.abc import Callable
from typing import Any

from blocks.errors import ParameterTypeError

__all__ = ["ParameterValidator", "defining_namespace", "parameter_hints"]


class ParameterValidator:
    """Validates and coerces the arguments of a flow's type-hinted parameters with pydantic.

    One model holds a field per annotated parameter (``p0``, ``p1``, ... aliased to the
    parameter's name, so names like ``json`` or ``schema`` cannot clash with pydantic's own).
    """

    def __init__(self, flow_name: str, fields: dict[str, Any]) -> None:
        from pydantic import ConfigDict, Field, create_model

        self.flow_name = flow_name
        self.names = list(fields)
        self.model = create_model(  # type: ignore[call-overload]
            "FlowParameters",
            __config__=ConfigDict(arbitrary_types_allowed=True, populate_by_name=False),
            **{
                f"p{i}": (hint, Field(default=None, alias=name))
                for i, (name, hint) in enumerate(fields.items())
            },
        )

    def __call__(self, arguments: dict[str, Any]) -> dict[str, Any]:
        from pydantic import ValidationError

        given = {name: arguments[name] for name in self.names if name in arguments}
        if not given:
            return {}
        problems: list[tuple[str, str]] | None = None
        try:
            model = self.model.model_validate(given)
        except ValidationError as exc:
            # Only where and what: pydantic's own message would echo the input value.
            from blocks.core._documents import safe_message

            problems = [
                # safe_message: a discriminated union's error quotes the input's tag
                (".".join(str(part) for part in err["loc"]), safe_message(err))
                for err in exc.errors(include_url=False, include_input=False)
            ]
        if problems is not None:  # raised outside the except: no chained ValidationError
            lines = "; ".join(f"parameter {loc!r}: {msg}" for loc, msg in problems)
            raise ParameterTypeError(
                f"Flow {self.flow_name!r} did not start: invalid parameters - {lines}."
            )
        return {name: getattr(model, f"p{i}") for i, name in enumerate(self.names) if name in given}


def defining_namespace(caller_module: str) -> dict[str, Any] | None:
    """The local names where the flow is defined, when inside a function (as pydantic's
    ``validate_call`` does), so string hints naming local classes still resolve.

    Frames of `caller_module` (the module making the flow) are skipped to reach the user's.
    """
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__") == caller_module:
        frame = frame.f_back
    if frame.f_locals is frame.f_globals:
        return None
    return dict(frame.f_locals)


def parameter_hints(
    fn: Callable[..., Any],
    signature: inspect.Signature,
    flow_name: str,
    localns: dict[str, Any] | None,
) -> dict[str, Any]:
    """The type hints of `fn`'s parameters, resolved; one that cannot be is left unvalidated."""
    try:
        hints = typing.get_type_hints(fn, localns=localns, include_extras=True)
    except Exception:
        hints = {}
        globalns = getattr(inspect.unwrap(fn), "__globals__", {})
        for name, annotation in getattr(fn, "__annotations__", {}).items():
            holder = types.SimpleNamespace(__annotations__={name: annotation})
            try:
                hints.update(typing.get_type_hints(holder, globalns, localns, include_extras=True))
            except Exception as exc:
                if name != "return":
                    warnings.warn(
                        f"Flow {flow_name!r}: the type hint of parameter {name!r} cannot be "
                        f"resolved ({type(exc).__name__}: {exc}); it is not validated.",
                        stacklevel=4,
                    )
    fields: dict[str, Any] = {}
    for name, param in signature.parameters.items():
        hint = hints.get(name, param.empty)
        if hint is param.empty or hint is Any:
            continue
        if param.default is None and hint is not None:
            # `date: str = None` (the seed's flows): None is accepted, as Prefect 2 (pydantic
            # v1's implicit Optional) and a plain call accept it.
            hint = typing.Optional[hint]  # noqa: UP045 - `hint | None` fails for some hints
        if param.kind is param.VAR_POSITIONAL:
            hint = tuple[hint, ...]  # type: ignore[valid-type]
        elif param.kind is param.VAR_KEYWORD:
            hint = dict[str, hint]  # type: ignore[valid-type]
        fields[name] = hint
    return fields
