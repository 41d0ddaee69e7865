"""``block export | apply | diff``, run for real in subprocesses, and a registry moved from
SQLite to PostgreSQL and back through an encrypted backup.

The blocks are built-in types (`aws-credentials`, `s3`, `secret`, `json`), so every `block`
process knows them without `block register`. Each test has its own BLOCKS_HOME (conftest);
another home or a fresh PostgreSQL database stands for the other environment.
"""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

BLOCK = str(Path(sys.executable).with_name("block"))
VALUES = {
    "aws": "aws-Zq8X-secret-key",
    "secret": "plain-Zq8X-secret",
    "json": "dict-Zq8X-leaf",
}
BACKUP_KEY = "a long backup passphrase, 31 ch"


def block(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BLOCK, *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def ok(*args: str, env: dict[str, str], stdin: str | None = None) -> str:
    done = block(*args, env=env, stdin=stdin)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def one_error(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("Error: ")
    return line


def environment(tmp_path: Path, name: str, registry_url: str | None = None) -> dict[str, str]:
    """Another machine's settings: its own home and master key, and maybe a registry URL."""
    env = dict(os.environ)
    env["BLOCKS_HOME"] = str(tmp_path / name)
    env["BLOCKS_MASTER_KEY"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
    env.pop("BLOCKS_REGISTRY_URL", None)
    if registry_url is not None:
        env["BLOCKS_REGISTRY_URL"] = registry_url
    env["BACKUP_KEY"] = BACKUP_KEY
    env["AWS_KEY_REF"] = "from-the-environment"
    return env


SAVE = f"""
from blocks.filesystems.aws import AwsCredentials, S3
from blocks.system import JSON, Secret, SecretRef
AwsCredentials(aws_access_key_id="AKIA1", aws_secret_access_key={VALUES["aws"]!r},
               region_name="eu-west-1").save("prod")
AwsCredentials(aws_access_key_id="AKIA2", aws_secret_access_key=SecretRef("env:AWS_KEY_REF"),
               region_name="us-east-1").save("by-ref")
S3(bucket_path="lake/raw", credentials=AwsCredentials.load("by-ref")).save("lake")
Secret(value={VALUES["secret"]!r}).save("api")
Secret(value={{"n": 1, "leaf": {VALUES["json"]!r}}}).save("settings")
JSON(value={{"retries": 3, "note": "${{not-a-variable}}"}}).save("plain")
"""


def save_blocks(env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SAVE], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_export_apply_diff_round_trip_through_the_cli(tmp_path: Path) -> None:
    laptop, team = environment(tmp_path, "laptop"), environment(tmp_path, "team")
    save_blocks(laptop)
    exported = tmp_path / "config" / "blocks.yaml"
    done = block(
        "export", "--type", "aws-credentials", "--type", "s3", "-o", str(exported), env=laptop
    )
    assert done.returncode == 0 and done.stderr == f"Wrote 3 block(s) to {exported}.\n"
    text = exported.read_text()
    for value in VALUES.values():
        assert value not in text  # grep: no secret value in the file
    assert "aws_secret_access_key: {$secret: 'env:AWS_KEY_REF'}" in text
    assert "credentials: {$block: aws-credentials/by-ref}" in text

    # aws-credentials/prod holds a value: its placeholder is refused, naming line and field.
    error = one_error(block("apply", "-f", str(exported), env=team))
    assert f"{exported}:" in error and "document 2 (aws-credentials/prod)" in error
    assert "field 'aws_secret_access_key': a secret to fill" in error
    filled = text.replace("{$secret: null, required: true}", "${PROD_AWS_KEY}")
    exported.write_text(filled)
    team["PROD_AWS_KEY"] = "filled-from-env"

    before = ok("ls", env=team)
    plan = ok("apply", "-f", str(exported), "--dry-run", env=team)
    assert plan.splitlines() == [
        "+ create aws-credentials/by-ref",
        "+ create aws-credentials/prod",
        "+ create s3/lake",
        "Dry run: 3 to create, 0 to update, 0 to delete, 0 unchanged. Nothing was written.",
    ]
    assert ok("ls", env=team) == before  # nothing saved
    assert block("diff", "-f", str(exported), env=team).returncode == 1

    applied = ok("apply", "-f", str(exported), env=team)
    assert "3 created, 0 updated, 0 deleted, 0 unchanged" in applied
    same = block("diff", "-f", str(exported), env=team)
    assert same.returncode == 0 and same.stdout.endswith(
        "0 to create, 0 to update, 0 to delete, 3 unchanged.\n"
    )
    again = ok("apply", "-f", "-", env=team, stdin=filled)
    assert again.endswith("Nothing to change: 3 block(s) already match.\n")
    # Exported again from the team registry: the file the laptop wrote (before filling it).
    assert ok("export", "--type", "aws-credentials", "--type", "s3", env=team) == text
    revealed = ok("inspect", "aws-credentials/prod", "--show-secrets", env=team)
    assert "filled-from-env" in revealed

    changed = filled.replace("lake/raw", "lake/curated")
    done = block("diff", "-f", "-", env=team, stdin=changed)
    assert done.returncode == 1 and "~ update s3/lake: bucket_path" in done.stdout

    # The plan is printed before it is written: a delete refused in the transaction (s3/lake,
    # a type the file does not list, still uses aws-credentials/by-ref) shows both.
    prod_only = "\n---\n".join(d for d in filled.split("\n---\n") if "name: prod" in d)
    done = block("apply", "-f", "-", "--prune", env=team, stdin=prod_only)
    assert done.stdout.splitlines() == [
        "= unchanged aws-credentials/prod",
        "- delete aws-credentials/by-ref",
    ]
    assert "Cannot delete aws-credentials/by-ref: it is referenced by s3/lake" in one_error(done)
    assert "aws-credentials\tby-ref" in ok("ls", env=team)  # kept


def test_cli_refuses_clear_backups_and_keys_on_the_command_line(tmp_path: Path) -> None:
    laptop = environment(tmp_path, "laptop")
    save_blocks(laptop)
    error = one_error(block("export", "--with-secrets", env=laptop), code=2)
    assert "never written in clear" in error
    typed = "my-passphrase-typed-in-clear"
    done = block("export", "--with-secrets", "--encrypt-to", typed, env=laptop)
    error = one_error(done)
    assert typed not in done.stderr + done.stdout
    assert "never in clear on the command line: env:NAME" in error
    laptop["SHORT"] = "short"
    assert "shorter than 16 characters" in one_error(
        block("export", "--with-secrets", "--encrypt-to", "env:SHORT", env=laptop)
    )
    deployments = tmp_path / "blocks.yaml"
    deployments.write_text("deployments:\n- name: x\n  entrypoint: f.py:f\n")
    error = one_error(block("apply", "-f", str(deployments), env=laptop))
    assert "this is a deployments project file" in error


@pytest.mark.integration
def test_a_registry_moves_from_sqlite_to_postgresql_and_back(
    tmp_path: Path, postgres_db_url: str
) -> None:
    laptop = environment(tmp_path, "laptop")
    team = environment(tmp_path, "team", registry_url=postgres_db_url)
    back = environment(tmp_path, "back")
    save_blocks(laptop)
    backup = tmp_path / "backup.yaml"
    ok("export", "--with-secrets", "--encrypt-to", "env:BACKUP_KEY", "-o", str(backup), env=laptop)
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    text = backup.read_text()
    for value in VALUES.values():
        assert value not in text

    # A wrong key first: refused before the registry is even opened (no table created).
    wrong = dict(team, BACKUP_KEY="not the passphrase it was made with")
    error = one_error(
        block("apply", "-f", str(backup), "--decrypt-with", "env:BACKUP_KEY", env=wrong)
    )
    assert f"{backup}:5: the backup key does not open this backup" in error
    assert "Nothing was written" in error
    engine = sa.create_engine(postgres_db_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()
    missing = one_error(block("apply", "-f", str(backup), env=team))
    assert "this is an encrypted backup: give the key it was exported with" in missing

    applied = ok("apply", "-f", str(backup), "--decrypt-with", "env:BACKUP_KEY", env=team)
    assert "6 created" in applied and "postgresql" in applied
    assert_readable(team)

    # Then rotate the team's key: BLOCKS_MASTER_KEY=NEW,OLD, rotate, drop OLD.
    new = base64.urlsafe_b64encode(os.urandom(32)).decode()
    rotating = dict(team, BLOCKS_MASTER_KEY=f"{new},{team['BLOCKS_MASTER_KEY']}")
    assert "Re-encrypted 4 block(s)" in ok("key", "rotate", env=rotating)
    team["BLOCKS_MASTER_KEY"] = new
    assert_readable(team)

    # And back to SQLite, under another passphrase.
    team["BACKUP_KEY"] = back["BACKUP_KEY"] = "another long passphrase for the way back"
    again = tmp_path / "back.yaml"
    ok("export", "--with-secrets", "--encrypt-to", "env:BACKUP_KEY", "-o", str(again), env=team)
    ok("apply", "-f", str(again), "--decrypt-with", "env:BACKUP_KEY", env=back)
    assert_readable(back)
    print(f"\nSQLite -> PostgreSQL -> key rotation -> SQLite: {len(VALUES)} secret values readable")


def assert_readable(env: dict[str, str]) -> None:
    assert VALUES["aws"] in ok("inspect", "aws-credentials/prod", "--show-secrets", env=env)
    assert VALUES["secret"] in ok("inspect", "secret/api", "--show-secrets", env=env)
    assert VALUES["json"] in ok("inspect", "secret/settings", "--show-secrets", env=env)
    assert "${not-a-variable}" in ok("inspect", "json/plain", env=env)
    assert "ref env:AWS_KEY_REF" in ok("inspect", "aws-credentials/by-ref", env=env)
    assert "aws-credentials/by-ref" in ok("inspect", "s3/lake", env=env)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_an_apply_killed_mid_transaction_leaves_all_or_nothing(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """SIGKILL `block apply` after it printed its plan (so while it writes): the registry
    holds none of the file's blocks or all of them, never some; a new apply completes it."""
    import random
    import signal
    import time

    url = request.getfixturevalue("postgres_db_url") if backend == "postgres" else None
    env = dict(environment(tmp_path, "team", registry_url=url), PYTHONUNBUFFERED="1")
    count, kills = 400, 12 if os.environ.get("BLOCKS_SOAK") == "1" else 2
    ok("key", "init", env=env)
    outcomes = []
    for kill in range(kills):
        text = "".join(
            f"---\ntype: secret\nname: k{kill}-s{n}\nfields: {{value: v{n}-Zq8X}}\n"
            for n in range(count)
        )
        path = tmp_path / f"kill-{kill}.yaml"
        path.write_text(text)
        proc = subprocess.Popen(
            [BLOCK, "apply", "-f", str(path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        for _ in range(count):  # the plan: one line per block, printed before writing
            assert proc.stdout.readline().startswith("+ create secret/")
        time.sleep(random.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        listed = ok("ls", "--type", "secret", env=env)
        found = sum(line.startswith(f"secret\tk{kill}-") for line in listed.splitlines())
        outcomes.append(found)
        assert found in (0, count), f"kill {kill}: {found} of {count} blocks written"
        ok("apply", "-f", str(path), env=env)
        listed = ok("ls", "--type", "secret", env=env)
        assert sum(line.startswith(f"secret\tk{kill}-") for line in listed.splitlines()) == count
    print(
        f"\n[{backend}] {kills} SIGKILLs of `block apply` ({count} blocks) while writing: "
        f"blocks found after each {outcomes} (0 or {count}, never between)"
    )
