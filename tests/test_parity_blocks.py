"""Prefect parity for blocks, filesystems and serializers (issue #10).

Each test is written against Prefect 3's documented behaviour (`prefect.blocks.core`,
`prefect.blocks.system`, `prefect.filesystems`, `prefect.serializers`); where we are
deliberately different the README's "Differences from Prefect" says so and the test pins
our behaviour.
"""

from __future__ import annotations

import pytest

from blocks.errors import BlockAlreadyExists, BlockNotFound
from blocks.system import Secret

# -- errors: Prefect code catches ValueError -----------------------------------------------


def test_block_not_found_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Secret.load("missing")
    with pytest.raises(LookupError):  # what our own callers catch keeps working
        Secret.load("missing")
    assert issubclass(BlockNotFound, ValueError)


def test_block_already_exists_is_a_value_error() -> None:
    Secret(value="a").save("taken")
    with pytest.raises(ValueError, match="overwrite"):
        Secret(value="b").save("taken")
    assert issubclass(BlockAlreadyExists, ValueError)


# -- Secret: str, dict or list (Prefect 3's value type) ------------------------------------


def test_secret_holds_a_list_encrypted_and_masked(blocks_home: object) -> None:
    tokens = ["tok-aaaaaaaa", {"nested": "tok-bbbbbbbb"}, 3]
    Secret(value=tokens).save("tokens")
    loaded = Secret.load("tokens")
    assert loaded.get() == tokens
    assert "tok-" not in repr(loaded) and "tok-" not in loaded.model_dump_json()
    from blocks.registry import Registry

    row = Registry.default().get_document("secret", "tokens")
    assert row is not None and "tok-" not in repr(row.data)
    assert list(row.secrets) == ["value"]
