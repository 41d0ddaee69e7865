"""Annotations for task and flow arguments: `allow_failure`, `quote`, `opaque`, `unmapped`.

They wrap one argument and tell the engine how to treat it, as Prefect 3's
``prefect.utilities.annotations`` do (also importable from ``blocks.utilities.annotations``):

- no annotation: futures and states in the argument (three levels into lists, tuples, sets and
  dicts) are waited for and replaced by their results; a failed one means the task does not
  run (its state is ``NotReady``).
- `allow_failure(x)`: the same, but a failed upstream gives its exception instead of stopping
  the run (a ``NotReady`` upstream gives None).
- `quote(x)`: passed as is: nothing inside is waited for or looked at (cheap for big values).
- `opaque(x)`: a future or state is resolved, but the value is not searched for more futures.
- `unmapped(x)`: ``.map()`` passes `x` whole to every run.

Example:
    >>> @flow
    ... def pipeline() -> str:
    ...     raw = extract.submit()
    ...     return report(allow_failure(raw))   # runs even if extract failed
"""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["BaseAnnotation", "allow_failure", "opaque", "quote", "unmapped"]

T = TypeVar("T")

#: ``SCAN[0]``: task arguments may hold futures, states or annotations to resolve. Off until
#: one of those is made in this process, so plain calls skip the scan; set here by the first
#: annotation and by `blocks.runtime._futures` (which reads it) for the first future.
SCAN = [False]


class BaseAnnotation(tuple[T], Generic[T]):
    """One wrapped value; a 1-tuple so it unpacks as Prefect's annotations do."""

    __slots__ = ()

    def __new__(cls, value: T) -> BaseAnnotation[T]:
        SCAN[0] = True  # arguments may now hold annotations to unwrap
        return super().__new__(cls, (value,))

    @property
    def value(self) -> T:
        return self[0]

    def unwrap(self) -> T:
        return self[0]

    def rewrap(self, value: T) -> BaseAnnotation[T]:
        return type(self)(value)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((type(self), self[0]))

    def __getnewargs__(self) -> tuple[T]:
        return (self[0],)  # pickle rebuilds `cls(value)`, not `cls((value,))`

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self[0]!r})"


class unmapped(BaseAnnotation[T]):
    """An argument of ``.map()`` that every run receives whole instead of one element."""


class allow_failure(BaseAnnotation[T]):
    """A future or state whose run may have failed: the task still runs and gets its exception."""


class quote(BaseAnnotation[T]):
    """A value passed as is: not searched for futures or states, not resolved."""

    def unquote(self) -> T:
        return self[0]


class opaque(BaseAnnotation[T]):
    """A future or state resolved to its result, whose value is then not searched further."""
