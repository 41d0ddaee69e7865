"""`block ui`'s Deployments and Flow runs pages over real HTTP (`tests/ui_server.py`), with a
real `block worker start --run-once` running what the page started.

Written as the failures they guard against: a POST without the CSRF token pausing a
deployment, a secret parameter (or a secret printed by the flow) reaching the page, markup in
a parameter running in the page, a run made with the wrong parameters, next runs shown in
the wrong zone, a cancel that leaves a run live.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ui_server import UIServer, serve_ui

from blocks.deployments import CronSchedule, RunState, RunStore
from blocks.system import Secret

BLOCK = str(Path(sys.executable).with_name("block"))
SECRET = "ui-deploy-s3cr3t-Rw8Q"  # distinctive: finding it in any response is meaningful
DEPLOYMENT = "hello/daily"
CRON = "0 6 * * *"
ZONE = "Europe/Paris"
FLOWS = """
import os
import time

from blocks import flow, get_run_logger, task


@task
def shout(name: str) -> str:
    get_run_logger().info("shouting at %s", name)
    return name.upper()


@flow(log_prints=True)
def hello(name: str = "world", n: int = 1, token: str = "", sleep: float = 0.0) -> None:
    with open("flow.pids", "a") as pids:  # in the deployment's folder: a test checks them
        pids.write(f"{os.getpid()}\\n")
    print(f"hello {name} x{n * 2}")
    print(f"using token {token}")
    shout(name)
    time.sleep(sleep)
