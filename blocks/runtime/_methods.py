"""Tasks and flows as methods: what ``@task`` / ``@flow`` binds to when read from a class.

``@task`` (or ``@flow``) on an instance method, a classmethod or a staticmethod, the decorator
above or below ``@classmethod`` / ``@staticmethod``, as in Prefect 3. Read from an instance, a
method's task is bound to it (a copy of the task that passes the instance first); read from the
class it is the task itself (``Foo.method(foo)`` passes the instance by hand). A classmethod's
task is bound to the class it is read from (a subclass binds the subclass); a staticmethod's is
never bound. Everything a task can do, its bound copy does: call, ``.submit()``, ``.map()``
(the instance goes to every run, unmapped) and ``with_options`` (which stays bound).

Example:
    >>> class Warehouse:
    ...     def __init__(self, url: str) -> None:
    ...         self.url = url
    ...     @task(retries=2)
    ...     def load(self, rows: list[dict]) -> int:
    ...         return len(rows)
    >>> Warehouse("db://x").load.submit([{"a": 1}]).result()
    1
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal, Self

__all__ = ["NOT_BOUND", "Bound", "MethodKind", "bind_target", "bound_name", "unwrap_method"]

MethodKind = Literal["classmethod", "staticmethod"] | None

#: What `bind_target` gives when the task is read unbound (`None` is a valid instance).
NOT_BOUND: Any = object()


def unwrap_method(fn: Any) -> tuple[Callable[..., Any], MethodKind]:
    """The function inside a ``classmethod`` / ``staticmethod`` object, and which it was."""
    if isinstance(fn, classmethod):
        return fn.__func__, "classmethod"
    if isinstance(fn, staticmethod):
        return fn.__func__, "staticmethod"
    return fn, None


def bind_target(kind: MethodKind, instance: Any, owner: Any) -> Any:
    """What a task or flow read as ``owner.name`` or ``instance.name`` passes first: the
    instance, the class (a classmethod), or `NOT_BOUND` (read from the class, or static)."""
    if kind == "staticmethod":
        return NOT_BOUND
    if kind == "classmethod":
        return owner if owner is not None else type(instance)
    return NOT_BOUND if instance is None else instance


def bound_name(target: Any) -> str:
    """How a bound task's repr names what it is bound to: a class, or an instance's class."""
    return target.__name__ if isinstance(target, type) else f"{type(target).__name__} instance"


class Bound:
    """What a bound task or flow adds to its class (`BoundTask`, `BoundFlow`): the instance (or
    class) it is bound to, passed first to every call; ``with_options`` keeps it bound.

    `unbound` is the class it binds (`Task`, `Flow`): its methods are called with the target
    added, and its name shows in the repr.
    """

    unbound: ClassVar[Any]
    __self__: Any

    @classmethod
    def of(cls, obj: Any, target: Any) -> Self:
        """A copy of the task or flow `obj`, bound to `target`."""
        bound = object.__new__(cls)
        bound.__dict__.update(obj.__dict__)
        bound.__self__ = target
        return bound

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        return self  # already bound

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.unbound.__call__(self, self.__self__, *args, **kwargs)

    def with_options(self, **options: Any) -> Any:
        return self.of(self.unbound.with_options(self, **options), self.__self__)

    def __repr__(self) -> str:
        name = self.__dict__["name"]
        return f"{self.unbound.__name__}(name={name!r}, bound to {bound_name(self.__self__)!r})"
