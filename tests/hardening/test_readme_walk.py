"""What a new user meets walking the README: ``serve`` and its HTTP API, the CLI's errors and notices.

Every case runs ``python -m netspy_tui`` as a subprocess (``serve`` on a free 127.0.0.1 port, stopped
by the test), as the README's examples do.
"""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.hardening.conftest import DEMO, Child, Cli, assert_one_line_error, free_port, wait_until

DEMO_EVENTS = sum(1 for line in DEMO.read_text().splitlines() if line.strip())


def _serving(child: Child) -> str:
    """The base URL ``serve`` says it listens on."""
    return child.wait_for("serving ", 60).rsplit(" ", 1)[-1].strip()


# --- M1: SIGTERM of serve ----------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_of_serve_flushes_the_store_then_exits_128_plus_15_saying_so(
    spawn: Callable[..., Child], tmp_path: Path
) -> None:
    db = tmp_path / "history.sqlite3"
    child = spawn("serve", "--port", str(free_port()), "--replay", str(DEMO), "--replay-speed", "0", "--db", str(db))
    url = _serving(child)
    total = lambda: httpx.get(url + "/api/events?limit=1", timeout=5).json()["total_count"]  # noqa: E731
    wait_until(lambda: total() == DEMO_EVENTS, "the recording served", 30)
    child.proc.send_signal(signal.SIGTERM)
    assert child.proc.wait(30) == 128 + signal.SIGTERM
    wait_until(lambda: "netspy-tui: stopped by SIGTERM.\n" in child.err, "the one-line reason", 10)
    # the store was closed cleanly before the exit: every event in it, the close's -memory beside it
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM events").fetchone() == (DEMO_EVENTS,)
    assert Path(f"{db}-memory").exists()


@pytest.mark.slow
def test_sigterm_of_serve_aggregate_exits_128_plus_15_saying_so(spawn: Callable[..., Child], tmp_path: Path) -> None:
    child = spawn("serve", "--aggregate", "--port", str(free_port()), "--db", str(tmp_path))
    url = _serving(child)
    assert httpx.get(url + "/health", timeout=5).status_code == 200
    child.proc.send_signal(signal.SIGTERM)
    assert child.proc.wait(30) == 128 + signal.SIGTERM
    wait_until(lambda: "netspy-tui: stopped by SIGTERM.\n" in child.err, "the one-line reason", 10)


# --- L11: the startup notice ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "what"),
    [(["serve"], "the eBPF server API on http://127.0.0.1:{port}"), (["mcp", "--http"], "MCP (streamable HTTP) on "
                                                                     "http://127.0.0.1:{port}/mcp")],
    ids=["serve", "mcp-http"],
)  # fmt: skip
def test_the_startup_notice_is_a_plain_line_not_a_warning(
    spawn: Callable[..., Child], command: list[str], what: str
) -> None:
    port = free_port()
    child = spawn(*command, "--port", str(port), "--replay", str(DEMO), "--replay-speed", "0")
    line = child.wait_for("serving ", 60)
    assert line == f"netspy-tui: serving {what.format(port=port)}\n"
    assert not [ln for ln in child.err if "WARNING" in ln], child.err


# --- M2: a --db in a directory that does not exist -------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [["serve", "--port", "1"], ["--collector", "procfs"], ["serve", "--aggregate", "--port", "1"]],
    ids=["serve", "dashboard", "aggregate"],
)
def test_a_db_in_a_missing_directory_is_one_line_exit_2_and_creates_nothing(
    cli: Cli, tmp_path: Path, command: list[str]
) -> None:
    db = tmp_path / "typo" / "dir" / "h.sqlite3"
    run = cli(*command, "--db", str(db), timeout=60)
    line = assert_one_line_error(run, 2)
    assert line == f"netspy-tui: --db {db}: directory {db.parent} does not exist. Create it first."
    assert not (tmp_path / "typo").exists()


def test_a_db_from_the_environment_in_a_missing_directory_names_its_source(cli: Cli, tmp_path: Path) -> None:
    db = tmp_path / "typo" / "h.sqlite3"
    run = cli("--tool", "server_status", "--replay", str(DEMO), env={"NETSPY_DB": str(db)})
    line = assert_one_line_error(run, 2)
    assert line.startswith(f"netspy-tui: db (env NETSPY_DB) {db}: directory {db.parent} does not exist")
    assert not (tmp_path / "typo").exists()


# --- L9: --show-config shows the effective raw_rate -----------------------------------------------------


def test_show_config_gives_raw_rate_its_effective_default(cli: Cli) -> None:
    from netspy_tui.collector.ebpf.collector import RAW_RATE

    run = cli("--show-config")
    assert run.returncode == 0, run.stderr
    line = next(ln for ln in run.stdout.splitlines() if ln.startswith("raw_rate "))
    assert line.split() == ["raw_rate", str(RAW_RATE), "default"]
    assert RAW_RATE == 50_000  # what README and --help say
    assert "(50000; 0: no cap)" in " ".join(cli("--help").stdout.split())


# --- L1: the replay collector without a recording ---------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "env"),
    [
        (["--collector", "replay"], {}),
        (["--collector", "replay", "--tool", "server_status"], {}),
        (["repl"], {"NETSPY_COLLECTOR": "replay"}),
    ],
    ids=["dashboard", "tool", "repl-env"],
)
def test_the_replay_collector_without_a_recording_is_one_line_exit_2_before_any_ui(
    cli: Cli, command: list[str], env: dict[str, str]
) -> None:
    run = cli(*command, env=env, input="", timeout=60)
    line = assert_one_line_error(run, 2)  # nothing on stdout: no dashboard was drawn
    assert line == "netspy-tui: the replay collector needs a recording. Pass --replay FILE."
