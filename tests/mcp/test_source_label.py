"""The tools that only name their source (summaries, patterns, processes, traffic, latency) read this host's
store's label without asking the store for its info (a thread hop and two queries a call): the name they give
must still be server_status's, for a live collector and for a history file, through a real MCP session."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from netspy_tui.collector.replay import ReplayCollector
from netspy_tui.config import Settings
from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.telemetry.embedded import open_embedded, open_history
from netspy_tui.telemetry.source import TelemetrySource
from tests.factories import connection_json

pytestmark = pytest.mark.quiet

LABEL_ONLY = ("get_network_summary", "get_packet_drop_summary", "analyze_patterns", "analyze_packet_drops",
              "list_processes", "get_traffic", "get_connect_latency")  # fmt: skip


async def _sources_named(source: TelemetrySource) -> set[str]:
    async with open_gateway(source) as gw:
        status = await gw.call("server_status", {})
        assert not status.is_error and status.data is not None
        named = {status.data["source"]["label"]}
        for tool in LABEL_ONLY:
            result = await gw.call(tool, {"duration": 3600})
            assert not result.is_error and result.data is not None, result.text
            named.add(result.data["source"])
    return named


async def test_label_only_tools_name_the_source_as_server_status(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    path.write_text("".join(json.dumps(connection_json(pid=7, command="curl", ago=5)) + "\n" for _ in range(3)))
    db = tmp_path / "history.db"
    async with open_embedded(Settings(replay=path, replay_speed=0, db=db)) as live:
        assert isinstance(live.collector, ReplayCollector) and await asyncio.to_thread(live.collector.wait, 10)
        assert await _sources_named(live) == {f"replay of {path} (embedded)"}
    async with open_history(Settings(db=db)) as history:
        assert await _sources_named(history) == {f"history in {db}"}
