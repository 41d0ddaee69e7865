"""How ``block`` tables print: tab-separated when piped, rich then plain on a terminal, JSON
arrays streamed. Run for real: the installed command in subprocesses and on a pseudo-terminal.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from terminal import on_terminal

from blocks.cli._output import (
    _lines,
    cell,
    echo_json_array,
    local_time,
    print_pairs,
    print_table,
)
from blocks.results import ResultStore
from blocks.results._record import PREFIX_SIZE, header_length
from blocks.system import Secret, String

BLOCK = str(Path(sys.executable).with_name("block"))


def block(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [BLOCK, *args], capture_output=True, text=True, env=dict(os.environ), timeout=60
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def shown_on_terminal(*args: str, rows: int) -> str:
    """What ``block ARGS`` shows on a terminal of `rows` x 120; it must succeed."""
    code, text = on_terminal(*args, rows=rows)
    assert code == 0, text
    return str(text)


def save_many(count: int) -> list[str]:
    names = [f"b-{i:03d}" for i in range(count)]
    for i, name in enumerate(names):
        (Secret(value="s3cr3t-Zq8X") if i % 2 else String(value="plain")).save(name)
    return names


def test_piped_ls_is_one_tab_separated_line_per_block() -> None:
    names = save_many(12)
    lines = block("ls").stdout.splitlines()
    assert lines[0].split("\t") == ["type", "name", "secrets", "created", "updated"]
    rows = [line.split("\t") for line in lines[1:]]
    assert all(len(row) == 5 for row in rows)
    # Sorted by type then name, as the registry's query orders them.
    assert [(r[0], r[1]) for r in rows] == sorted(
        ("secret" if i % 2 else "string", n) for i, n in enumerate(names)
    )
    assert {r[2] for r in rows if r[0] == "secret"} == {"1"}
    assert {r[2] for r in rows if r[0] == "string"} == {"0"}
    only = block("ls", "--type", "string").stdout.splitlines()[1:]
    assert len(only) == 6 and all(line.startswith("string\t") for line in only)
    assert "s3cr3t-Zq8X" not in block("ls").stdout + block("ls", "--json").stdout
    print(f"piped ls: {len(rows)} rows, {len(only)} with --type string")


def test_ls_json_is_one_array_with_an_element_per_line() -> None:
    save_many(5)
    out = block("ls", "--json").stdout
    listed = json.loads(out)
    assert [row["slug"] for row in listed] == [
        "secret/b-001",
        "secret/b-003",
        "string/b-000",
        "string/b-002",
        "string/b-004",
    ]
    assert listed[0]["secret_fields"] == ["value"] and listed[2]["secret_fields"] == []
    assert set(listed[0]) == {"slug", "type", "name", "id", "secret_fields", "created", "updated"}
    assert datetime.fromisoformat(listed[0]["created"]).tzinfo is not None
    # One element per line: `grep` and line-by-line readers work too.
    assert out.splitlines()[0] == "[" and out.splitlines()[-1] == "]"
    assert [json.loads(line.rstrip(",")) for line in out.splitlines()[1:-1]] == listed
    # The same shape as `inspect --json` says of the same block (minus inspect's extras).
    shown = json.loads(block("inspect", "secret/b-001", "--json").stdout)
    assert {k: shown[k] for k in listed[0]} == listed[0]


def test_terminal_shows_every_row_once_in_the_same_columns_past_the_first_screen() -> None:
    names = save_many(40)
    screen = shown_on_terminal("ls", rows=12)
    lines = [line.rstrip() for line in screen.splitlines() if line.strip()]
    shown = [line.split()[1] for line in lines if line.startswith(("secret ", "string "))]
    assert sorted(shown) == sorted(names) and len(shown) == len(set(shown)) == 40
    heading = next(line for line in lines if "name" in line and "created" in line)
    assert screen.count("created") == 1  # one heading, then plain rows
    # Every row's name starts in the heading's "name" column, on rich's screen and after it.
    column = _strip_ansi(heading).index("name")
    rows = [line for line in lines if line.startswith(("secret ", "string "))]
    assert {row.index("b-") for row in rows} == {column}
    print(f"terminal ls: {len(rows)} rows on a 12-line screen, names at column {column}")


def test_terminal_long_listing_has_a_bold_heading_and_a_rule_unless_the_terminal_is_dumb() -> None:
    save_many(30)
    screen = shown_on_terminal("ls", rows=10)
    lines = screen.splitlines()
    assert lines[0].startswith("\x1b[1mtype") and "\x1b[1mname" in lines[0]
    assert set(lines[1]) == {"\u2500"} and len(lines[1]) == len(_strip_ansi(lines[0]))
    code, dumb = on_terminal("ls", rows=10, env={"TERM": "dumb"})
    assert code == 0 and "\x1b[" not in dumb and dumb.splitlines()[0].startswith("type ")
    assert _strip_ansi(screen) == dumb  # the same text, only without the bold
    code, latin = on_terminal("ls", rows=10, env={"PYTHONIOENCODING": "latin-1"})
    assert code == 0 and set(latin.splitlines()[1]) == {"-"}  # no "─" in Latin-1


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 3, 29, 0, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 10, 25, 1, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1, 1, 2, tzinfo=UTC),
    ],
)
def test_local_time_is_astimezone_to_the_second(moment: datetime) -> None:
    assert local_time(moment) == moment.astimezone().replace(tzinfo=None).isoformat(" ", "seconds")


def test_local_time_past_year_9999_shows_the_stored_time_and_offset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # where 9999-12-31 23:00 UTC is year 10000
    time.tzset()
    try:
        last = datetime(9999, 12, 31, 23, tzinfo=UTC)
        assert local_time(last) == "9999-12-31 23:00:00+00:00"
        assert local_time(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01 09:00:00"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_terminal_shows_a_short_listing_as_a_rich_table() -> None:
    save_many(3)
    screen = shown_on_terminal("ls", rows=40)
    assert "┏" in screen and "b-002" in screen and screen.count("b-00") == 3


def test_cells_with_tabs_and_newlines_stay_on_one_line_when_piped() -> None:
    String(value="a\tb\nc\\d").save("odd")
    out = block("inspect", "string/odd").stdout
    assert "value\ta\\tb\\nc\\\\d" in out.splitlines()


def test_printer_streams_and_counts() -> None:
    runner = CliRunner()

    def run() -> None:
        assert print_table(("a", "b"), ((i, f"x{i}") for i in range(1500))) == 1500
        assert echo_json_array(iter([])) == 0
        assert echo_json_array({"n": n} for n in range(3)) == 3
        print_pairs([("id", 1), ("name", "x")], title="t")

    out = runner.invoke(click.command()(run), []).output
    lines = out.splitlines()
    assert lines[0] == "a\tb" and lines[1500] == "1499\tx1499"
    rest = "\n".join(lines[1501:])
    assert rest.startswith("[]\n[\n")
    assert json.loads(rest[3 : rest.index("]\n", 3) + 1]) == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert lines[-3:] == ["t", "id    1", "name  x"]


def test_rows_are_escaped_only_where_they_need_it_piped_and_on_a_terminal() -> None:
    rows = [("a", "b"), ("x\ty", "z"), ("back\\slash", "cr\r"), ("n\nl", ""), ("c", 7)]
    runner = CliRunner()
    out = runner.invoke(click.command()(lambda: print_table(("one", "two"), rows)), []).output
    assert out.split("\n")[1:-1] == ["a\tb", "x\\ty\tz", "back\\\\slash\tcr\\r", "n\\nl\t", "c\t7"]
    # Past the first screen on a terminal: the same escapes, in columns.
    texts = [[cell(value) for value in row] for row in rows]
    assert _lines(texts, [4, 2]).splitlines() == [
        "a      b",
        "x\\ty   z",
        "back\\\\slash   cr\\r",
        "n\\nl",
        "c      7",
    ]


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    store = ResultStore.resolve(str(tmp_path / "results"), "pickle")
    now = datetime.now(UTC)
    for i in range(30):
        store.write(f"etl/k-{i:02d}", b"x" * 1000, expires=now + timedelta(hours=i % 2 * 2 - 1))
    store.storage.write_path("etl/junk", b"not a record")
    return tmp_path / "results"


def test_results_ls_piped_lines_and_count_on_stderr(results_dir: Path) -> None:
    done = block("results", "ls", "--storage", str(results_dir))
    lines = done.stdout.splitlines()
    assert lines[0].split("\t") == ["Key", "Size", "Created", "Expires", "Task", "Serializer"]
    rows = {line.split("\t")[0]: line.split("\t") for line in lines[1:]}
    assert len(rows) == 31 and rows["etl/junk"][5] == "unreadable"
    assert rows["etl/k-00"][3].endswith("(expired)") and rows["etl/k-01"][5] == "pickle"
    assert "31 result record(s)" in done.stderr
    listed = json.loads(block("results", "ls", "--storage", str(results_dir), "--json").stdout)
    assert len(listed) == 31 and sum(row["readable"] for row in listed) == 30
    screen = shown_on_terminal("results", "ls", "--storage", str(results_dir), rows=10)
    assert sum(f"etl/k-{i:02d}" in screen for i in range(30)) == 30
    assert "31 result record(s)" in screen


def test_results_ls_reads_headers_only_never_a_payload(tmp_path: Path) -> None:
    base = tmp_path / "results"
    store = ResultStore.resolve(str(base), "pickle")
    store.write("big", b"x" * 5_000_000)
    path = base / "big"
    data = path.read_bytes()
    # Cut the payload off after the header: a listing that read (or verified) the payload
    # would call the record unreadable; `inspect --show-value` does read it, and must.
    head = PREFIX_SIZE + header_length(data, key="big")
    path.write_bytes(data[: head + 10])
    rows = block("results", "ls", "--storage", str(base)).stdout.splitlines()[1:]
    assert [row.split("\t")[:2] for row in rows] == [["big", "5.0 MB"]]
    listed = json.loads(block("results", "ls", "--storage", str(base), "--json").stdout)
    assert listed[0]["readable"] and listed[0]["size"] == len(data) - head  # as the header says
    shown = block("results", "inspect", "big", "--storage", str(base), "--show-value").stdout
    assert "not available" in shown
    print(f"listed a {len(data):,}-byte record from its first {path.stat().st_size} bytes")


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)
