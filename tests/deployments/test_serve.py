"""Prefect 3's surface for real: `flow.serve` in its own process on the registry, `run_deployment`
against it and against a `block worker start` process, `flow.deploy`, `block deployment run
--watch`, `block flow-run logs --follow`, deployment names that split one way only, and secret
parameters masked by `block flow-run inspect`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from live_processes import stop, wait_for

import blocks
from blocks.deployments import (
    Deployment,
    RunState,
    RunStore,
    deploy,
    run_deployment,
    serve,
    to_deployment,
)
from blocks.deployments._serve import serve_pool_name
from blocks.errors import (
    ConfigurationError,
    DeploymentNotFound,
    InvalidNameError,
    ParameterTypeError,
)

BLOCK = str(Path(sys.executable).with_name("block"))
LEASE = 2.0

FLOWS = """
import sys
import time

from pydantic import SecretStr

from blocks import flow


@flow
def greet(out: str, who: str = "world") -> None:
    print(f"greeting {who}", flush=True)
    with open(out, "a") as f:
        f.write(who + "\\n")


@flow
def fails(n: int = 1) -> None:
    print("about to fail", flush=True)
    raise ValueError(f"failed on purpose {n}")


@flow
def chatty(lines: int = 5, pause: float = 0.3) -> None:
    for i in range(lines):
        print(f"line {i}", flush=True)
        time.sleep(pause)


@flow
def login(user: str, token: SecretStr) -> None:
    print(f"hello {user}")


if __name__ == "__main__":
    greet.serve(
        name="every-second",
        interval=1,
        parameters={"out": sys.argv[1], "who": "schedule"},
        limit=2,
    )
"""


@pytest.fixture
def project(backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "serve_flows.py").write_text(FLOWS)
    monkeypatch.setenv("BLOCKS_LEASE_SECONDS", str(LEASE))
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    sys.modules.pop("serve_flows", None)


class Processes:
    """Processes a test starts; every one still alive is SIGTERMed (then killed) at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *argv: str, cwd: Path) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"proc-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(proc)
        return proc

    def output(self, index: int) -> str:
        return (self.logs / f"proc-{index}.log").read_text()

    def stop_all(self) -> None:
        stop(self.procs)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    yield started
    started.stop_all()


def block(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BLOCK, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


# -- serve --------------------------------------------------------------------------------------


def test_serve_schedules_and_runs_its_deployment_and_run_deployment_waits_for_it(
    backend: str, project: Path, processes: Processes
) -> None:
    out = project / "greetings.txt"
    server = processes.start(sys.executable, "serve_flows.py", str(out), cwd=project)
    store = RunStore.default()
    started = time.monotonic()
    wait_for(
        "three scheduled runs of the served deployment",
        lambda: out.exists() and out.read_text().count("schedule") >= 3,
    )
    first_runs = time.monotonic() - started
    deployment = store.get_deployment("greet/every-second")
    assert deployment.pool_name == "serve:greet/every-second"
    assert deployment.document["schedules"][0]["schedule"]["interval"] == 1.0

    asked = time.monotonic()
    run = run_deployment("greet/every-second", parameters={"who": "api"})
    waited = time.monotonic() - asked
    assert run.state is RunState.COMPLETED, run
    assert "api" in out.read_text().split()
    assert run.parameters == {"out": str(out), "who": "api"}

    # timeout=0: made and returned at once, still waiting for the serve process.
    later = datetime.now(UTC) + timedelta(hours=1)
    queued = run_deployment("greet/every-second", scheduled_time=later, timeout=0)
    assert queued.state is RunState.SCHEDULED and queued.due == later
    # A timeout shorter than the run: returned when it is up, whatever the state.
    short = run_deployment("greet/every-second", scheduled_time=later, timeout=0.5)
    assert short.state is RunState.SCHEDULED
    with pytest.raises(ParameterTypeError, match="nme"):
        run_deployment("greet/every-second", parameters={"nme": "typo"})
    with pytest.raises(DeploymentNotFound):
        run_deployment("greet/nope", timeout=0)

    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=60) == 0, processes.output(0)
    # pause_on_shutdown: the schedule stops with the process; scheduled slots are removed.
    assert store.get_deployment("greet/every-second").paused
    scheduled = store.list_runs(deployment_id=deployment.id, states=[RunState.SCHEDULED])
    assert all(r.idempotency_key is None for r in scheduled)  # only the hand-made ones stay
    runs = store.list_runs(deployment_id=deployment.id)
    slots = [r.slot for r in runs if r.slot is not None and r.state is RunState.COMPLETED]
    assert len(slots) == len(set(slots))
    lines = out.read_text().split()
    print(
        f"{backend}: serve ran {lines.count('schedule')} scheduled runs and 1 asked for "
        f"({first_runs:.1f} s to the third; run_deployment waited {waited:.2f} s), "
        f"{len(slots)} distinct slots, load {os.getloadavg()[0]:.1f}"
    )
    # Served again: resumed, the same pool, slots never made twice.
    again = processes.start(sys.executable, "serve_flows.py", str(out), cwd=project)
    wait_for(
        "a run after the restart",
        lambda: out.read_text().count("schedule") > lines.count("schedule"),
    )
    assert not store.get_deployment("greet/every-second").paused
    again.send_signal(signal.SIGTERM)
    assert again.wait(timeout=60) == 0, processes.output(1)
    keys = [r.idempotency_key for r in store.list_runs(deployment_id=deployment.id)]
    keys = [k for k in keys if k is not None]
    assert len(keys) == len(set(keys))


