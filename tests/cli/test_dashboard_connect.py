"""The dashboard's ``connect`` (issue 17): after the first frame, the source opens while the MCP SDK and the
server's modules load in a thread, then the in-process gateway opens over it."""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager

import pytest

from netspy_tui import cli, runtime
from netspy_tui.config import load_settings
from netspy_tui.telemetry.memory import MemorySource
from tests.factories import connection

pytestmark = pytest.mark.quiet


@pytest.fixture
def settings(monkeypatch, tmp_path):
    monkeypatch.setenv("NETSPY_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setattr(cli.gc, "freeze", lambda: None)  # (the dashboard's process freezes its heap; not pytest's)
    return load_settings({"dns": False})[0]


async def test_the_source_opens_while_the_sdk_loads(monkeypatch, settings):
    source_opening = threading.Event()
    load_sdk = cli._import_gateway_modules

    def imports_waiting_for_the_source() -> None:
        # Run one after the other (imports, then the source), this would wait out its 10 s and fail.
        assert source_opening.wait(10), "the source did not start opening while the SDK loaded"
        load_sdk()

    @asynccontextmanager
    async def open_source(settings, mode):
        assert mode == "live"
        source_opening.set()
        yield MemorySource([connection(pid=7, command="curl", ago=5)], label="test events")

    monkeypatch.setattr(cli, "_import_gateway_modules", imports_waiting_for_the_source)
    monkeypatch.setattr(runtime, "open_source", open_source)
    said: list[str] = []
    async with cli._connect_dashboard(settings, "the data source")(said.append) as (gateway, _):
        result = await gateway.call("get_network_summary", {"duration": 3600})
    assert not result.is_error and "made 1 outbound connection attempt" in result.text
    assert said == ["the data source, the MCP gateway", "the MCP gateway"]


async def test_a_source_that_cannot_open_says_why(monkeypatch, settings):
    @asynccontextmanager
    async def open_source(settings, mode):
        raise cli.NetspyError("no source here")
        yield

    monkeypatch.setattr(runtime, "open_source", open_source)
    with pytest.raises(cli.NetspyError, match="no source here"):
        async with cli._connect_dashboard(settings, "the data source")(lambda what: None):
            pass
