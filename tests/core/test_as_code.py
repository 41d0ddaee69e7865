"""Blocks as code (`export_blocks`, `plan_blocks`, `apply_blocks`) on real registries.

Each test exports from the per-test SQLite registry and applies into a *target*: another SQLite
file, or a fresh PostgreSQL database (`target` runs each test on both). A registry is compared
before and after by every row of its tables (`snapshot`), so "unchanged" means byte for byte.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import Field, SecretBytes, SecretStr

from blocks.core import _registry_batch
from blocks.core._as_code import apply_blocks, plan_blocks
from blocks.core._backup_key import BackupKey
from blocks.core._block import Block, SecretDict
from blocks.core._blocks_export import export_blocks
from blocks.core._blocks_file import read_blocks_file
from blocks.core._encryption import KeyManager
from blocks.core._references import SecretRef
from blocks.core._registry import Registry, StaleKey
from blocks.core._rotation import rotate_master_key
from blocks.errors import BlockInUse, DecryptionFailed, InvalidBlocksFile


class ApplyCreds(Block):
    user: str
    password: SecretStr


class ApplyStore(Block):
    path: str
    creds: ApplyCreds
    options: dict[str, Any] = Field(default_factory=dict)
    tokens: list[SecretStr] = Field(default_factory=list)


class ApplyVault(Block):
    note: str = ""
    key: SecretBytes
    config: SecretDict
    extra: dict[str, Any] = Field(default_factory=dict)


SECRETS = {
    "password": "pw-Zq8X-one",
    "token0": "tok-Zq8X-zero",
    "token1": "tok-Zq8X-first",
    "bytes": "bytes-Zq8X-raw",
    "dict": "dict-Zq8X-leaf",
    "nested": "nested-Zq8X-deep",
    "inline": "inline-Zq8X-pw",
}


def new_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    """An empty registry to apply into: another SQLite file, or a fresh PostgreSQL database."""
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_db_url")
    else:
        url = f"sqlite:///{tmp_path / 'target' / 'registry.db'}"
    KeyManager._instances.clear()
    yield Registry.for_url(url)


def snapshot(registry: Registry) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every registry table, sorted: equal snapshots are equal registries."""
    from blocks.core import _registry_tables as tables

    found = {}
    with registry.read() as conn:
        for table in tables.metadata.sorted_tables:
            rows = conn.execute(sa.select(table)).all()
            found[table.name] = sorted(tuple(str(v) for v in row) for row in rows)
    return found


def save_with_references() -> None:
    """Blocks whose secrets are all references: an export holds everything they are."""
    ApplyCreds(user="etl", password=SecretRef("env:APPLY_PASSWORD")).save("prod")
    ApplyStore(
        path="bucket/${not-a-variable}/$HOME",
        creds=ApplyCreds.load("prod"),
        options={"retries": 3, "ratio": 1.0, "on": True, "when": "2024-01-01", "a.b": None},
        tokens=[SecretRef("file:/run/secrets/token"), SecretRef("env:TOKEN_TWO")],
    ).save("lake")
    ApplyStore(path="inline", creds=ApplyCreds(user="x", password=SecretRef("env:INLINE_PW"))).save(
        "inline"
    )


def save_with_values() -> None:
    """Blocks whose secrets are values, of every kind and place."""
    ApplyCreds(user="etl", password=SECRETS["password"]).save("prod")
    ApplyStore(
        path="p",
        creds=ApplyCreds.load("prod"),
        tokens=[SECRETS["token0"], SECRETS["token1"]],
    ).save("lake")
    ApplyStore(path="i", creds=ApplyCreds(user="x", password=SECRETS["inline"])).save("inline")
    ApplyVault(
        key=SECRETS["bytes"].encode(),
        config={"leaf": SECRETS["dict"], "n": [1, 2]},
        extra={"deep": [SecretStr(SECRETS["nested"])]},
    ).save("vault")


def parse(text: str, environ: dict[str, str] | None = None, source: str = "blocks.yaml") -> Any:
    return read_blocks_file(text, source, environ if environ is not None else {})


