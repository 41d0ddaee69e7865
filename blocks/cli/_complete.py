"""Shell completion of saved block slugs and type slugs (click's completion; see the README).

Completion runs on every Tab press, so it reads the registry and nothing else, and it never
prints an error: a broken registry just completes nothing (the command itself will say why).
"""

from __future__ import annotations

import contextlib
from typing import Any

from click.shell_completion import CompletionItem


def saved_blocks(_ctx: Any, _param: Any, incomplete: str) -> list[CompletionItem]:
    """``TYPE/NAME`` of saved blocks starting with `incomplete`."""
    from blocks.core._registry import Registry

    try:
        rows = Registry.default().list_documents()
    except Exception:  # any failure: complete nothing rather than spill onto the prompt
        return []
    return [CompletionItem(row.slug) for row in rows if row.slug.startswith(incomplete)]


def block_types(_ctx: Any, _param: Any, incomplete: str) -> list[CompletionItem]:
    """Type slugs shipped with blocks or registered, starting with `incomplete`."""
    from blocks.core._block import BUILTIN_BLOCK_MODULES
    from blocks.core._registry import Registry

    slugs = set(BUILTIN_BLOCK_MODULES)
    with contextlib.suppress(Exception):  # as above: the built-in types still complete
        slugs.update(row.slug for row in Registry.default().list_types())
    return [CompletionItem(slug) for slug in sorted(slugs) if slug.startswith(incomplete)]
