"""The source text of a function as it was *loaded*: never a file edited since, never another
program's text that happens to share a pseudo file name.

``inspect.getsource`` reads whatever `linecache` holds for a code object's file name today. Two
ways that text is not the code in memory:

- the file was edited after the import (a ``git pull`` under a long-running worker): the text is
  the new code while the process runs the old one, so a key built from it would file the old
  code's result under the new code's key;
- a pseudo file (``<string>``) names many programs: on Python 3.13 ``python -c`` puts its own
  program into `linecache` under ``<string>`` (pytest-xdist workers start that way), and every
  function later ``exec``'d from a string "has" a line of that program as its source.

So the text is checked against the loaded code: the whole file is compiled again (once per file
text and process) and the code object at the function's qualified name and first line must equal
the one in memory (bytecode, constants, names, line table). Otherwise there is no source and the
caller identifies the function by its bytecode, which is the code that runs.

Example:
    >>> loaded_source(price)
    ('@cached\\ndef price(x):\\n    return x * 2\\n', None)
"""

from __future__ import annotations

import ast
import inspect
import linecache
import sys
import threading
import types
from dataclasses import dataclass
from typing import Any

__all__ = ["class_source", "loaded_source"]

#: Why a function has no trusted source (the caller's note says which).
NO_SOURCE = "no source"
STALE = "its file changed since it was loaded"

_Index = dict[tuple[str, int], list[types.CodeType]]
#: Class qualified name -> (first line with decorators, ``class`` line, last line), per file.
_Classes = dict[str, list[tuple[int, int, int]]]


@dataclass
class _File:
    lines: list[str]  # compared by identity: `linecache` replaces the list when it re-reads
    index: _Index | None  # the code objects of that text by (qualified name, first line)
    classes: _Classes | None = None  # parsed on first use


#: Per file name, the text last compiled.
_compiled: dict[str, _File] = {}
_compiled_lock = threading.Lock()
_MAX_FILES = 512


def _index(text: str, filename: str) -> _Index | None:
    try:
        module = compile(text, filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return None
    found: _Index = {}
    stack = [module]
    while stack:
        code = stack.pop()
        found.setdefault((code.co_qualname, code.co_firstlineno), []).append(code)
        stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return found


def _file(filename: str, lines: list[str]) -> _File:
    entry = _compiled.get(filename)
    if entry is not None and entry.lines is lines:
        return entry
    entry = _File(lines, _index("".join(lines), filename))
    with _compiled_lock:
        if len(_compiled) >= _MAX_FILES:
            _compiled.clear()
        _compiled[filename] = entry
    return entry


def _class_spans(text: str) -> _Classes:
    """Every class in `text` by qualified name (``outer.<locals>.Inner`` as Python names it)."""
    found: _Classes = {}
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return found
    stack: list[tuple[ast.AST, str]] = [(tree, "")]
    while stack:  # iterative: a deeply nested expression must not hit the recursion limit
        node, prefix = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                name = f"{prefix}{child.name}"
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                found.setdefault(name, []).append((first, child.lineno, child.end_lineno or 0))
                stack.append((child, f"{name}."))
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                stack.append((child, f"{prefix}{child.name}.<locals>."))
            else:
                stack.append((child, prefix))
    return found


def class_source(cls: type) -> str | None:
    """The source of `cls` from its module's file, found by qualified name in one parse of
    the file (``inspect.getsource`` parses the whole file again for every class on 3.11 and
    3.12), or None: no file, or no single class of that name (``__firstlineno__`` decides on
    3.13)."""
    module = sys.modules.get(cls.__module__)
    filename = getattr(module, "__file__", None)
    if not isinstance(filename, str):
        return None
    linecache.checkcache(filename)
    lines = linecache.getlines(filename, vars(module) if module is not None else None)
    if not lines:
        return None
    entry = _file(filename, lines)
    if entry.classes is None:
        entry.classes = _class_spans("".join(lines))
    spans = entry.classes.get(cls.__qualname__, [])
    first_line = vars(cls).get("__firstlineno__")
    if isinstance(first_line, int):
        spans = [span for span in spans if first_line in (span[0], span[1])]
    if len(spans) != 1:
        return None
    first, _, end = spans[0]
    return "".join(lines[first - 1 : end])


def loaded_source(fn: Any) -> tuple[str | None, str | None]:
    """``(source, None)`` when the text on record compiles to `fn`'s code in memory, else
    ``(None, reason)``: `NO_SOURCE` or `STALE`."""
    code = getattr(fn, "__code__", None)
    if not isinstance(code, types.CodeType):
        return None, NO_SOURCE
    filename = code.co_filename
    linecache.checkcache(filename)  # a file edited since: read again, so the check below sees it
    lines = linecache.getlines(filename, getattr(fn, "__globals__", None))
    if not lines:
        return None, NO_SOURCE
    index = _file(filename, lines).index
    candidates = (index or {}).get((code.co_qualname, code.co_firstlineno), ())
    if not any(candidate == code for candidate in candidates):
        # The text on record is not what runs: edited since, or another program's text.
        pseudo = filename.startswith("<") and filename.endswith(">")
        return None, NO_SOURCE if pseudo else STALE
    try:
        block = inspect.getblock(lines[code.co_firstlineno - 1 :])
    except (IndexError, SyntaxError):  # pragma: no cover - the text compiled above
        return None, NO_SOURCE
    return "".join(block), None


def clear() -> None:
    """Forget every compiled file (tests)."""
    with _compiled_lock:
        _compiled.clear()
