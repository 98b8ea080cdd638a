"""Following ``list_connections``' own paging hint in a real MCP session reaches the events it says are left."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from mcp.client import Client

from netspy_tui.mcp_tools.server import create_server
from netspy_tui.store.sqlite import EventStore
from netspy_tui.telemetry.embedded import EmbeddedSource
from tests.factories import connection

NOW = datetime.now(UTC).replace(microsecond=0)


async def test_the_hint_names_the_argument_that_reaches_the_older_events() -> None:
    store = EventStore(None)
    store.add_events([connection(pid=n, command="curl", time=NOW - timedelta(seconds=n)) for n in range(1, 6)])
    source = EmbeddedSource(None, store)
    try:
        async with Client(create_server(source)) as c:
            first = await c.call_tool("list_connections", {"max_events": 2})
            text = first.content[0].text  # type: ignore[union-attr]
            hint = re.search(r"\(3 more, older than those shown: .*pass (\w+)=<time of the oldest event shown>", text)
            assert hint is not None, text
            shown = first.structured_content["events"]  # type: ignore[index]
            assert [e["pid"] for e in shown] == [1, 2]
            rest = await c.call_tool("list_connections", {"max_events": 10, hint.group(1): shown[-1]["time"]})
            pids = [e["pid"] for e in rest.structured_content["events"]]  # type: ignore[index]
            assert pids == [2, 3, 4, 5]  # the oldest shown again, then the three the hint counted
    finally:
        await source.aclose()
