"""orjson for `JSONSerializer(jsonlib="orjson")`, used only where it gives the same value.

orjson is faster than the standard library but differs from it on values that matter here:
it writes NaN and ±Infinity as ``null``, writes UUIDs, Enums, dataclasses and datetimes in its
own way (our tags would be skipped), refuses ints beyond 64 bits and lone surrogates, and reads
an int beyond 64 bits back as a float. So it is handed only what it cannot get wrong:

* **encoding**: a tree of exact ``dict`` (str keys), ``list``, ``str``, ``int``, ``float``,
  ``bool`` and ``None`` whose floats are all finite (checked level by level with C-level bulk
  operations). Anything else - a tagged type, a NaN, a subclass - is written by the standard
  encoder; an int or string orjson refuses falls back there too.
* **decoding**: data with no tag and no run of 19 digits (an int that may not fit 64 bits);
  whatever orjson rejects (``NaN``, ``Infinity``, an escaped lone surrogate, ``1e400``) is read
  by the standard decoder, which reads everything either encoder wrote.

The bytes differ from the standard encoder's only in spelling (``1e16`` for ``1e+16``); every
value reads back the same with either library (a hypothesis property in
``tests/core/test_parity_blocks_second_round.py``).
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from itertools import chain, compress, repeat
from operator import contains
from typing import Any

__all__ = ["TAG", "available", "fast_dumps", "fast_loads"]

_JSON_LEAVES = frozenset({str, int, float, bool, type(None)})
_is_float = frozenset({float}).__contains__
_is_container = frozenset({dict, list}).__contains__
_flatten = chain.from_iterable
_STR_ONLY = frozenset({str})
#: An int literal orjson may read as a float (2**63 has 19 digits): 19 digits where a JSON
#: value or its minus sign may start (after ``[ , :``, whitespace or ``-``), so the digits of
#: a fraction (after ``.``) never match. Digits in strings or exponents may match too, which
#: only sends that record to the standard decoder. (A lookbehind would be ~20x slower.)
_LONG_INT = re.compile(rb"[\[,:\s-][0-9]{19}")
_LONG_INT_FIRST = re.compile(rb"\s*-?[0-9]{19}")
#: The key of a tagged value (`serializers.json.TAG`; not imported: json imports us).
TAG = "__blocks__"
#: The tag key as it is written (plain ASCII: never escaped), found in any buffer.
_TAG_WRITTEN = re.compile(re.escape(b'"__blocks__"'))
#: How many values the plain check looks at before leaving the value to the standard encoder.
_CHECK_BUDGET = 10_000_000

_orjson: Any = None


def available() -> bool:
    """Whether orjson can be imported."""
    global _orjson
    if _orjson is None:
        try:
            import orjson
        except ImportError:
            _orjson = False
        else:
            _orjson = orjson
    return _orjson is not False


def fast_dumps(obj: Any) -> bytes | None:
    """`obj` encoded by orjson, or None when the standard encoder must write it."""
    if not _plain_and_finite(obj):
        return None
    try:
        data: bytes = _orjson.dumps(obj)
    except _orjson.JSONEncodeError:  # an int beyond 64 bits, a lone surrogate, deep nesting
        return None
    return data


def fast_loads(data: bytes, slow: Callable[[bytes], Any]) -> Any:
    """`data` (bytes, or any buffer: read in place) decoded by orjson where it reads the same
    value, else by `slow`."""
    if _TAG_WRITTEN.search(data) or _LONG_INT.search(data) or _LONG_INT_FIRST.match(data):
        return slow(data)
    try:
        return _orjson.loads(data)
    except _orjson.JSONDecodeError:  # NaN, Infinity, 1e400, an escaped lone surrogate...
        return slow(data)


def _plain_and_finite(obj: Any) -> bool:
    """Whether `obj` is made only of exact JSON types, with str keys and finite floats.

    Level by level, as `serializers.json._is_plain`: no Python code runs per value. A tree
    deeper than the recursion limit (or a cycle) is not plain.
    """
    t = type(obj)
    if t is dict:
        dicts, lists = [obj], []
    elif t is list:
        dicts, lists = [], [obj]
    elif t is float:
        return math.isfinite(obj)
    else:
        return t in _JSON_LEAVES
    budget, depth_left = _CHECK_BUDGET, sys.getrecursionlimit()
    while True:
        budget -= sum(map(len, dicts)) + sum(map(len, lists))
        depth_left -= 1
        if budget < 0 or depth_left < 0:  # gigantic, or a cycle: the standard encoder decides
            return False
        if dicts:
            if any(map(contains, dicts, repeat(TAG))):  # a user dict holding our tag key
                return False
            if not _STR_ONLY.issuperset(map(type, _flatten(dicts))):
                return False
            items = list(_flatten(map(dict.values, dicts)))
            items.extend(_flatten(lists))
        else:
            items = lists[0] if len(lists) == 1 else list(_flatten(lists))
        kinds = list(map(type, items))
        types = set(kinds)
        has_dict, has_list = dict in types, list in types
        types.discard(dict)
        types.discard(list)
        if not _JSON_LEAVES.issuperset(types):
            return False
        # A NaN or an infinity makes the sum non-finite (finite floats whose sum overflows
        # too: those only take the slow path).
        if float in types and not math.isfinite(sum(compress(items, map(_is_float, kinds)), 0.0)):
            return False
        if not (has_dict or has_list):
            return True
        kids = list(compress(items, map(_is_container, kinds)))
        if has_dict and has_list:
            dicts = [k for k in kids if type(k) is dict]
            lists = [k for k in kids if type(k) is list]
        elif has_dict:
            dicts, lists = kids, []
        else:
            dicts, lists = [], kids
