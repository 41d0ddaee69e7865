"""A test plugin for blocks that cannot be imported (installed by tests/test_plugins.py)."""
