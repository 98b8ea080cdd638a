"""Bytes in the pattern panel: rx and tx rate sparklines of the subject (the whole host, or the focused
process), with the latest rate, the peak and the retransmits, as the user sees them at 120x35 and 80x24.

The bytes are real rows of the event store the eBPF collector's writer fills (tests/tui/test_traffic_view.py's
seed), read through the embedded source and the in-process MCP gateway (dashboard_snapshot's recent_bytes
part: get_traffic over the last two seconds). Each poll samples the
last two seconds, so a test writes its bytes at the current second and makes the poll happen (a connection
event: the store notifies the dashboard) until a poll has seen them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Label, Sparkline

from netspy_tui.collector.base import DIR_RETRANS, DIR_RX, DIR_TX
from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.store import traffic as T
from netspy_tui.store.sqlite import EventStore
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.tui.app import NetspyApp
from netspy_tui.tui.widgets.patterns import PatternsPanel
from tests.factories import connection
from tests.tui.conftest import Clock, wait_for
from tests.tui.scenes import Polled
from tests.tui.screen_text import screen_text
from tests.tui.test_key_repaint import layout_requests
from tests.tui.test_traffic_view import NS, dashboard

pytestmark = pytest.mark.quiet

CURL_RX = 4_000_000  # 2.0 MB/s over the 2 s sampled
NGINX_TX = 2_000_000  # 1.0 MB/s


def write_bytes(store: EventStore, pid: int, command: str, rows: list[tuple[int, int]]) -> None:
    """``rows`` of (direction, bytes) for one connection of ``command`` at the current second, then a connect
    (the store tells the dashboard something changed: it polls)."""
    now = datetime.now(UTC)
    s = int(now.timestamp())
    batch: list[T.Row] = [
        (s, pid, command, "TCP", "10.0.0.2", 40000 + pid, "10.0.0.7", 443, way, n, 1, s * NS, s * NS) for way, n in rows
    ]
    with store._write_lock:  # the writer thread's transaction, without a collector (as the traffic view's seed)
        store._writer.execute("BEGIN IMMEDIATE")
        T.write(store._writer, batch)
        store._writer.execute("COMMIT")
    store.add_events(
        [connection(pid=pid, command=command, ip="10.0.0.7", port=443, time=now - timedelta(seconds=0.01))]
    )


def label(app: NetspyApp, way: str) -> str:
    return str(app.dashboard.query_one(f"#{way}-label", Label).render())


async def until_seen(pilot: Pilot[Any], app: NetspyApp, store: EventStore, want: str, **kw: Any) -> None:
    """Write the bytes again until a poll has sampled them (a poll a second late samples other seconds)."""
    for _ in range(20):
        write_bytes(store, **kw)
        try:
            await wait_for(pilot, lambda: want in label(app, "rx") + label(app, "tx"), want, limit=3)
            return
        except AssertionError:
            continue
    raise AssertionError(f"no poll sampled {want}: {label(app, 'rx')} / {label(app, 'tx')}")


@pytest.mark.parametrize("size", [(120, 35), (80, 24)])
async def test_rx_and_tx_rates_show_as_sparklines_for_the_host_then_the_focused_process(size: tuple[int, int]) -> None:
    async with dashboard(size) as (app, pilot, store):
        screen = app.dashboard
        if size[0] < 140:
            await pilot.press("p")  # below 140 columns the pattern panel takes the tables' place
        panel = screen.query_one(PatternsPanel)
        await wait_for(pilot, lambda: panel.region.height > 0, "the pattern panel on screen")
        rows = {"pid": 101, "command": "nginx", "rows": [(DIR_TX, NGINX_TX), (DIR_RETRANS, 3)]}
        await until_seen(pilot, app, store, "peak 1.0 MB/s", **rows)
        text = screen_text(app)
        assert "Tx " in text and "peak 1.0 MB/s" in text and "retransmits" in text, text
        assert screen.query_one("#tx-rate", Sparkline).display
        assert max(screen.query_one("#tx-rate", Sparkline).data or [0]) == pytest.approx(NGINX_TX / 2)
        assert len(screen.recent_bytes) >= 1

        # focus curl: the sparklines start again, with curl's bytes only; their lines stay on screen (emptied until
        # curl's first sample), not hidden and shown again: no layout pass of the screen for them on the key
        layouts = [layout_requests(screen.query_one(f"#{w}", Label if "label" in w else Sparkline))
                   for w in ("rx-label", "rx-rate", "tx-label", "tx-rate")]  # fmt: skip
        await pilot.press("slash", *"curl", "enter")
        await wait_for(pilot, lambda: screen.subject.command == "curl", "curl focused")
        await wait_for(pilot, lambda: "peak 1.0 MB/s" not in label(app, "tx"), "nginx's bytes gone")
        await until_seen(pilot, app, store, "peak 2.0 MB/s", pid=202, command="curl", rows=[(DIR_RX, CURL_RX)])
        assert "Rx " in label(app, "rx") and "peak 2.0 MB/s" in label(app, "rx")
        assert max(screen.query_one("#tx-rate", Sparkline).data or [0]) < NGINX_TX / 2
        assert all(layouts) and not any(any(requests) for requests in layouts)


async def test_a_source_that_counts_no_bytes_shows_no_byte_sparklines_and_stops_asking(clock: Clock) -> None:
    asked: list[bool] = []
    source = Polled(MemorySource(clock=clock))  # (polled on the timer: a remote server's figures)
    async with open_gateway(source) as gateway:  # type: ignore[arg-type]
        snapshot = gateway.snapshot

        async def spy(*args: Any, **kwargs: Any) -> Any:
            asked.append("recent_bytes" in (kwargs.get("parts") or []))
            return await snapshot(*args, **kwargs)

        gateway.snapshot = spy  # type: ignore[method-assign]
        app = NetspyApp(gateway, interval=0.2, clock=clock, source_note="test")
        async with app.run_test(size=(160, 45)) as pilot:
            await wait_for(pilot, lambda: app.polls >= 3, "three polls")
            assert asked[0] and not any(asked[1:])  # asked once: the source said it does not count bytes
            assert not any(w.display for w in app.dashboard.query(".bytes"))
            assert "retransmit" not in screen_text(app)
