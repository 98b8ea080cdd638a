"""The Traffic view and workloads in the dashboard, as the user sees them at 80x24 and 120x35.

The data is real: connection events (with workloads) in an event store, and traffic and connect-latency rows
written into the same store the eBPF collector's writer fills, read through the embedded source and the
in-process MCP gateway (get_traffic, get_connect_latency). Rates are averages over the 60 s window, so the
byte counts below are chosen to read as round numbers: 60,000,000 bytes in 60 s is 1.0 MB/s.
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Static

from netspy_tui.collector.base import DIR_ACCEPT, DIR_CONNECT, DIR_RETRANS, DIR_RX, DIR_TX
from netspy_tui.mcp_tools.gateway import ToolFailed, open_gateway
from netspy_tui.store import latency as L
from netspy_tui.store import traffic as T
from netspy_tui.store.sqlite import EventStore
from netspy_tui.telemetry.embedded import EmbeddedSource
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.tui.app import NetspyApp
from netspy_tui.tui.widgets.processes import GROUP_PREFIX
from tests.factories import connection
from tests.tui.conftest import wait_for
from tests.tui.screen_text import screen_lines, screen_text

pytestmark = pytest.mark.quiet

NS = 1_000_000_000
DOCKER = "docker 3f2a9c1b7d4e"
HOSTILE = "[bold]ev\x1bil"
"""A process name that is markup and a terminal escape: it must show as text (the escape as ``\\x1b``)."""
HOSTILE_SHOWN = "[bold]ev\\x1bil"


def seed(store: EventStore, now: datetime) -> None:
    """nginx (in a container) sends 1.0 MB/s to 10.0.0.7 (named web.internal) and accepts a connection; curl
    (a systemd service) reads 100 kB/s from 93.184.216.34; a hostile name moves a few bytes. Connects: nginx
    20 of 1..20 ms, curl one of 180 ms."""
    ago = [now - timedelta(seconds=s) for s in (3, 2, 1)]
    store.add_events(
        [
            connection(
                pid=101,
                command="nginx",
                ip="10.0.0.7",
                port=443,
                time=ago[0],
                outcome="ok",
                workload=DOCKER,
                hostname="web.internal",
            ),  # fmt: skip
            connection(pid=202, command="curl", ip="93.184.216.34", port=80, time=ago[1], workload="backup.service"),
            connection(pid=303, command=HOSTILE, ip="10.0.0.8", port=22, time=ago[2], workload="docker [red]x[/red]"),
        ]
    )
    s = int(now.timestamp()) - 2
    t = s * NS
    rows: list[T.Row] = [
        (s, 101, "nginx", "TCP", "10.0.0.2", 40001, "10.0.0.7", 443, DIR_TX, 60_000_000, 900, t, t),
        (s, 101, "nginx", "TCP", "10.0.0.2", 40001, "10.0.0.7", 443, DIR_RX, 600_000, 40, t, t),
        (s, 101, "nginx", "TCP", "10.0.0.2", 40001, "10.0.0.7", 443, DIR_RETRANS, 7, 7, t, t),
        (s, 101, "nginx", "TCP", "10.0.0.2", 40001, "10.0.0.7", 443, DIR_CONNECT, 1, 1, t, t),
        (s, 101, "nginx", "TCP", "10.0.0.2", 443, "10.0.0.9", 51000, DIR_ACCEPT, 1, 1, t, t),
        (s, 101, "nginx", "TCP", "10.0.0.2", 443, "10.0.0.9", 51000, DIR_RX, 120_000, 3, t, t),
        (s, 202, "curl", "TCP", "10.0.0.2", 40002, "93.184.216.34", 80, DIR_RX, 6_000_000, 100, t, t),
        (s, 202, "curl", "TCP", "10.0.0.2", 40002, "93.184.216.34", 80, DIR_TX, 60_000, 2, t, t),
        (s, 303, HOSTILE, "TCP", "10.0.0.2", 40003, "10.0.0.8", 22, DIR_TX, 6_000, 1, t, t),
    ]
    latencies: list[tuple[int, int, str, str, str, int]] = [(t + i, 101, "nginx", "10.0.0.7:443", "ok", us) for i, us in
                              enumerate(range(1000, 21000, 1000))]  # fmt: skip
    latencies.append((t, 202, "curl", "93.184.216.34:80", "ok", 180_000))
    with store._write_lock:  # the writer thread's transaction, without a collector
        store._writer.execute("BEGIN IMMEDIATE")
        T.write(store._writer, rows)
        L.write(store._writer, L.rows_of(latencies))
        store._writer.execute("COMMIT")


@asynccontextmanager
async def dashboard(
    size: tuple[int, int], export_dir: Path | None = None
) -> AsyncIterator[tuple[NetspyApp, Pilot[Any], EventStore]]:
    store = EventStore(None)
    source = EmbeddedSource(None, store)
    seed(store, datetime.now(UTC))
    try:
        async with open_gateway(source) as gateway:
            app = NetspyApp(gateway, interval=0.2, source_note="test", export_dir=export_dir)
            async with app.run_test(size=size) as pilot:
                await wait_for(pilot, lambda: app.dashboard.connections.row_count == 4, "3 connects, 1 accept")
                yield app, pilot, store
    finally:
        await source.aclose()


def line_with(app: NetspyApp, *parts: str) -> str:
    """The one screen line holding every one of ``parts`` (fails when none or several do)."""
    found = [line for line in screen_lines(app) if all(p in line for p in parts)]
    assert len(found) == 1, (parts, found, screen_text(app))
    return found[0]


def read_exports(directory: Path) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The rows of the one CSV export in ``directory`` and the one JSON export's document."""
    [csv_path] = directory.glob("*.csv")
    [json_path] = directory.glob("*.json")
    with csv_path.open() as fh:
        return list(csv.DictReader(fh)), json.loads(json_path.read_text())