def test_round_trip_export_apply_export_gives_the_same_file(target: Registry) -> None:
    save_with_references()
    first = export_blocks(Registry.default())
    plan = apply_blocks(parse(first), target)
    assert [c.line() for c in plan.changes] == [
        "+ create apply-creds/prod",
        "+ create apply-store/inline",
        "+ create apply-store/lake",
    ]
    again = export_blocks(target)
    print(f"\n{len(first.splitlines())} lines exported, applied and exported again: identical")
    assert again == first
    # Applying it again changes nothing, not even a version.
    before = snapshot(target)
    assert not apply_blocks(parse(first), target).has_changes
    assert snapshot(target) == before
    lake = Block._from_document(target, target.get_document("apply-store", "lake"))  # type: ignore[arg-type]
    assert isinstance(lake, ApplyStore)
    assert lake.path == "bucket/${not-a-variable}/$HOME"
    assert lake.tokens[1] == SecretRef("env:TOKEN_TWO")
    assert lake.creds.password == SecretRef("env:APPLY_PASSWORD")
    assert lake.options == {
        "retries": 3,
        "ratio": 1.0,
        "on": True,
        "when": "2024-01-01",
        "a.b": None,
    }


def test_a_failing_document_in_the_middle_leaves_the_registry_unchanged(target: Registry) -> None:
    save_with_references()
    apply_blocks(parse(export_blocks(Registry.default())), target)
    before = snapshot(target)
    text = """\
---
type: apply-creds
name: new-one
fields: {user: a, password: {$secret: 'env:A'}}
---
type: apply-creds
name: prod
fields:
  user: [not, text]
  password: {$secret: 'env:B'}
---
type: apply-creds
name: third
fields: {user: c, password: {$secret: 'env:C'}}
"""
    with pytest.raises(InvalidBlocksFile) as caught:
        apply_blocks(parse(text), target)
    print(f"\n{caught.value}")
    assert str(caught.value).startswith(
        "blocks.yaml:9: document 2 (apply-creds/prod), field 'user': Input should be a valid"
    )
    assert snapshot(target) == before
    # A failure while writing (a delete refused: a block the file keeps still uses it), after
    # the file's creates and updates ran in the same transaction, rolls all of them back too.
    pruning = """\
---
type: apply-store
name: brand-new
fields: {path: n, creds: {$block: apply-creds/prod}}
---
type: apply-creds
name: other
fields: {user: changed, password: {$secret: 'env:X'}}
"""
    with pytest.raises(BlockInUse, match="apply-creds/prod: it is referenced by apply-store/"):
        apply_blocks(parse(pruning), target, prune=True)
    assert snapshot(target) == before


def test_dry_run_changes_nothing(target: Registry) -> None:
    save_with_references()
    text = export_blocks(Registry.default())
    empty = snapshot(target)
    plan = plan_blocks(parse(text), target)
    assert plan.count("create") == 3
    assert snapshot(target) == empty  # not even a master key or a type row
    apply_blocks(parse(text), target)
    before = snapshot(target)
    changed = text.replace("path: inline", "path: elsewhere")
    plan = plan_blocks(parse(changed), target, prune=True)
    assert [c.line() for c in plan.changes if c.action != "unchanged"] == [
        "~ update apply-store/inline: path"
    ]
    assert snapshot(target) == before


def test_no_secret_value_is_exported_without_with_secrets() -> None:
    save_with_values()
    text = export_blocks(Registry.default())
    for name, value in SECRETS.items():
        assert value not in text, name
        assert base64.b64encode(value.encode()).decode()[:12] not in text, name
    body = [line for line in text.splitlines() if not line.startswith("#")]
    placeholders = sum(line.endswith("{$secret: null, required: true}") for line in body)
    print(f"\n{len(SECRETS)} secret values, 0 in the export; {placeholders} placeholders")
    # One per secret: password, two tokens, inline password, bytes, the dict, the nested one.
    assert placeholders == 7
    with pytest.raises(
        InvalidBlocksFile, match=r"blocks.yaml:\d+: document 1 \(apply-creds/prod\)"
    ):
        plan_blocks(parse(text), Registry.default())