def test_to_deployment_options_and_their_errors(project: Path) -> None:
    import serve_flows

    hourly = serve_flows.greet.to_deployment(
        "hourly", interval=[3600, timedelta(hours=2)], tags=["b", "a"], version="2"
    )
    assert [s.schedule.interval for s in hourly.schedules] == [
        timedelta(hours=1),
        timedelta(hours=2),
    ]
    assert hourly.tags == ["a", "b"] and hourly.version == "2"
    cron = to_deployment(serve_flows.greet, cron="0 6 * * *", paused=True)
    assert cron.name == "greet" and cron.paused  # the flow's name by default
    assert cron.schedules[0].schedule.cron == "0 6 * * *"
    rrule = serve_flows.greet.to_deployment("r", rrule="FREQ=DAILY;BYHOUR=6")
    assert type(rrule.schedules[0].schedule).__name__ == "RRuleSchedule"
    assert serve_flows.greet.to_deployment("none").schedules == []
    with pytest.raises(ConfigurationError, match="interval and cron"):
        serve_flows.greet.to_deployment("x", interval=60, cron="* * * * *")
    with pytest.raises(ConfigurationError, match="seconds"):
        serve_flows.greet.to_deployment("x", interval="60")
    with pytest.raises(ParameterTypeError, match="colour"):
        serve_flows.greet.to_deployment("x", parameters={"colour": "red"})
    with pytest.raises(ConfigurationError, match="deployment name"):
        serve_flows.greet.to_deployment("a/b")
    with pytest.raises(ConfigurationError, match="at least one"):
        serve()
    with pytest.raises(ConfigurationError, match="work_pool_name"):
        serve_flows.greet.deploy("x")
    assert serve_pool_name([hourly, cron]) == "serve:greet/greet,greet/hourly"
    assert len(serve_pool_name([hourly] * 1 + [cron] * 1)) < 256
    assert blocks.serve is serve and blocks.run_deployment is run_deployment
    assert blocks.deploy is deploy


# -- deploy, a worker, the CLI -----------------------------------------------------------------


