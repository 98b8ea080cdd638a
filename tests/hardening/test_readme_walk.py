"""What a new user meets walking the README: ``serve`` and its HTTP API, the CLI's errors and notices.

Every case runs ``python -m netspy_tui`` as a subprocess (``serve`` on a free 127.0.0.1 port, stopped
by the test), as the README's examples do.
"""

from __future__ import annotations

import signal
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.fake_ebpf_server import FakeEbpfServer
from tests.hardening.conftest import (
    DEMO,
    REPO,
    Child,
    Cli,
    assert_one_line_error,
    free_port,
    product_env,
    wait_until,
)

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


def test_a_db_under_home_written_with_a_tilde_is_accepted(cli: Cli, tmp_path: Path) -> None:
    """``~`` in a --db path (quoted, from the environment or the config file) is the home directory, as the store
    reads it: not a directory named ``~`` under the working directory."""
    home = tmp_path / "home"
    home.mkdir()
    run = cli("--tool", "server_status", "--replay", str(DEMO), env={"NETSPY_DB": "~/h.sqlite3", "HOME": str(home)})
    assert run.returncode == 0, run.stderr
    assert (home / "h.sqlite3").exists()


def test_an_explicit_server_is_read_whatever_collector_the_environment_names(cli: Cli) -> None:
    """NETSPY_COLLECTOR=replay (no recording) does not stop a command from reading the --server it was given:
    only a command that runs the collector needs the recording."""
    with FakeEbpfServer("current") as srv:
        run = cli("--server", srv.url, "--tool", "server_status", env={"NETSPY_COLLECTOR": "replay"})
    assert run.returncode == 0, run.stderr


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


# --- M9: zero on the HTTP API ------------------------------------------------------------------------------

#: Our extension paths: 0 is out of range like -5 (the same 400 line).
ZERO_REFUSED = [
    ("/api/traffic", "duration_seconds", "duration_seconds must be between 1 and 31622400, got 0"),
    ("/api/traffic", "limit", "limit must be between 1 and 1000, got 0"),
    ("/api/traffic", "pid", "pid must be between 1 and 4294967295, got 0"),
    ("/api/connect-latency", "duration_seconds", "duration_seconds must be between 1 and 31622400, got 0"),
    ("/api/connect-latency", "limit", "limit must be between 1 and 1000, got 0"),
    ("/api/connect-latency", "pid", "pid must be between 1 and 4294967295, got 0"),
    ("/api/window-stats", "duration_seconds", "duration_seconds must be between 1 and 31622400, got 0"),
    ("/api/window-stats", "top_n", "top_n must be between 1 and 1000, got 0"),
    ("/api/window-stats", "buckets", "buckets must be between 1 and 3600, got 0"),
    ("/api/window-stats", "pid", "pid must be between 1 and 4294967295, got 0"),
    ("/api/inbound", "limit", "limit must be between 1 and 10000, got 0"),
    ("/api/inbound", "pid", "pid must be between 1 and 4294967295, got 0"),
    ("/api/losses", "duration_seconds", "duration_seconds must be between 1 and 31622400, got 0"),
]


@pytest.mark.slow
def test_zero_is_refused_by_the_extensions_and_unset_on_the_contracts_paths(spawn: Callable[..., Child]) -> None:
    child = spawn("serve", "--port", str(free_port()), "--replay", str(DEMO), "--replay-speed", "0")
    url = _serving(child)
    with httpx.Client(base_url=url, timeout=10) as http:
        wait_until(lambda: http.get("/api/events?limit=1").json()["total_count"] == DEMO_EVENTS, "the recording", 30)
        negative = http.get("/api/traffic?duration_seconds=-5")
        assert (negative.status_code, negative.text.strip()) == (
            400,
            "duration_seconds must be between 1 and 31622400, got -5",
        )
        for path, name, message in ZERO_REFUSED:
            resp = http.get(path, params={name: 0})
            assert (resp.status_code, resp.text.strip()) == (400, message), (path, name)
        # the contract's own paths: 0 is an unset Go field (the default; pid 0: every process), as documented
        events = http.get("/api/events", params={"limit": 0, "pid": 0}).json()
        assert events["filters"] == {"limit": 100} and events["total_count"] == DEMO_EVENTS
        summary = http.get("/api/connection-summary", params={"duration_seconds": 0, "pid": 0}).json()
        assert summary["duration_seconds"] == 60 and summary["pid"] == 0


