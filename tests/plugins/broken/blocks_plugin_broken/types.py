"""Fails on import, as a plugin whose own dependency is missing does."""

from __future__ import annotations

raise ImportError("blocks_plugin_broken needs libdemo-missing, which is not installed")
