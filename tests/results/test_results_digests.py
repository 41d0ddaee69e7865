"""Record headers and storage keys are no guessing oracle for a task's parameters.

The attacker can read the result storage (every file) but holds no key. Tasks ran with a
``SecretStr`` password, a 4-digit PIN and an email as parameters. For each record, the
attacker tries a dictionary of 10,000 guesses against every digest the storage shows: the
header's components and the storage key itself, which is a digest of all of them (with the
code components recomputed from the task's source, as someone who has the repository can).
None may confirm a guess. A control runs the same dictionaries against unkeyed digests, as
the headers held before (issue 20): there they recover all three.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from blocks import flow, task
from blocks.results import ResultStore
from blocks.results._record import PREFIX_SIZE, header_length
from blocks.runtime.keys import why
from blocks.runtime.keys._hashing import digest
from blocks.runtime.keys._policies import code_components
from blocks.tasks import task_input_hash

GUESSES = 10_000
PASSWORD, PIN, EMAIL = "hunter2-Tr0ub4dor", "4821", "alice.liddell@example.org"


def _dictionaries() -> dict[str, list[Any]]:
    """10,000 guesses per parameter, the right one among them (the attacker's best case)."""
    return {
        "password": [SecretStr(f"password{i}") for i in range(GUESSES - 1)] + [SecretStr(PASSWORD)],
        "pin": [f"{i:04d}" for i in range(GUESSES)],
        "email": [f"user{i}@example.org" for i in range(GUESSES - 1)] + [EMAIL],
    }


def _storage_view(path: Path) -> tuple[str, dict[str, str]]:
    """What reading the file alone gives: its storage key and the header's components."""
    raw = path.read_bytes()
    body = raw[PREFIX_SIZE : PREFIX_SIZE + header_length(raw, key=path.name)]
    return path.name, json.loads(body)["components"]


def _unkeyed_key_names(prefix: str, code: dict[str, str], name: str, guess: Any) -> set[str]:
    """The storage key a guess gives under an unkeyed SHA-256 (every component format the
    runtime has used: a plain digest, or one marked as a secret's)."""
    value = digest(guess)
    names = set()
    for component in (value, f"secret:{value}"):
        parts = {**code, f"param:{name}": component}
        text = "\n".join(f"{k}={v}" for k, v in sorted(parts.items()))
        names.add(f"{prefix}-{hashlib.sha256(text.encode()).hexdigest()[:32]}")
    return names


def _attack(key: str, components: dict[str, str], prefix: str, code: dict[str, str]) -> int:
    """How many parameters of this record a dictionary recovers (0 or 1)."""
    (param,) = [n for n in components if n.startswith("param:")]
    name = param.removeprefix("param:")
    stored = components[param]
    for guess in _dictionaries()[name]:
        if stored == digest(guess) or key in _unkeyed_key_names(prefix, code, name, guess):
            return 1
    return 0


def test_a_dictionary_recovers_no_parameter_from_headers_or_keys(tmp_path: Path) -> None:
    storage = tmp_path / "results"

    @task(cache_key_fn=task_input_hash, result_storage=str(storage))
    def login(password: SecretStr) -> int:
        return len(password.get_secret_value())

    @task(cache_key_fn=task_input_hash, result_storage=str(storage))
    def unlock(pin: str) -> bool:
        return pin.isdigit()

    @task(cache_key_fn=task_input_hash, result_storage=str(storage))
    def notify(email: str) -> str:
        return email.split("@")[1]

    assert login(SecretStr(PASSWORD)) == len(PASSWORD)
    assert unlock(PIN) and notify(EMAIL) == "example.org"
    tasks = {t.cache_key_prefix: t for t in (login, unlock, notify)}
    records = sorted(p for p in storage.iterdir() if p.name != ".blocks-leases")
    assert len(records) == 3
    recovered = 0
    for path in records:
        key, components = _storage_view(path)
        prefix = key.rsplit("-", 1)[0]
        recovered += _attack(key, components, prefix, dict(code_components(tasks[prefix])))
        assert PASSWORD not in path.read_bytes().decode(errors="replace")
    # The control: the same dictionaries against unkeyed digests recover every parameter.
    control = sum(
        any(digest(g) == digest(true) for g in _dictionaries()[name])
        for name, true in (("password", SecretStr(PASSWORD)), ("pin", PIN), ("email", EMAIL))
    )
    print(
        f"{GUESSES} guesses x 3 parameters from file reads alone: {recovered} of 3 recovered "
        f"from keyed headers and keys; {control} of 3 from unkeyed digests (the control)"
    )
    assert recovered == 0 and control == 3
    _, login_components = _storage_view(next(p for p in records if "login" in p.name))
    assert login_components["param:password"] == "secret"  # no digest of a secret at all
    assert unlock(PIN, return_state=True).is_cached()  # the keys still find the records


def test_why_still_names_the_changed_parameter_and_never_compares_secrets(tmp_path: Path) -> None:
    storage = tmp_path / "results"

    @task(cache_key_fn=task_input_hash, result_storage=str(storage))
    def unlock(pin: str) -> bool:
        return pin.isdigit()

    @task(cache_key_fn=task_input_hash, result_storage=str(storage))
    def login(password: SecretStr, user: str) -> int:
        return len(password.get_secret_value() + user)

    @flow
    def run(pin: str, password: str) -> None:
        unlock(pin)
        login(SecretStr(password), "alice")

    run("1234", "first")
    run("5678", "second")
    store = ResultStore.resolve(str(storage))
    pin_change = why(store, task="unlock")
    secret_change = why(store, task="login")
    print(pin_change.line())
    print(secret_change.line())
    assert pin_change.reasons == ["parameter 'pin' changed"]
    assert secret_change.reasons == [
        "a secret ('password') may have changed: secrets are never compared"
    ]
    assert "1234" not in pin_change.line() and "second" not in secret_change.line()


def test_why_between_records_of_two_results_keys_says_so(tmp_path: Path, monkeypatch: Any) -> None:
    import base64
    import os

    storage = tmp_path / "results"

    @task(cache_key_fn=task_input_hash, result_storage=str(storage))
    def unlock(pin: str) -> bool:
        return pin.isdigit()

    unlock("1234")
    old = os.environ["BLOCKS_MASTER_KEY"]
    new = base64.urlsafe_b64encode(os.urandom(32)).decode()
    monkeypatch.setenv("BLOCKS_MASTER_KEY", f"{new},{old}")  # rotated: a new signing key
    unlock("5678")
    explained = why(ResultStore.resolve(str(storage)), task="unlock")
    print(explained.line())
    assert explained.reasons == [
        "signed under another results key (a key rotation in between): not comparable"
    ]
