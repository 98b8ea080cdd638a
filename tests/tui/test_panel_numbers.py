"""What the pattern panel and the connection table say of a busy window, of a host out of local ports and of
netspy-tui's own DNS questions."""

from __future__ import annotations

from datetime import timedelta

import pytest

from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.tui.app import NetspyApp
from tests.factories import connection
from tests.tui.conftest import Clock, wait_for

pytestmark = pytest.mark.quiet


async def test_a_busy_window_reads_with_separators_and_port_exhaustion_is_its_own_outcome(clock: Clock) -> None:
    source = MemorySource(clock=clock)
    busy = [connection(pid=5, command="storm", ip="10.0.0.2", port=80, time=clock.now - timedelta(seconds=i / 100),
                       outcome="ok") for i in range(1233)]  # fmt: skip
    exhausted = connection(pid=6, command="worker", ip="10.0.0.5", port=6379, time=clock.now, return_code=-99)
    own = connection(pid=7, command="netspy-tui", ip="10.255.255.53", port=53, protocol="UDP", time=clock.now,
                     outcome="ok").model_copy(update={"own_dns_query": True})  # fmt: skip
    source.add_events([*busy, exhausted, own])
    async with open_gateway(source) as gateway:
        app = NetspyApp(gateway, interval=0.2, clock=clock, source_note="test")
        async with app.run_test(size=(160, 45)) as pilot:
            body = app.dashboard.query_one("#patterns-body")
            await wait_for(pilot, lambda: "1,235 attempts in 1m · 1,235.0/min" in str(body.content), "the figures")
            table = app.dashboard.connections
            await wait_for(pilot, lambda: exhausted.id in table.events, "the worker's row")
            cell = table.get_row(exhausted.id)[[c.key for c in table.COLUMNS].index("outcome")]
            assert str(cell).strip() == "no_port"
            assert cell.style == table.get_component_rich_style("outcome--no_port", partial=True)
            # netspy-tui's own reverse-DNS question is marked as such, not shown as the user's traffic
            await wait_for(pilot, lambda: own.id in table.events, "the own DNS row")
            where = table.get_row(own.id)[[c.key for c in table.COLUMNS].index("destination")]
            assert str(where) == "[own DNS] 10.255.255.53:53"