"""


def python(code: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def make_project(folder: Path) -> Path:
    """A folder with a flow and its deployment applied: a cron in Paris, default parameters,
    one of them the plaintext of a saved Secret (a value that came from a secret)."""
    Secret(value=SECRET).save("api-token")
    folder.mkdir()
    (folder / "hello_flows.py").write_text(FLOWS)
    python(
        "from blocks.deployments import CronSchedule, Deployment\n"
        "from blocks.system import Secret\n"
        "from hello_flows import hello\n"
        "token = Secret.load('api-token').get()\n"
        "Deployment.build_from_flow(hello, 'daily', version='1',\n"
        f"    schedule=CronSchedule(cron={CRON!r}, timezone={ZONE!r}),\n"
        "    parameters={'name': 'world', 'n': 2, 'token': token},\n"
        "    work_pool_name='ui-pool').apply()\n",
        folder,
    )
    return folder


def worker_once(folder: Path) -> None:
    """A real ``block worker start --pool ui-pool --run-once`` in the project's folder."""
    done = subprocess.run(
        [BLOCK, "worker", "start", "--pool", "ui-pool", "--run-once"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=dict(os.environ),
        cwd=folder,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def prefix(ui: UIServer) -> str:
    """The path the pages live under (the random prefix of a signed-in session, if any)."""
    found: str = getattr(ui, "prefix", "")
    return found


def csrf_of(html: str) -> str:
    found = re.search(r'name="_csrf" value="([^"]+)"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)


def run_id_of(response: httpx.Response) -> str:
    found = re.search(r"/flow-runs/([0-9a-f]{32})\?created=1$", response.headers["location"])
    assert found, response.headers["location"]
    return found.group(1)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project")


@pytest.fixture
def ui() -> Iterator[UIServer]:
    with serve_ui() as server:
        yield server


def test_deployments_page_shows_schedules_and_next_runs_in_the_schedules_zone(
    ui: UIServer, project: Path
) -> None:
    root = prefix(ui)
    with ui.client() as client:
        listing = client.get(f"{root}/deployments")
        page = client.get(f"{root}/deployments/hello/daily")
    assert listing.status_code == 200 and page.status_code == 200
    assert f'href="{root}/deployments/hello/daily"' in listing.text
    assert "0 6 * * *" in listing.text and ZONE in listing.text
    expected = CronSchedule(cron=CRON, timezone=ZONE).get_dates(n=5)
    shown = re.findall(r"<li>(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z]+)</li>", page.text)
    assert shown == [f"{d:%Y-%m-%d %H:%M:%S} {d.tzname()}" for d in expected]
    assert all(" 06:00:00 " in s for s in shown)  # the wall clock of Paris, not UTC
    # The run form: one input per parameter of the flow, the deployed defaults filled in
    # except the one that came from a secret.
    for name in ("name", "n", "token", "sleep"):
        assert f'name="param.{name}"' in page.text
    assert 'type="number" step="any" id="param-n" name="param.n" value="2"' in page.text
    assert 'type="password" id="param-token"' in page.text
    print(f"next runs shown: {shown}")
    assert ui.assert_never_sent(SECRET) >= 2


def test_pause_and_resume_need_the_csrf_token_and_go_through_the_store(
    ui: UIServer, project: Path
) -> None:
    root = prefix(ui)
    store = RunStore.default()
    deployment = store.get_deployment(DEPLOYMENT)
    scheduled = store.list_runs(deployment_id=deployment.id, states=[RunState.SCHEDULED])
    assert scheduled, "apply() scheduled the next slots"
    with ui.client() as client:
        page = client.get(f"{root}/deployments/hello/daily").text
        for data in ({}, {"_csrf": "0" * 40}):
            refused = client.post(f"{root}/deployments/hello/daily/pause", data=data)
            assert refused.status_code == 403
        assert not store.get_deployment(DEPLOYMENT).paused
        done = client.post(f"{root}/deployments/hello/daily/pause", data={"_csrf": csrf_of(page)})
        assert done.status_code == 303
        assert done.headers["location"] == f"{root}/deployments/hello/daily?done=paused"
        assert store.get_deployment(DEPLOYMENT).paused
        left = store.list_runs(deployment_id=deployment.id, states=[RunState.SCHEDULED])
        paused = client.get(f"{root}/deployments/hello/daily").text
        assert 'id="resume"' in paused and "none while paused" in paused
        assert "paused" in client.get(f"{root}/deployments").text
        again = client.post(f"{root}/deployments/hello/daily/resume", data={"_csrf": ui.csrf})
        assert again.status_code == 303
    assert not store.get_deployment(DEPLOYMENT).paused
    back = store.list_runs(deployment_id=deployment.id, states=[RunState.SCHEDULED])
    print(f"scheduled runs: {len(scheduled)} before pause, {len(left)} paused, {len(back)} resumed")
    assert not left and len(back) == len(scheduled)


def test_a_run_from_the_form_runs_on_a_real_worker_with_the_changed_parameter(
    ui: UIServer, project: Path
) -> None:
    root = prefix(ui)
    store = RunStore.default()
    form = {
        "_csrf": ui.csrf,
        "param.name": "<script>alert(1)</script>",
        "param.n": "5",
        "param.token": "",  # left empty: the deployed value (a secret) is kept, never shown
        "param.sleep": "",
        "start_in": "",
    }
    with ui.client() as client:
        bad = client.post(f"{root}/deployments/hello/daily/run", data={**form, "param.n": "x"})
        assert bad.status_code == 400 and "expects a number" in bad.text
        late = client.post(f"{root}/deployments/hello/daily/run", data={**form, "start_in": "?"})
        assert late.status_code == 400
        made = client.post(f"{root}/deployments/hello/daily/run", data=form)
        assert made.status_code == 303
        run_id = run_id_of(made)
        run = store.get_run(run_id)
        assert run.state is RunState.SCHEDULED
        # The changed ones, the deployed secret kept; `sleep` left empty: the flow's default.
        assert run.parameters == {"name": "<script>alert(1)</script>", "n": 5, "token": SECRET}
        worker_once(project)
        assert store.get_run(run_id).state is RunState.COMPLETED, store.get_run(run_id).message
        listing = client.get(f"{root}/flow-runs").text
        page = client.get(f"{root}/flow-runs/{run_id}").text
        only = client.get(f"{root}/flow-runs", params={"state": "Completed"}).text
        none = client.get(f"{root}/flow-runs", params={"state": "Failed"}).text
    assert f'href="{root}/flow-runs/{run_id}"' in listing and "Completed" in listing
    assert run_id in only and run_id not in none
    assert "hello &lt;script&gt;alert(1)&lt;/script&gt; x10" in page  # escaped, and n=5 used
    assert "<script>alert" not in page
    assert "using token ••••••" in page  # the printed secret is masked in the logs
    worker = store.get_run(run_id).worker
    assert worker and worker in page
    assert re.search(r'id="duration">\d+\.\d s<', page), "a duration"
    assert 'data-param="token"><th scope="row">token</th><td><span class="masked"' in page
    assert 'id="cancel"' not in page  # a final run has no cancel button
    checked = ui.assert_never_sent(SECRET)
    print(f"run {run_id[:12]} Completed on {worker}; {checked} responses free of the secret")


def test_cancel_from_the_page_and_the_errors_it_can_meet(ui: UIServer, project: Path) -> None:
    root = prefix(ui)
    store = RunStore.default()
    later = store.create_run(store.get_deployment(DEPLOYMENT), parameters={"n": 1})
    with ui.client() as client:
        page = client.get(f"{root}/flow-runs/{later.id}").text
        assert 'id="cancel"' in page
        done = client.post(f"{root}/flow-runs/{later.id}/cancel", data={"_csrf": csrf_of(page)})
        assert done.status_code == 303
        assert store.get_run(later.id).state is RunState.CANCELLED
        shown = client.get(done.headers["location"].removeprefix(root)).text
        assert "Cancelled" in shown and 'id="cancel"' not in shown
        twice = client.post(f"{root}/flow-runs/{later.id}/cancel", data={"_csrf": ui.csrf})
        assert twice.status_code in (400, 409) and "nothing to cancel" in twice.text
        token = {"_csrf": ui.csrf}
        missing = [
            client.get(f"{root}/flow-runs/{'f' * 32}").status_code,
            client.get(f"{root}/deployments/hello/nope").status_code,
            client.post(f"{root}/deployments/hello/nope/pause", data=token).status_code,
            client.get(f"{root}/flow-runs", params={"deployment": "x/y"}).status_code,
        ]
    assert missing == [404, 404, 404, 404]


def test_a_value_typed_into_a_secret_parameter_is_never_shown_back(
    ui: UIServer, project: Path
) -> None:
    """The deployed token came from a secret: a new one typed into its password input is a
    secret too, though no saved secret holds it (the run page masks it by name)."""
    root = prefix(ui)
    typed = "typed-token-Zx81Lq"
    form = {"_csrf": ui.csrf, "param.token": typed, "param.n": "<b>3</b>"}
    with ui.client() as client:
        wrong = client.post(f"{root}/deployments/hello/daily/run", data=form)
        assert wrong.status_code == 400 and "expects a number" in wrong.text
        made = client.post(f"{root}/deployments/hello/daily/run", data={**form, "param.n": "3"})
        run_id = run_id_of(made)
        worker_once(project)  # the flow prints the token it was given
        page = client.get(f"{root}/flow-runs/{run_id}").text
        spoof = client.get(f"{root}/flow-runs/{run_id}", params={"cancelled": "hacked!"}).text
    assert RunStore.default().get_run(run_id).parameters["token"] == typed
    assert "using token ••••••" in page
    assert 'data-param="token"><th scope="row">token</th><td><span class="masked"' in page
    assert "<b>3</b>" not in wrong.text and "&lt;b&gt;3&lt;/b&gt;" in wrong.text
    assert "hacked!" not in spoof  # only a state name is ever echoed
    checked = ui.assert_never_sent(typed, SECRET)
    print(f"{checked} responses free of the typed and the saved secret")


def test_a_flow_name_with_markup_and_spaces_is_escaped_and_its_links_work(
    ui: UIServer, tmp_path: Path
) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "odd_flows.py").write_text(
        "from blocks import flow\n\n\n"
        "@flow(name='ETL \"Pipeline\" co')\n"
        "def etl(source: str = 'db') -> None:\n"
        "    print(source)\n"
    )
    python(
        "from blocks.deployments import Deployment\n"
        "from odd_flows import etl\n"
        "Deployment.build_from_flow(etl, 'manual', work_pool_name='odd-pool').apply()\n",
        folder,
    )
    root = prefix(ui)
    href = "/deployments/ETL%20%22Pipeline%22%20co/manual"
    with ui.client() as client:
        listing = client.get(f"{root}/deployments").text
        page = client.get(root + href)
        paused = client.post(f"{root}{href}/pause", data={"_csrf": ui.csrf})
    # Flow names may not hold / % & < > (InvalidNameError); quotes and spaces must be escaped.
    assert '"Pipeline"' not in listing
    assert "ETL &#34;Pipeline&#34; co/manual" in listing
    assert f'href="{root}{href}"' in listing
    assert page.status_code == 200 and "No schedule: runs are made by hand." in page.text
    assert paused.status_code == 303
    assert RunStore.default().get_deployment('ETL "Pipeline" co/manual').paused