def traffic_keys(app: NetspyApp) -> list[str]:
    return [str(r.key) for r in app.dashboard.traffic.rows_shown]


async def test_at_80x24_the_traffic_view_shows_processes_rates_and_is_read_only_while_shown(tmp_path: Path) -> None:
    async with dashboard((80, 24), tmp_path) as (app, pilot, _):
        d = app.dashboard
        assert d.latest is not None and d.latest.traffic is None  # not asked while the view is not shown
        await pilot.press("t")
        table = d.traffic
        await wait_for(pilot, lambda: table.row_count == 3, "the processes' traffic")
        await pilot.pause()
        text = screen_text(app)
        assert "Traffic (3)" in text
        assert "by process (v) · 1m avg rx 112.0 kB/s tx 1.0 MB/s · 7 retrans · 1 in / 1 out" in text
        summary = d.query_one("#traffic-summary", Static)
        assert str(summary.content).endswith(" · connect p50 11.0 ms p95 20.0 ms")  # (past the edge at 80 columns)
        header = line_with(app, "Process", "Rx/s", "Tx/s")
        assert "Retrans" in header
        nginx = line_with(app, "nginx", "1.0 MB/s")
        assert "12.0 kB/s" in nginx and "60.0 MB" in nginx and " 7 " in nginx
        assert "1.0 kB/s" in line_with(app, "curl", "100.0 kB/s")
        assert HOSTILE_SHOWN[:11] in screen_text(app)  # the name as text: no bold, no escape reaching the terminal
        assert traffic_keys(app) == ["curl", "nginx", HOSTILE]  # Rx/s largest first

        await pilot.press("slash", *"3f2a", "enter")  # the filter: nginx's pid runs in that container
        await wait_for(pilot, lambda: traffic_keys(app) == ["nginx"], "nginx's row, by its workload")
        await pilot.press("E", "e")  # the rows shown, with the tool's exact figures
        await wait_for(pilot, lambda: len(list(tmp_path.glob("netspy-traffic-processes-*"))) == 2, "the exports")
        rows, data = read_exports(tmp_path)
        assert [(r["command"], r["pids"], r["rx_bytes"], r["tx_bytes"], r["retransmits"]) for r in rows] == [
            ("nginx", "101", "720000", "60000000", "7")
        ]
        assert data["view"] == "traffic" and data["traffic_list"] == "processes"
        assert [r["command"] for r in data["traffic_rows"]] == ["nginx"]
        assert data["traffic"]["stats"]["rx_bytes"] == 6_720_000
        assert data["connect_latency"]["stats"]["attempts"] == 21
        await pilot.press("escape")

        await pilot.press("t")  # back to connections: the poller stops asking for traffic
        await wait_for(pilot, lambda: d.view == "connections", "the connections view")
        app.poller.wake.set()  # poll now: nothing changes in the store, so the next poll would be the idle one (10 s)
        await wait_for(pilot, lambda: d.latest is not None and d.latest.traffic is None, "a poll without traffic")
        assert not app.poller.traffic_wanted


