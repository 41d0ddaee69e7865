"""`block ui`'s Deployments and Flow runs pages in a real browser (Playwright driving Debian's
headless Chromium, as `test_ui_browser.py`), with real `block worker start` processes.

A deployment with a cron schedule and parameters is applied from its folder; the browser opens
the Deployments page, sees the next runs, pauses and resumes, starts a run from the form with a
changed parameter, sees it Completed on the Flow runs page after ``--run-once`` ran it, reads its
logs, and cancels a sleeping run that a worker in the background is running. Screenshots go to
``tests/artifacts/ui/``.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import shot
from test_ui_deployments import BLOCK, SECRET, make_project, prefix, worker_once
from ui_server import UIServer, serve_ui

from blocks.deployments import RunState, RunStore

RUN_URL = re.compile(r"/flow-runs/([0-9a-f]{32})\?created=1$")


@pytest.fixture
def ui() -> Iterator[UIServer]:
    with serve_ui() as server:
        yield server


@pytest.fixture
def page(browser: Any, ui: UIServer) -> Iterator[Any]:
    """A fresh browser profile signed in through the URL `block ui` prints."""
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    opened = context.new_page()
    opened.set_default_timeout(30_000)
    if hasattr(ui, "login_url"):  # one-time sign-in codes
        opened.goto(ui.login_url())
    else:
        opened.goto(f"{ui.url}/?token={ui.token}")
    opened.wait_for_url(re.compile(r"/blocks$"))
    yield opened
    context.close()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder: Path = make_project(tmp_path / "project")
    return folder


def state_shown(page: Any) -> str:
    text: str = page.inner_text("#state")
    return text.split(":", 1)[0].strip()


def wait_for_state(page: Any, wanted: set[str], seconds: float = 60) -> str:
    """Reload the run's page until it shows one of `wanted` (or the time is up)."""
    deadline = time.monotonic() + seconds
    while (shown := state_shown(page)) not in wanted and time.monotonic() < deadline:
        time.sleep(0.2)
        page.click("#refresh")
    return shown


def test_deployments_page_pause_resume_and_a_run_from_the_form(
    page: Any, ui: UIServer, project: Path
) -> None:
    store = RunStore.default()
    page.click("header nav >> text=Deployments")
    row = page.locator("#deployments tr[data-deployment='hello/daily']")
    assert "0 6 * * *" in row.inner_text() and "Europe/Paris" in row.inner_text()
    assert row.locator(".next-runs div").count() == 3
    assert all(" 06:00:00 CE" in t for t in row.locator(".next-runs div").all_inner_texts())
    shot(page, "deployments")

    row.locator("a", has_text="hello/daily").click()
    assert page.locator("#next-runs li").count() == 5
    page.click("#pause")
    page.wait_for_url(re.compile(r"\?done=paused$"))
    assert "Paused" in page.inner_text("p.notice")
    assert "none while paused" in page.inner_text("#next-runs")
    assert store.get_deployment("hello/daily").paused
    page.click("#resume")
    page.wait_for_url(re.compile(r"\?done=resumed$"))
    assert page.locator("#next-runs li").count() == 5
    assert not store.get_deployment("hello/daily").paused

    # The form: the deployed defaults filled in, the secret one write-only and empty.
    assert page.input_value("#param-n") == "2"
    assert page.input_value("#param-token") == ""
    assert page.get_attribute("#param-token", "type") == "password"
    page.fill("#param-n", "7")
    page.fill("#param-name", "browser")
    shot(page, "deployment")
    page.click("#run")
    page.wait_for_url(RUN_URL)
    found = RUN_URL.search(page.url)
    assert found
    run_id = found.group(1)
    assert state_shown(page) == "Scheduled"
    assert store.get_run(run_id).parameters == {"name": "browser", "n": 7, "token": SECRET}

    worker_once(project)  # a real `block worker start --pool ui-pool --run-once`
    page.click("header nav >> text=Flow runs")
    listed = page.locator(f"#flow-runs tr[data-run='{run_id}']")
    assert listed.locator(".state").inner_text() == "Completed"
    shot(page, "flow-runs")
    listed.locator("a code").click()
    page.wait_for_url(re.compile(rf"/flow-runs/{run_id}$"))
    assert state_shown(page) == "Completed"
    logs = page.inner_text("#log-lines")
    assert "hello browser x14" in logs  # n=7 from the form, coerced and used
    assert "using token ••••••" in logs  # the printed secret is masked
    assert "Task run 'shout-" in logs and "shouting at browser" in logs  # get_run_logger
    # Run history: the task run the run process recorded, with its state and times.
    task_row = page.locator("#tasks tr[data-task^='shout-']")
    assert task_row.count() == 1 and "Completed" in task_row.inner_text()
    assert page.inner_text("tr[data-param=token] td").strip() == "••••••"
    assert page.inner_text("#worker") == store.get_run(run_id).worker
    assert page.locator("#cancel").count() == 0
    shot(page, "flow-run")
    assert SECRET not in page.content()
    checked = ui.assert_never_sent(SECRET)
    print(f"run {run_id[:12]} Completed; {checked} responses to the browser free of the secret")


def test_cancel_a_sleeping_run_started_by_a_worker_in_the_background(
    page: Any, ui: UIServer, project: Path
) -> None:
    store = RunStore.default()
    page.goto(f"{ui.url}{prefix(ui)}/deployments/hello/daily")
    page.fill("#param-sleep", "120")
    page.click("#run")
    page.wait_for_url(RUN_URL)
    found = RUN_URL.search(page.url)
    assert found
    run_id = found.group(1)
    worker = subprocess.Popen(
        [BLOCK, "worker", "start", "--pool", "ui-pool", "--run-once"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
        cwd=project,
    )
    try:
        assert wait_for_state(page, {"Running"}) == "Running", worker.stderr
        pids = project / "flow.pids"
        deadline = time.monotonic() + 60
        while not pids.exists() and time.monotonic() < deadline:  # the body is sleeping
            time.sleep(0.05)
        started = time.monotonic()
        page.click("#cancel")
        page.wait_for_url(re.compile(r"\?cancelled="))
        assert "Cancel asked" in page.inner_text("p.notice")
        shown = wait_for_state(page, {"Cancelled"})
        took = time.monotonic() - started
        assert shown == "Cancelled", store.get_run(run_id)
        _, errors = worker.communicate(timeout=60)  # the run-once worker ends with its run
        assert worker.returncode == 0, errors
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    run = store.get_run(run_id)
    assert run.state is RunState.CANCELLED
    assert [c.state for c in store.history(run_id)][-2:] == [
        RunState.CANCELLING,
        RunState.CANCELLED,
    ]
    assert page.locator("#cancel").count() == 0
    pid = int(pids.read_text().split()[-1])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the flow's process was ended, not left sleeping
    shot(page, "flow-run-cancelled")
    print(f"run {run_id[:12]} Cancelled from the page, seen there {took:.1f} s after the click")