def test_deploy_then_a_worker_runs_what_run_deployment_and_the_cli_ask_for(
    backend: str, project: Path, processes: Processes
) -> None:
    import serve_flows

    out = project / "deployed.txt"
    deployment_id = serve_flows.greet.deploy(
        "nightly", work_pool_name="api-pool", cron="0 3 * * *", parameters={"out": str(out)}
    )
    ids = deploy(
        serve_flows.fails.to_deployment("nightly"),
        serve_flows.chatty.to_deployment("nightly"),
        work_pool_name="api-pool",
    )
    store = RunStore.default()
    assert store.get_deployment("greet/nightly").id == deployment_id
    assert store.get_pool("api-pool").type == "process"
    assert len(ids) == 2
    processes.start(BLOCK, "worker", "start", "--pool", "api-pool", cwd=project)

    done = run_deployment("greet/nightly", parameters={"who": "worker"}, timeout=120)
    assert done.state is RunState.COMPLETED and out.read_text().split() == ["worker"]
    failed = run_deployment(ids[0], timeout=120)  # by id, as Prefect takes one
    assert failed.state is RunState.FAILED, failed

    watched = block("deployment", "run", "greet/nightly", "--param", "who=cli", "--watch")
    assert watched.returncode == 0, watched.stderr
    states = [line.split()[2] for line in watched.stdout.splitlines()]
    assert states[0] == "Scheduled" and states[-1] == "Completed", watched.stdout
    failing = block("deployment", "run", "fails/nightly", "--watch", "--json")
    assert failing.returncode == 1, failing.stdout + failing.stderr
    last = json.loads(failing.stdout.splitlines()[-1])
    assert last["state"] == "Failed" and last["attempt"] == 1
    timed_out = block(
        "deployment", "run", "greet/nightly", "--start-in", "1h", "--watch", "--watch-timeout", "1"
    )
    assert timed_out.returncode == 1 and "Stopped watching" in timed_out.stderr

    chatty = store.create_run(store.get_deployment("chatty/nightly"), parameters={"lines": 6})
    followed = block("flow-run", "logs", chatty.id, "--follow")
    assert followed.returncode == 0, followed.stderr
    messages = [line.rpartition(" | ")[2] for line in followed.stdout.splitlines()]
    lines = [message for message in messages if message.startswith("line ")]
    assert lines == [f"line {i}" for i in range(6)], followed.stdout
    assert store.get_run(chatty.id).state is RunState.COMPLETED
    print(
        f"{backend}: worker ran greet twice, fails once (exit 1 under --watch), "
        f"followed {len(lines)} log lines to the end"
    )


# -- names and secrets ----------------------------------------------------------------------------


def test_a_flow_name_with_a_slash_is_refused_and_old_ones_are_still_found(
    backend: str, project: Path
) -> None:
    import serve_flows

    with pytest.raises(InvalidNameError, match="contains '/'"):
        Deployment(
            flow_name="etl/v2",
            name="daily",
            entrypoint="serve_flows.py:greet",
            path=str(project),
        ).apply()
    store = RunStore.default()
    # A row written before flow names were checked: found by splitting at the last '/'.
    document = Deployment.build_from_flow(serve_flows.greet, "daily").document()
    store.ensure_pool("default")
    store.put_deployment("etl/v2", "daily", version=None, pool_name="default", document=document)
    assert store.get_deployment("etl/v2/daily").flow_name == "etl/v2"
    with pytest.raises(DeploymentNotFound):
        store.get_deployment("etl/v2")


def test_flow_run_inspect_masks_secret_parameters(backend: str, project: Path) -> None:
    import serve_flows

    from blocks.system import Secret

    Secret(value="saved-secret-value-42").save("partner-token", overwrite=True)
    Deployment.build_from_flow(
        serve_flows.login, "nightly", parameters={"user": "ann"}, work_pool_name="secrets"
    ).apply()
    store = RunStore.default()
    deployment = store.get_deployment("login/nightly")
    assert deployment.document["secret_parameters"] == ["token"]
    run = store.create_run(deployment, parameters={"token": "typed-in-token-9000"})
    other = store.create_run(deployment, parameters={"user": "saved-secret-value-42"})
    shown = block("flow-run", "inspect", run.id)
    as_json = block("flow-run", "inspect", run.id, "--json")
    listed = block("flow-run", "ls", "--json")
    by_value = block("flow-run", "inspect", other.id, "--json")
    for done in (shown, as_json, listed, by_value):
        assert done.returncode == 0, done.stderr
        text = done.stdout + done.stderr
        assert "typed-in-token-9000" not in text and "saved-secret-value-42" not in text
    assert json.loads(as_json.stdout)["parameters"] == {"user": "ann", "token": "***"}
    assert json.loads(by_value.stdout)["parameters"]["user"] == "***"
    assert "ann" in shown.stdout