async def test_at_80x24_traffic_by_connection_remote_and_latency_and_sorted() -> None:
    async with dashboard((80, 24)) as (app, pilot, _):
        table = app.dashboard.traffic
        await pilot.press("v")  # from the connections view: shows the Traffic view
        await wait_for(pilot, lambda: table.row_count == 3, "the processes' traffic")
        await pilot.press("v")  # per connection, with the direction
        await wait_for(pilot, lambda: table.mode == "connections" and table.row_count == 4, "the connections")
        await pilot.pause()
        assert "by connection (v)" in screen_text(app)
        assert "Direction" not in line_with(app, "Process", "Remote")  # (shown where there is room)
        await pilot.resize_terminal(120, 35)
        await pilot.pause()
        assert "Direction" in line_with(app, "Process", "Remote", "Direction")
        assert "outbound" in line_with(app, "nginx", "web.internal:443")  # the name its connections carry
        assert "inbound" in line_with(app, "nginx", "10.0.0.9:51000")
        await pilot.resize_terminal(80, 24)

        await pilot.press("v")  # per remote address
        await wait_for(pilot, lambda: table.mode == "remotes" and table.row_count == 4, "the remotes")
        await pilot.pause()
        assert "100.0 kB/s" in line_with(app, "93.184.216.34")

        await pilot.press("v")  # connect latency per destination, slowest p95 first
        await wait_for(pilot, lambda: table.mode == "latency" and table.row_count == 2, "the latency")
        await pilot.pause()
        assert "180.0 ms" in line_with(app, "curl", "93.184.216.34:80")
        nginx = line_with(app, "nginx", "web.internal:443")
        assert "10.0 ms" in nginx and "19.0 ms" in nginx
        assert traffic_keys(app) == ["curl\x0093.184.216.34:80", "nginx\x0010.0.0.7:443"]
        await pilot.press("o")  # sort by the next column: attempts, most first
        assert table.sort_keys["latency"] == "attempts"
        assert traffic_keys(app) == ["nginx\x0010.0.0.7:443", "curl\x0093.184.216.34:80"]
        assert "Attempts ▼" in line_with(app, "Process", "Destination")


async def test_at_80x24_every_column_is_shown_whole_or_not_at_all() -> None:
    """A column that does not fit is not drawn: no stub of a label, no leading digits of a right-aligned count
    (``40`` for 400, blank for 1); the name, rates and totals come first, direction and pid where there is room."""
    async with dashboard((80, 24)) as (app, pilot, _):
        table = app.dashboard.traffic
        assert line_with(app, "Time (UTC)", "Destination").split()[-1] == "PID"  # (no stub of Workload)
        await pilot.press("t")
        await wait_for(pilot, lambda: table.row_count == 3, "the processes' traffic")
        await pilot.pause()
        assert line_with(app, "Process", "Rx/s").split() == ["Process", "Rx/s", "avg", "▼", "Tx/s", "avg", "Rx", "Tx",
                                                             "Retrans", "Conns"]  # fmt: skip
        assert line_with(app, "curl", "100.0 kB/s").split()[-1] == "1"  # curl's one connection, all its digits
        assert line_with(app, "nginx", "1.0 MB/s").split()[-1] == "2"
        await pilot.press("v")
        await wait_for(pilot, lambda: table.mode == "connections" and table.row_count == 4, "the connections")
        await pilot.pause()
        assert line_with(app, "Process", "Remote").split() == ["Process", "Remote", "Rx/s", "avg", "▼", "Tx/s", "avg",
                                                            "Rx", "Tx"]  # fmt: skip
        assert line_with(app, "nginx", "web.internal:443").split()[-4:] == ["600.0", "kB", "60.0", "MB"]
        await pilot.press("v")
        await wait_for(pilot, lambda: table.mode == "remotes" and table.row_count == 4, "the remotes")
        await pilot.pause()
        assert line_with(app, "Remote", "Rx/s").split()[-1] == "Retrans"
        assert line_with(app, "web.internal", "600.0 kB").split()[-1] == "7"
        await pilot.press("v")
        await wait_for(pilot, lambda: table.mode == "latency" and table.row_count == 2, "the latency")
        await pilot.pause()
        assert line_with(app, "Process", "Destination").split()[-1] == "Max"  # (no stub of Outcomes)


