"""Inbound connections in the dashboard's connection table, as the user sees them at 80x24 and 120x35: a
connection nginx accepted (the kernel's passive-open count in the store, read through the in-process MCP
gateway's ``dashboard_snapshot``) is a row with ``in`` in the Dir column and ``:port ← peer`` as its
destination, beside the connect() rows (``out``); the Outcome column stays in view; one accepted later arrives
with the next refresh; ``/`` matches the peer. A source that sees no accepts shows no Dir column."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from netspy_tui.collector.base import DIR_ACCEPT
from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.store import traffic as T
from netspy_tui.tui.app import NetspyApp
from tests.tui.conftest import Clock, demo_source, wait_for
from tests.tui.screen_text import screen_text
from tests.tui.test_traffic_view import NS, dashboard, line_with

pytestmark = pytest.mark.quiet


async def test_at_80x24_an_accepted_connection_is_an_inbound_row_and_the_outcome_stays_in_view() -> None:
    async with dashboard((80, 24)) as (app, pilot, store):
        await pilot.pause()
        header = line_with(app, "Time (UTC)", "Destination")
        assert "Outcome" in header and "Dir" in header
        assert header.index("Outcome") < header.index("Dir")
        row = line_with(app, "nginx", ":443 ← 10.0.0.9")
        assert " ok " in row and " in " in row and "101" in row
        assert " out " in line_with(app, "nginx", "web.internal:443")
        assert " out " in line_with(app, "curl", "93.184.216.34:80")

        # one accepted later comes with the next refresh (the inbound part's own cursor)
        second = int(datetime.now(UTC).timestamp())
        t = second * NS
        with store._write_lock:
            store._writer.execute("BEGIN IMMEDIATE")
            T.write(store._writer, [(second, 101, "nginx", "TCP", "10.0.0.2", 443, "192.0.2.44", 60000, DIR_ACCEPT,
                                     1, 1, t, t)])  # fmt: skip
            store._writer.execute("COMMIT")
        store._changed()  # (what the writer does after a write: the dashboard follows the notification)
        d = app.dashboard
        await wait_for(pilot, lambda: d.connections.row_count == 5, "the connection accepted later")
        await pilot.pause()
        assert " in " in line_with(app, "nginx", ":443 ← 192.0.2.…")  # (16 cells at 80 columns: the port first)

        await pilot.press("slash", *"192.0.2.44")  # the filter matches who connected
        await wait_for(pilot, lambda: d.connections.row_count == 1, "the peer's row")
        [event] = d.connections.events.values()
        assert (event.direction, event.peer_ip, event.destination_port) == ("inbound", "192.0.2.44", 443)


async def test_at_120x35_the_dir_column_sits_between_outcome_and_proto() -> None:
    async with dashboard((120, 35)) as (app, pilot, _):
        await pilot.pause()
        header = line_with(app, "Time (UTC)", "Destination")
        assert header.index("Outcome") < header.index("Dir") < header.index("Proto") < header.index("PID")
        row = line_with(app, ":443 ← 10.0.0.9")
        assert row.index(" in ") > row.index(" ok "), screen_text(app)
        assert "192.0.2" not in screen_text(app)


async def test_a_source_that_sees_no_accepts_shows_no_dir_column_and_the_destinations_keep_their_room() -> None:
    clock = Clock()
    async with open_gateway(demo_source(clock)) as gateway:  # (the demo's connects only, as a remote server)
        app = NetspyApp(gateway, clock=clock, interval=0.2, source_note="test")
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: app.dashboard.connections.row_count > 0, "the connections")
            await pilot.pause()
            header = line_with(app, "Time (UTC)", "Destination")
            assert "Outcome" in header and "PID" in header and "Dir" not in header
            assert not app.dashboard.connections.shows_direction
            assert any("93.184.216.34:443 " in line for line in screen_text(app).splitlines())  # (not cut at 80)


async def test_the_tab_counts_accepted_connections_when_the_table_keeps_only_the_latest() -> None:
    """Three connects and three accepts in the window, a table that keeps four rows: the tab says it shows the
    latest 4 of 6 (the pattern analysis counts the connects only; the accepts held are added)."""
    from netspy_tui.store.sqlite import EventStore
    from netspy_tui.telemetry.embedded import EmbeddedSource
    from tests.factories import connection

    now = datetime.now(UTC)
    store = EventStore(None)
    source = EmbeddedSource(None, store)
    second = int(now.timestamp()) - 2
    store.add_events([connection(pid=7, command="curl", port=80 + i, ago=3 - i * 0.1) for i in range(3)])
    with store._write_lock:
        store._writer.execute("BEGIN IMMEDIATE")
        T.write(store._writer, [(second, 101, "nginx", "TCP", "10.0.0.2", 443, "192.0.2.4", 60000 + i, DIR_ACCEPT,
                                 1, 1, second * NS + i, second * NS + i) for i in range(3)])  # fmt: skip
        store._writer.execute("COMMIT")
    try:
        async with open_gateway(source) as gateway:
            app = NetspyApp(gateway, interval=0.2, max_rows=4)
            async with app.run_test(size=(120, 35)) as pilot:
                d = app.dashboard
                await wait_for(pilot, lambda: d.connections.row_count == 4, "the latest four rows")
                await wait_for(pilot, lambda: "Connections (latest 4 of 6)" in screen_text(app), "the tab's count")
    finally:
        await source.aclose()
