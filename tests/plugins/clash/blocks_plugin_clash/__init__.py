"""A test plugin for blocks that clashes with the demo plugin (tests/test_plugins.py)."""