def write_traffic(store: EventStore, rows: list[T.Row]) -> None:
    """Traffic rows as the collector's writer adds them, and its notification (the dashboard follows it)."""
    with store._write_lock:
        store._writer.execute("BEGIN IMMEDIATE")
        T.write(store._writer, rows)
        store._writer.execute("COMMIT")
    store._changed()


async def test_a_filter_gets_totals_of_its_rows_says_the_top_200_and_a_traffic_only_name_narrows_the_tools() -> None:
    """A text filter picks rows out of the tools' top 200: the summary line sums the rows shown (not the host's
    112 kB/s over curl's row), the tab says when the top 200 cut the list, and a filter that is exactly the name of
    a process seen only in the traffic (a server that only accepts: no connect attempts) asks the tools about it."""
    async with dashboard((80, 24)) as (app, pilot, store):
        d = app.dashboard
        await pilot.press("t")
        await wait_for(pilot, lambda: d.traffic.row_count == 3, "the processes' traffic")
        await pilot.press("slash", *"cur", "enter")
        await wait_for(pilot, lambda: traffic_keys(app) == ["curl"], "curl's row")
        await pilot.pause()
        assert "by process (v) · shown, 1m avg rx 100.0 kB/s tx 1.0 kB/s · 0 retrans" in screen_text(app)
        assert "Traffic (1)" in screen_text(app)
        await pilot.press("escape")

        # 250 connections of a busy client, and a server's one accepted connection that reads less than any of them
        s = int(datetime.now(UTC).timestamp()) - 1
        t = s * NS
        busy: list[T.Row] = [(s, 606, "busy", "TCP", "10.0.0.2", 20000 + i, "10.0.1.1", 80, DIR_RX, 60_000, 1, t, t)
                             for i in range(250)]  # fmt: skip
        accepted = (s, 707, "srvonly", "TCP", "10.0.0.2", 8080, "10.0.0.3", 50000)
        server: list[T.Row] = [(*accepted, DIR_ACCEPT, 1, 1, t, t), (*accepted, DIR_RX, 600, 1, t, t)]
        write_traffic(store, busy + server)
        await pilot.press("v")  # by connection: the top 200 of 255
        await wait_for(pilot, lambda: d.traffic.mode == "connections" and d.traffic.row_count == 200, "the top 200")
        await pilot.press("slash", *"srvon", "enter")
        await wait_for(pilot, lambda: "Traffic (0 of the top 200)" in screen_text(app), "the count out of the top 200")
        await pilot.press("slash", "ctrl+u", *"srvonly", "enter")  # exactly its name: the tools are asked about srvonly
        await wait_for(pilot, lambda: len(traffic_keys(app)) == 1, "srvonly's connection")
        await pilot.pause()
        assert d.filter_subject is not None and d.filter_subject.command == "srvonly"
        assert "Traffic (1)" in screen_text(app)
        assert "by connection (v) · 1m avg rx 10 B/s tx 0 B/s · 0 retrans · 1 in / 0 out" in screen_text(app)


async def test_enter_on_a_traffic_row_focuses_its_process_and_the_tools_are_asked_about_it() -> None:
    async with dashboard((80, 24)) as (app, pilot, _):
        d = app.dashboard
        await pilot.press("t")
        await wait_for(pilot, lambda: d.traffic.row_count == 3, "the processes' traffic")
        assert "Rx/s" not in line_with(app, "Attempts", "Last seen")  # the process table's rates: past the edge
        d.traffic.focus()
        d.traffic.move_cursor(row=traffic_keys(app).index("nginx"), animate=False)
        await pilot.press("enter")
        assert d.focus_subject is not None and d.focus_subject.command == "nginx"
        await wait_for(
            pilot,
            lambda: d.latest is not None and d.latest.traffic is not None and d.latest.traffic.stats.command == "nginx",
            "traffic asked about nginx",
        )
        await wait_for(pilot, lambda: traffic_keys(app) == ["nginx"], "nginx's row only")
        assert d.latest is not None and d.latest.traffic is not None
        assert d.latest.traffic.stats.rx_bytes == 720_000  # the tool's own totals are nginx's now
        await pilot.press("v")
        await wait_for(pilot, lambda: d.traffic.row_count == 2, "nginx's two connections")
        assert {r.command for r in d.traffic.rows_shown} == {"nginx"}


