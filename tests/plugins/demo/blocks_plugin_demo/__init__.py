"""A test plugin for blocks (installed by tests/test_plugins.py)."""
