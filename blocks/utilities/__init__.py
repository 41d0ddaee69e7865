"""Prefect-compatible import paths (``blocks.utilities.annotations``)."""