async def test_paused_the_traffic_lists_show_the_paused_poll() -> None:
    async with dashboard((80, 24)) as (app, pilot, store):
        d = app.dashboard
        await pilot.press("t")
        await wait_for(pilot, lambda: d.traffic.row_count == 3, "the processes' traffic")
        await pilot.press("space")
        s = int(datetime.now(UTC).timestamp()) - 1
        with store._write_lock:
            store._writer.execute("BEGIN IMMEDIATE")
            T.write(store._writer, [(s, 505, "wget", "TCP", "10.0.0.2", 40005, "10.0.0.6", 80, DIR_RX, 9, 1, s * NS,
                                     s * NS)])  # fmt: skip
            store._writer.execute("COMMIT")
        store._changed()  # (what the writer does after a write: the dashboard follows the notification)

        def polled_wget() -> bool:
            return d.latest is not None and d.latest.traffic is not None and d.latest.traffic.stats.total_processes == 4

        await wait_for(pilot, polled_wget, "a poll that has wget")
        await pilot.press("v")  # another list of the same (paused) poll
        assert d.traffic.mode == "connections" and d.traffic.row_count == 4
        assert "wget" not in {r.command for r in d.traffic.rows_shown}
        await pilot.press("space")
        await wait_for(pilot, lambda: "wget" in {r.command for r in d.traffic.rows_shown}, "wget after resuming")


async def test_at_80x24_latency_destinations_by_name_or_address_and_the_filter_finds_both() -> None:
    async with dashboard((80, 24)) as (app, pilot, _):
        table = app.dashboard.traffic
        await pilot.press("v", "v", "v", "v")  # the Traffic view, then its latency list
        await wait_for(pilot, lambda: table.mode == "latency" and table.row_count == 2, "the latency")
        await pilot.pause()
        assert "web.internal:443" in line_with(app, "nginx", "ms")
        await pilot.press("n")  # addresses instead of names, here too
        await wait_for(pilot, lambda: "10.0.0.7:443" in screen_text(app), "the address")
        assert "web.internal" not in screen_text(app)
        await pilot.press("slash", *"cur", "enter")  # the filter narrows the traffic lists too
        await wait_for(pilot, lambda: traffic_keys(app) == ["curl\x0093.184.216.34:80"], "curl's row only")
        await pilot.press("escape")
        await wait_for(pilot, lambda: table.row_count == 2, "both rows back")
        await pilot.press("n", "slash", *"web", "enter")  # names again: the filter finds rows by name
        await wait_for(pilot, lambda: traffic_keys(app) == ["nginx\x0010.0.0.7:443"], "nginx's row by its name")


async def test_at_120x35_workload_and_rate_columns() -> None:
    async with dashboard((120, 35)) as (app, pilot, store):
        d = app.dashboard
        await wait_for(pilot, lambda: d.processes.row_count == 3, "the processes")
        await pilot.pause()
        header = line_with(app, "Time (UTC)", "Destination")
        assert "Workload" in header and "Node" not in header  # no event carries a node
        assert DOCKER[:9] in line_with(app, "nginx", "web.internal:443")
        assert "docker [red]x[/red]"[:8] in line_with(app, HOSTILE_SHOWN, "10.0.0.8:22")
        procs = line_with(app, "Attempts", "Last seen")
        assert "Workload" in procs and "Rx/s" in procs and "Tx/s" in procs
        assert (
            line_with(app, "│ nginx", "101").rstrip(" │").endswith("–           –")
        )  # rates are read only while the Traffic view is shown

        await pilot.press("t")
        await wait_for(pilot, lambda: d.processes.rates is not None, "the rates")
        await pilot.pause()
        nginx_row = line_with(app, "│ nginx", "101")  # the process table
        assert nginx_row.rstrip(" │").endswith("12.0 kB/s    1.0 MB/s"), nginx_row