# --- L10: repl with piped input ------------------------------------------------------------------------------


def test_piped_repl_prints_only_results_errors_on_stderr_and_exit_1_after_a_failure(cli: Cli) -> None:
    replay = ["repl", "--replay", str(DEMO), "--replay-speed", "0"]
    good = cli(*replay, input="status\n")
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith("Source: replay of "), good.stdout  # the result, no banner before it
    assert "interactive mode" not in good.stdout and "Type 'help'" not in good.stdout
    bad = cli(*replay, input="frobnicate\nstatus\nquit\n")
    assert bad.returncode == 1, bad.stderr
    assert bad.stdout.startswith("Source: replay of ")  # the next command still ran
    assert "error" not in bad.stdout
    assert [ln for ln in bad.stderr.splitlines() if ln.startswith("error: ")] == [
        "error: Unknown command 'frobnicate'. Commands: summary, list, analyze, drops, dropsummary, top, traffic, "
        "latency, status, insights, ask, tools, help, quit."
    ]


# --- L8: where the HTTP limits are stated ---------------------------------------------------------------------


def test_the_help_the_readme_names_states_the_http_limits(cli: Cli) -> None:
    readme = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    assert "`netspy-tui serve --help` and `netspy-tui mcp --help` state the same." in readme
    assert "bodies are limited to 1 MiB (`413`)" in readme
    for command in (["serve"], ["mcp"]):
        shown = " ".join(cli(*command, "--help").stdout.split())
        limits = ("within 10 s", "after 5 s", "at most 100 connections", "after 16 KiB is a 400", "over 1 MiB is a 413")
        for limit in limits:
            assert limit in shown, (command, limit)


# --- L7: the README's tool table and --tool -------------------------------------------------------------------


def test_every_tool_in_the_readme_table_runs_as_a_tool_or_is_marked_mcp_only(cli: Cli) -> None:
    from netspy_tui.cli import TOOLS

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("| tool | parameters | returns |", 1)[1].split("\n\n", 1)[0]
    rows = {line.split("`")[1]: line for line in table.splitlines() if line.startswith("| `")}
    assert set(TOOLS) <= set(rows)
    mcp_only = {name for name, row in rows.items() if "MCP only" in row}
    assert set(rows) - set(TOOLS) == mcp_only == {"lookup_names", "dashboard_snapshot"}
    run = cli("--tool", "lookup_names")
    assert run.returncode == 2 and "invalid choice: 'lookup_names'" in run.stderr


README_TEXT = (REPO / "README.md").read_text(encoding="utf-8")


async def test_the_readme_tool_table_is_what_an_mcp_client_lists(tmp_path: Path) -> None:
    """`netspy-tui mcp` over stdio, as Claude Desktop starts it: tools/list names exactly the table's rows."""
    from mcp import StdioServerParameters
    from mcp.client import Client

    table = README_TEXT.split("| tool | parameters | returns |", 1)[1].split("\n\n", 1)[0]
    rows = {line.split("`")[1] for line in table.splitlines() if line.startswith("| `")}
    params = StdioServerParameters(command=sys.executable, args=["-m", "netspy_tui", "mcp", "--replay", str(DEMO)],
                                   env=product_env(tmp_path), cwd=str(REPO))  # fmt: skip
    async with Client(params, read_timeout_seconds=30) as client:
        listed = {tool.name for tool in (await client.list_tools()).tools}
    assert listed == rows, (listed - rows, rows - listed)


# --- L6: a pid filter names the pid ---------------------------------------------------------------------------


def test_a_pid_filter_is_named_pid_n_in_the_tools_sentences(cli: Cli) -> None:
    replay = ["--replay", str(DEMO), "--replay-speed", "0", "--pid", "1234"]
    summary, listing = cli.many([["--tool", "get_network_summary", *replay], ["--tool", "list_connections", *replay]])
    assert summary.stdout == "pid 1234 made 0 outbound connection attempts over the last 60 seconds\n", summary
    assert listing.stdout == "No connection events found for pid 1234.\n", listing