def test_environment_values_and_their_errors() -> None:
    text = """\
---
type: apply-creds
name: env-${STAGE}
fields:
  user: ${DB_USER:-etl}
  password: ${DB_PASSWORD}
"""
    done = apply_blocks(
        parse(text, {"STAGE": "dev", "DB_PASSWORD": "from-env-pw"}), Registry.default()
    )
    assert done.changes[0].line() == "+ create apply-creds/env-dev"
    loaded = ApplyCreds.load("env-dev")
    assert (loaded.user, loaded.password.get_secret_value()) == ("etl", "from-env-pw")
    with pytest.raises(InvalidBlocksFile) as caught:
        parse(text, {"STAGE": "dev"})
    assert str(caught.value) == (
        "blocks.yaml:6: document 1, field 'password': the environment variable DB_PASSWORD is "
        "not set (give it a value, or a default: ${DB_PASSWORD:-default})."
    )
    with pytest.raises(InvalidBlocksFile, match=r"blocks.yaml:3: document 1: the environment"):
        parse(text, {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("type: apply-creds\nname: a\nfield: {}\n", r"^f.yaml:3: document 1: unknown key 'field'"),
        ("type: apply-creds\nname: Bad\n", r"^f.yaml:1: document 1 \(apply-creds/Bad\): Invalid"),
        ("type: [x\n", r"^f.yaml:2: not valid YAML \(.*expected .,. or .]."),
        ("deployments: []\n", r"this is a deployments project file"),
        (
            "---\ntype: secret\nname: a\nfields: {value: x}\n---\ntype: secret\nname: a\n",
            r"^f.yaml:6: document 2 \(secret/a\): secret/a is also described at line 2",
        ),
        (
            "type: apply-creds\nname: a\nfields:\n  user: u\n  password: {$secret: 'env:'}\n",
            r"^f.yaml:5: document 1 \(apply-creds/a\), field 'password': Secret reference",
        ),
        (
            "type: apply-creds\nname: a\nfields: {user: '${x'}\n",
            r"field 'user': a '\$\{' that is not",
        ),
        (
            "type: apply-store\nname: a\nfields: {path: p, creds: {$block: apply-creds/nope}}\n",
            r"field 'creds': references apply-creds/nope, which is neither in this file nor",
        ),
        (
            "---\ntype: apply-store\nname: a\nfields: {path: p, creds: {$block: apply-store/b}}\n"
            "---\ntype: apply-store\nname: b\nfields: {path: p, creds: {$block: apply-store/a}}\n",
            r"^f.yaml:2: document 1 \(apply-store/a\): a reference cycle: apply-store/a needs "
            r"apply-store/b",
        ),
        ("type: no-such-type\nname: a\n", r"No Block class with type slug 'no-such-type'"),
        (
            "type: apply-store\nname: a\nfields: {path: p, creds: {$block: apply-store/a}}\n",
            r"^f.yaml:1: document 1 \(apply-store/a\): a reference cycle: apply-store/a needs "
            r"apply-store/a",
        ),
    ],
)
def test_file_errors_name_the_file_line_document_and_field(text: str, expected: str) -> None:
    with pytest.raises(InvalidBlocksFile) as caught:
        plan_blocks(parse(text, source="f.yaml"), Registry.default())
    assert re.search(expected, str(caught.value)), str(caught.value)


def test_an_incompatible_schema_version_names_the_field() -> None:
    text = """\
type: apply-creds
name: old
schema_version: '0'
fields:
  username: etl
  password: {$secret: 'env:P'}
"""
    with pytest.raises(InvalidBlocksFile) as caught:
        plan_blocks(parse(text), Registry.default())
    message = str(caught.value)
    print(f"\n{message}")
    assert message.startswith("blocks.yaml:5: document 1 (apply-creds/old), field 'username'")
    assert "'user': Field required" in message
    assert "'username': Extra inputs are not permitted" in message
    assert "written for schema version 0 of apply-creds; this ApplyCreds is version 1" in message
    compatible = text.replace("username", "user")
    (change,) = plan_blocks(parse(compatible), Registry.default()).changes
    assert change.line() == "+ create apply-creds/old (schema version 0 in the file, 1 here)"


def test_dependencies_are_written_first_and_updates_name_their_fields(target: Registry) -> None:
    text = """\
---
type: apply-store
name: a
fields: {path: p, creds: {$block: apply-creds/c}, tokens: [{$secret: 'env:T'}]}
---
type: apply-creds
name: c
fields: {user: u, password: {$secret: 'env:P'}}
"""
    plan = apply_blocks(parse(text), target)
    assert [c.line() for c in plan.changes] == ["+ create apply-creds/c", "+ create apply-store/a"]
    changed = text.replace("user: u", "user: v").replace("env:T", "env:T2")
    plan = apply_blocks(parse(changed), target)
    assert [c.line() for c in plan.changes] == [
        "~ update apply-creds/c: user",
        "~ update apply-store/a: tokens",
    ]
    assert target.get_document("apply-creds", "c").version == 2  # type: ignore[union-attr]