async def test_rates_read_as_averages_over_the_window_alike_in_the_traffic_view_and_the_process_table() -> None:
    """Rx/s and Tx/s are the window's averages (bytes / 60 s), not a current rate: both tables say so in their
    headers, the summary line names the window, and both write a rate with its /s."""
    async with dashboard((120, 35)) as (app, pilot, _):
        d = app.dashboard
        await pilot.press("t")
        await wait_for(pilot, lambda: d.traffic.row_count == 3 and d.processes.rates is not None, "the rates")
        await pilot.pause()
        assert "by process (v) · 1m avg rx 112.0 kB/s tx 1.0 MB/s" in screen_text(app)
        assert "Rx/s avg ▼  Tx/s avg" in line_with(app, " Process", "Retrans")  # the Traffic view
        assert "Rx/s avg    Tx/s avg" in line_with(app, "│ Process", "Attempts")  # the process table
        assert "12.0 kB/s    1.0 MB/s" in line_with(app, " nginx", "720.0 kB")  # the Traffic view's row
        assert "12.0 kB/s    1.0 MB/s" in line_with(app, "│ nginx", "101")  # the process table's


async def test_at_120x35_grouping_by_workload_and_the_node_column() -> None:
    async with dashboard((120, 35)) as (app, pilot, store):
        d = app.dashboard
        await wait_for(pilot, lambda: d.processes.row_count == 3, "the processes")
        await pilot.press("g")  # grouped by workload: a heading per workload above its processes
        assert d.processes.grouped
        await wait_for(pilot, lambda: d.processes.row_count == 6, "three headings and three processes")
        await pilot.pause()
        text = screen_text(app)
        assert f"▾ {DOCKER[:13]}" in text and "▾ backup.service" in text and "▾ docker [red]x[" in text
        assert d.processes.get_cell(GROUP_PREFIX + DOCKER, "process").plain == f"▾ {DOCKER}"  # (in full, where room)
        assert "by workload (g)" in screen_text(app)
        keys = d.processes._order
        assert keys.index(GROUP_PREFIX + DOCKER) + 1 == keys.index("nginx")
        d.processes.focus()
        d.processes.move_cursor(row=keys.index(GROUP_PREFIX + "backup.service"), animate=False)
        await pilot.press("enter")  # a heading: its workload's rows, through the filter
        await wait_for(pilot, lambda: d.filter_text == "backup.service", "the workload filter")
        assert d.query_one("#filter-bar", Input).value == "backup.service"
        await wait_for(pilot, lambda: d.connections.row_count == 1, "curl's connection only")
        assert [e.command for e in d.connections.events.values()] == ["curl"]
        await wait_for(pilot, lambda: set(d.processes.stats) == {"curl"}, "curl's process only")
        await pilot.press("escape", "g")
        assert not d.processes.grouped

        # an event from an aggregator's node: the Node column appears, with its node
        store.add_events([connection(pid=404, command="redis", ip="10.0.0.5", port=6379, time=datetime.now(UTC),
                                     k8s_node_name="node-a")])  # fmt: skip
        await wait_for(pilot, lambda: d.connections.shows_node and d.connections.row_count == 5, "the node's row")
        await pilot.pause()
        header = line_with(app, "Time (UTC)", "Destination")
        assert "Node" in header
        assert "node-a" in line_with(app, "redis", "10.0.0.5:6379")


async def test_the_workload_column_is_past_the_right_edge_at_80_columns() -> None:
    async with dashboard((80, 24)) as (app, pilot, _):
        await pilot.pause()
        assert "Workload" not in line_with(app, "Time (UTC)", "Destination")
        assert "Outcome" in line_with(app, "Time (UTC)", "Destination")
        await pilot.press("slash", *"3f2a9c")  # the filter matches workload text that is not even on screen
        await wait_for(pilot, lambda: app.dashboard.connections.row_count == 1, "the container's connection")
        assert [e.command for e in app.dashboard.connections.events.values()] == ["nginx"]


@asynccontextmanager
async def on_traffic_tab(source: Any, size: tuple[int, int]) -> AsyncIterator[tuple[NetspyApp, Pilot[Any], Any]]:
    """A dashboard on ``source`` switched to the Traffic view once its first traffic poll is shown."""
    async with open_gateway(source) as gateway:
        app = NetspyApp(gateway, interval=0.2, source_note="test")
        async with app.run_test(size=size) as pilot:
            d = app.dashboard
            await pilot.press("t")
            await wait_for(pilot, lambda: d.latest is not None and d.latest.traffic is not None, "the traffic poll")
            await pilot.pause()
            yield app, pilot, gateway


