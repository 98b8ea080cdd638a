"""A dashboard refresh over HTTP (``dashboard_snapshot`` through the MCP pair, an HttpSource on a real ``serve`` on
127.0.0.1): the window's losses, which the connection and drop patterns and the process ranking each carry, are
asked of the server once a refresh, not once a part, and every part still carries them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.serve import BackgroundServer, create_app
from netspy_tui.telemetry.client import HttpSource
from tests.cli.test_losses_over_http import shed_source


class _Counting:
    """The served app, with the path of every HTTP request it is asked."""

    def __init__(self, app: Any) -> None:
        self.app, self.paths = app, []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)


@pytest.fixture
def served() -> Iterator[tuple[str, _Counting]]:
    source = shed_source()  # (44 raw events shed in the window)
    app = _Counting(create_app(source))
    try:
        with BackgroundServer(app) as srv:
            yield srv.url, app
    finally:
        asyncio.run(source.aclose())


async def test_one_refresh_asks_the_windows_losses_once_and_each_part_carries_them(served) -> None:
    url, app = served
    http = HttpSource(url, retries=0)
    try:
        async with open_gateway(http) as gateway:
            for _ in range(2):  # (the second refresh asks again: nothing is kept from one call to the next)
                before = len(app.paths)
                snap = await gateway.snapshot(duration=600, parts=["patterns", "drop_patterns", "processes"])
                asked = app.paths[before:]
                assert asked.count("/api/losses") == 1, asked
                for part in (snap.patterns, snap.drop_patterns, snap.processes):
                    assert part is not None and part.losses == {"shed": 44} and part.counts_exact
            # (a tool on its own asks as before)
            before = len(app.paths)
            assert (await gateway.patterns(duration=600)).losses == {"shed": 44}
            assert app.paths[before:].count("/api/losses") == 1
    finally:
        await http.aclose()