def test_prune_deletes_only_blocks_of_the_files_types(target: Registry) -> None:
    save_with_references()
    text = export_blocks(Registry.default())
    apply_blocks(parse(text), target)
    apply_blocks(parse("type: secret\nname: keep\nfields: {value: {$secret: 'env:K'}}\n"), target)
    documents = text.split("\n---\n")
    no_inline = "\n---\n".join(d for d in documents if "name: inline" not in d)
    assert not plan_blocks(parse(no_inline), target).has_changes  # without --prune
    plan = apply_blocks(parse(no_inline), target, prune=True)
    assert [c.line() for c in plan.changes if c.action != "unchanged"] == [
        "- delete apply-store/inline"
    ]
    assert target.get_document("apply-store", "inline") is None
    assert target.get_document("secret", "keep") is not None  # another type: never pruned


def test_encrypted_backup_restores_with_every_secret_readable(
    target: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_with_values()
    passphrase = "correct horse battery staple 42"
    text = export_blocks(Registry.default(), backup=BackupKey.create(passphrase))
    for name, value in SECRETS.items():
        assert value not in text, name
    # The target has a master key of its own: every value is sealed again under it.
    monkeypatch.setenv("BLOCKS_MASTER_KEY", new_key())
    blocks_file = parse(text)
    key = BackupKey.from_header(blocks_file.backup, passphrase, "backup.yaml")
    plan = apply_blocks(blocks_file, target, backup_key=key)
    assert plan.count("create") == 4
    monkeypatch.setenv("BLOCKS_REGISTRY_URL", target.url)
    readable = read_every_secret()
    print(f"\nbackup restored on {target.url.split(':')[0]}: {len(readable)} secrets readable")
    assert readable == set(SECRETS.values())
    # Then rotate the target's key (BLOCKS_MASTER_KEY=NEW,OLD): still all readable.
    monkeypatch.setenv("BLOCKS_MASTER_KEY", f"{new_key()},{os.environ['BLOCKS_MASTER_KEY']}")
    KeyManager._instances.clear()
    report = rotate_master_key(target)
    assert report.reencrypted == 4
    monkeypatch.setenv("BLOCKS_MASTER_KEY", os.environ["BLOCKS_MASTER_KEY"].split(",")[0])
    KeyManager._instances.clear()
    assert read_every_secret() == set(SECRETS.values())


def read_every_secret() -> set[str]:
    creds, lake = ApplyCreds.load("prod"), ApplyStore.load("lake")
    inline, vault = ApplyStore.load("inline"), ApplyVault.load("vault")
    return {
        creds.password.get_secret_value(),
        *(t.get_secret_value() for t in lake.tokens),
        inline.creds.password.get_secret_value(),
        vault.key.get_secret_value().decode(),
        vault.config.get_secret_value()["leaf"],
        vault.extra["deep"][0].get_secret_value(),
    }


def test_a_wrong_backup_key_fails_clearly_with_nothing_written(target: Registry) -> None:
    save_with_values()
    text = export_blocks(Registry.default(), backup=BackupKey.create("the right passphrase!"))
    blocks_file = parse(text, source="backup.yaml")
    before = snapshot(target)
    with pytest.raises(DecryptionFailed) as caught:
        BackupKey.from_header(blocks_file.backup, "not the passphrase!!", "backup.yaml:4")
    assert str(caught.value).startswith(
        "backup.yaml:4: the backup key does not open this backup (a wrong passphrase"
    )
    with pytest.raises(InvalidBlocksFile, match="this is an encrypted backup: give the key"):
        apply_blocks(blocks_file, target)
    # A sealed value moved to another block does not open: nothing is written either.
    key = BackupKey.from_header(blocks_file.backup, "the right passphrase!", "backup.yaml:4")
    sealed = re.findall(r"\{\$sealed: ([^}]+)\}", text)
    swapped = text.replace(sealed[0], "PLACEHOLDER").replace(sealed[1], sealed[0])
    swapped = swapped.replace("PLACEHOLDER", sealed[1])
    with pytest.raises(
        DecryptionFailed,
        match=r"backup.yaml:\d+: document 2 \(apply-creds/prod\), field .password.",
    ):
        apply_blocks(parse(swapped, source="backup.yaml"), target, backup_key=key)
    assert snapshot(target) == before


def test_the_readme_example_file_applies_as_written() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("### Blocks as code") :]
    text = section[
        section.index("```yaml\n") + 8 : section.index("```", section.index("```yaml") + 7)
    ]
    plan = apply_blocks(parse(text, {"BUCKET": "team-bucket"}), Registry.default())
    assert [c.line() for c in plan.changes] == [
        "+ create aws-credentials/prod",
        "+ create s3/results",
    ]
    from blocks.filesystems.aws import S3

    results = S3.load("results")
    assert results.bucket_path == "team-bucket/results"
    assert results.credentials is not None and results.credentials.region_name == "eu-west-1"
    assert results.credentials.aws_secret_access_key == SecretRef("env:AWS_SECRET_ACCESS_KEY")