async def test_a_replay_says_its_recording_holds_no_bytes_not_that_the_kernel_is_too_old() -> None:
    """A replay's traffic line said "not counted by this source (needs eBPF, Linux 6.3+)" on a 6.18 kernel as
    root (an audit's): the recording is why, and the line says so, whole at 80 columns."""
    from netspy_tui.collector.replay import ReplayCollector
    from tests.hardening.conftest import DEMO

    source = EmbeddedSource(ReplayCollector(DEMO, speed=0), EventStore(None))
    await source.start()
    try:
        async with on_traffic_tab(source, (80, 24)) as (app, _, _):
            assert "by process (v) · not counted here: a recording holds no byte counts (replay)" in screen_text(app)
            assert "Linux 6.3" not in screen_text(app)
    finally:
        await source.aclose()


async def test_a_source_without_traffic_says_so_and_a_failing_tool_is_one_line() -> None:
    source = MemorySource([connection(pid=7, command="curl", time=datetime.now(UTC) - timedelta(seconds=1))])
    async with on_traffic_tab(source, (80, 24)) as (app, pilot, gateway):
        d = app.dashboard
        assert "by process (v) · not counted by this source (needs eBPF, Linux 6.3+)" in screen_text(app)  # whole
        # nothing carries workloads or nodes: no such columns
        assert not d.connections.shows_workload and not d.connections.shows_node and not d.processes.shows_workload
        assert d.processes.rates is None and d.processes.get_cell("curl", "rx_rate").plain == "–"  # not "0 B"

        async def refuse(*_: Any) -> Any:
            raise ToolFailed("Unknown tool: get_traffic")

        gateway.traffic = refuse  # type: ignore[method-assign]  # (an older server without the tool)
        app.poller.wake.set()  # poll now: nothing changes in the source, so the next poll would be the idle one (10 s)
        await wait_for(pilot, lambda: d.latest is not None and d.latest.traffic_error is not None, "the error")
        await pilot.pause()
        assert "traffic unavailable: Unknown tool: get_traffic" in screen_text(app)
        assert d.query_one("#traffic-summary").has_class("-error")
        assert app.polls > 0 and d.status.failure is None  # the rest of the dashboard keeps polling


class SampledSource(EmbeddedSource):
    """Traffic as procfs sampling reports it (the kernel's per-socket TCP counters, sampled)."""

    async def traffic(self, *args: Any, **kwargs: Any) -> Any:
        return (await super().traffic(*args, **kwargs)).model_copy(update={"sampled": True})


async def test_sampled_traffic_says_so_on_the_summary_line() -> None:
    store = EventStore(None)
    seed(store, datetime.now(UTC))
    source = SampledSource(None, store)
    try:
        async with on_traffic_tab(source, (120, 35)) as (app, _, _):
            assert "by process (v) · sampled TCP counters · 1m avg rx" in screen_text(app)
    finally:
        await source.aclose()


async def test_a_group_headings_destinations_say_at_least_not_a_total() -> None:
    """A heading's Dests is its largest process's (the members' destinations are not here to join): shown as a
    bare 4 it read as the group's own count where its processes reached 15 between them (an audit's): "≥4"."""
    now = datetime.now(UTC) - timedelta(seconds=2)
    events = [connection(pid=5, command="api", ip=f"10.0.0.{i}", time=now, workload="web.service") for i in range(4)]
    events += [connection(pid=6, command="worker", ip=f"10.0.1.{i}", time=now, workload="web.service")
               for i in range(3)]  # fmt: skip
    events += [connection(pid=7, command="cron", ip="10.0.2.1", time=now, workload="cron.service")]
    async with open_gateway(MemorySource(events)) as gateway:
        app = NetspyApp(gateway, interval=0.2, source_note="test")
        async with app.run_test(size=(120, 35)) as pilot:
            d = app.dashboard
            await wait_for(pilot, lambda: d.processes.row_count == 3, "the processes")
            await pilot.press("g")
            await wait_for(pilot, lambda: d.processes.row_count == 5, "two headings and three processes")
            assert d.processes.get_cell(GROUP_PREFIX + "web.service", "dests").plain == "≥4"
            assert d.processes.get_cell(GROUP_PREFIX + "cron.service", "dests").plain == "1"  # (one process: its own)
            assert d.processes.get_cell("api", "dests").plain == "4"
