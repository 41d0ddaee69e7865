"""`is_plain`: whether a value is a tree the C JSON encoders write as it is (internal).

Shared by `serializers.json` (its fast path) and `serializers._fastjson` (what orjson may
encode). Checked level by level with C-level bulk operations (`map`, `chain`, `compress`), so
no Python code runs per value.
"""

from __future__ import annotations

import math
import sys
from itertools import chain, compress, repeat
from operator import contains
from typing import Any

#: The key of a tagged value (`serializers.json.TAG`; not imported: json imports us).
TAG = "__blocks__"
#: How many values the check looks at before giving up (bounds its work and memory on
#: cyclic or gigantic input).
CHECK_BUDGET = 10_000_000

_STR_ONLY = frozenset({str})
_is_float = frozenset({float}).__contains__
_is_container = frozenset({dict, list}).__contains__
_flatten = chain.from_iterable


def is_plain(obj: Any, leaves: set[type] | frozenset[type], *, finite: bool = False) -> bool:
    """Whether `obj` is made only of exact ``dict`` (str keys, none the tag key) and ``list``
    containers over `leaves` types; with `finite`, floats must be finite too.

    A tree past `CHECK_BUDGET` values or deeper than the recursion limit (a cycle) is not
    plain: the caller's general path decides.
    """
    t = type(obj)
    if t is dict:
        dicts, lists = [obj], []
    elif t is list:
        dicts, lists = [], [obj]
    elif finite and t is float:
        return math.isfinite(obj)
    else:
        return t in leaves
    budget, depth_left = CHECK_BUDGET, sys.getrecursionlimit()
    while True:
        budget -= sum(map(len, dicts)) + sum(map(len, lists))
        depth_left -= 1
        if budget < 0 or depth_left < 0:
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
        if not leaves.issuperset(types):
            return False
        # A NaN or an infinity makes the sum non-finite (finite floats whose sum overflows
        # too: those only take the general path).
        if (
            finite
            and float in types
            and not math.isfinite(sum(compress(items, map(_is_float, kinds)), 0.0))
        ):
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