ROTATOR = """
import sys
from blocks.core._encryption import KeyManager
from blocks.core._rotation import rotate_master_key
for _ in range(int(sys.argv[1])):
    KeyManager._instances.clear()
    rotate_master_key()
print("rotated", sys.argv[1], flush=True)
"""


def test_applies_during_key_rotations_lose_nothing(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rotation committing between an apply's seal and its transaction makes the apply seal
    again (never a document under a retired key): every value reads back after both ran."""
    monkeypatch.delenv("BLOCKS_MASTER_KEY")
    monkeypatch.setenv("BLOCKS_KEY_SOURCE", "file")
    KeyManager._instances.clear()
    registry = Registry.default()
    count, rotations = 10, 60 if os.environ.get("BLOCKS_SOAK") == "1" else 12

    def round_file(i: int) -> str:
        return "".join(
            f"---\ntype: secret\nname: s{n}\nfields: {{value: round-{i}-secret-{n}}}\n"
            for n in range(count)
        )

    apply_blocks(parse(round_file(0)), registry)  # the key exists before the race starts
    stale: list[str] = []
    real_open_batch = _registry_batch.open_batch

    @contextlib.contextmanager
    def counting_open_batch(*args: Any) -> Iterator[Any]:
        try:
            with real_open_batch(*args) as batch:
                yield batch
        except StaleKey:
            stale.append("x")
            raise

    monkeypatch.setattr(_registry_batch, "open_batch", counting_open_batch)
    rotator = subprocess.Popen(
        [sys.executable, "-c", ROTATOR, str(rotations)],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    applied = 0
    while rotator.poll() is None or applied < 5:
        applied += 1
        plan = apply_blocks(parse(round_file(applied)), registry)
        assert plan.count("update") == count
    out, err = rotator.communicate(timeout=600)
    assert rotator.returncode == 0, err
    assert out.split() == ["rotated", str(rotations)]
    KeyManager._instances.clear()
    from blocks.system import Secret

    values = [Secret.load(f"s{n}").get() for n in range(count)]
    print(
        f"\n[{backend}] {rotations} rotations during {applied} applies of {count} blocks "
        f"({len(stale)} sealed again after a rotation won): {len(values)} readable, each from "
        "the last apply"
    )
    assert values == [f"round-{applied}-secret-{n}" for n in range(count)]


def test_a_large_file_applies_in_one_transaction(
    target: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Figures: one apply of N blocks against N saves of the same blocks into the same
    registry, in the same run."""
    import time

    count = 3000 if os.environ.get("BLOCKS_SOAK") == "1" else 300
    text = "".join(
        f"---\ntype: apply-creds\nname: c{n}\nfields: {{user: u{n}, password: pw-{n}-value}}\n"
        for n in range(count)
    )
    started = time.perf_counter()
    plan = apply_blocks(parse(text), target)
    applied = time.perf_counter() - started
    assert plan.count("create") == count
    started = time.perf_counter()
    assert not apply_blocks(parse(text), target).has_changes
    unchanged = time.perf_counter() - started
    monkeypatch.setenv("BLOCKS_REGISTRY_URL", target.url)
    started = time.perf_counter()
    for n in range(count):
        ApplyCreds(user=f"u{n}", password=f"pw-{n}-value").save(f"c{n}", overwrite=True)
    saves = time.perf_counter() - started
    load = Path("/proc/loadavg").read_text().split()[0]
    print(
        f"\n[{target.url.split(':')[0]}] {count} blocks: apply {applied:.2f} s, again "
        f"(unchanged) {unchanged:.2f} s, {count} saves (overwrites) {saves:.2f} s; "
        f"apply/saves {applied / saves:.2f}; load average {load}"
    )
    creds = Block._from_document(target, target.get_document("apply-creds", f"c{count - 1}"))  # type: ignore[arg-type]
    assert isinstance(creds, ApplyCreds)
    assert creds.password.get_secret_value() == f"pw-{count - 1}-value"
