"""``--limit`` for the --tool path of the tools that take a limit (list_processes, get_traffic,
get_connect_latency): a subprocess on a real --db store holding five processes' traffic."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from netspy_tui.collector.base import DIR_RX
from netspy_tui.store import traffic as T
from netspy_tui.store.sqlite import EventStore
from tests.factories import connection

NS = 1_000_000_000


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A history file with five processes reading 5,000 .. 1,000 bytes, as the collector's writer leaves it."""
    path = tmp_path / "history.db"
    store = EventStore(path)
    now = datetime.now(UTC)
    store.add_events([connection(pid=100 + i, command=f"proc{i}", ip="10.0.0.7", port=443, time=now) for i in range(5)])
    s = int(now.timestamp()) - 1
    rows: list[T.Row] = [(s, 100 + i, f"proc{i}", "TCP", "10.0.0.2", 40000 + i, "10.0.0.7", 443, DIR_RX,
                          (5 - i) * 1000, 1, s * NS, s * NS) for i in range(5)]  # fmt: skip
    with store._write_lock:  # the writer thread's transaction, without a collector
        store._writer.execute("BEGIN IMMEDIATE")
        T.write(store._writer, rows)
        store._writer.execute("COMMIT")
    store.close()
    return path


def test_get_traffic_takes_limit_and_lists_that_many(run_cli, db: Path) -> None:
    out = run_cli("--db", str(db), "--tool", "get_traffic", "--limit", "3")
    assert out.returncode == 0, out.stderr
    processes = out.stdout.split("Processes (sent / read):\n")[1].split("Remote addresses")[0]
    assert [line.split()[0] for line in processes.splitlines()] == ["proc0", "proc1", "proc2"]  # the top 3 by bytes
    assert "(the top 3 of each; 5 connections" in out.stdout


def test_list_processes_takes_limit(run_cli, db: Path) -> None:
    out = run_cli("--db", str(db), "--tool", "list_processes", "--limit", "2", "--json")
    assert out.returncode == 0, out.stderr
    assert '"tool": "list_processes"' in out.stdout and out.stdout.count('"command": "proc') == 2


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--tool", "get_traffic", "--limit", "201"], "Invalid arguments for get_traffic: --limit must be <= 200."),
        (["--tool", "get_connect_latency", "--limit", "0"], "argument --limit: must be greater than 0"),
        (["--tool", "get_network_summary", "--limit", "3"], "--tool get_network_summary takes no --limit"),
    ],
)
def test_a_limit_outside_the_tools_bounds_is_one_line_with_exit_2(run_cli, db: Path, args, fragment) -> None:
    out = run_cli("--db", str(db), *args)
    assert out.returncode == 2 and out.stdout == ""
    assert fragment in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
