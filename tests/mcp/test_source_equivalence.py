"""Why the dashboard, serve, MCP and AI suites may run on MemorySource: it answers every data tool
exactly as the embedded source the product runs (collector -> SQLite store -> rollups), given the
same events. This test holds the two equal on the recorded demo, through the real MCP gateway.

MemorySource computes every figure with ``analysis.aggregate`` from the events it holds; the
store keeps rollups and raw rows. If they ever disagree, the suites on the stand-in would test a
product that does not exist: this test fails first.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from netspy_tui.analysis.aggregate import second_of
from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.models import parse_event, utcnow
from netspy_tui.store import EventStore
from netspy_tui.telemetry.embedded import EmbeddedSource
from netspy_tui.telemetry.memory import MemorySource

pytestmark = pytest.mark.quiet

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo.jsonl"
CALLS: list[tuple[str, dict[str, Any]]] = [
    ("get_network_summary", {"duration": 60}),
    ("get_network_summary", {"duration": 3600, "process_name": "curl"}),
    ("list_connections", {"max_events": 50}),
    ("list_connections", {"max_events": 20, "process_name": "nginx"}),
    ("analyze_patterns", {"duration": 60}),
    ("analyze_patterns", {"duration": 3600}),
    ("analyze_patterns", {"duration": 300, "process_name": "curl"}),
    ("get_packet_drop_summary", {"duration": 300}),
    ("list_packet_drops", {"max_events": 30}),
    ("analyze_packet_drops", {"duration": 300}),
    ("list_processes", {"duration": 3600}),
    ("list_processes", {"duration": 60, "kind": "packet_drop"}),
]


def _events() -> list[Any]:
    """The demo recording, moved so that its newest event is 20 s old (well inside every window)."""
    events = [parse_event(json.loads(line)) for line in DEMO.read_text().splitlines() if line.strip()]
    newest = max(e.time for e in events)
    shift = timedelta(seconds=int((utcnow() - timedelta(seconds=20) - newest).total_seconds()))
    return [e.model_copy(update={"time": e.time + shift}) for e in events]


def _comparable(value: Any) -> Any:
    """A tool result without what names the source or the moment of the call."""
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items() if k not in ("source", "query_time", "until")}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


async def test_memory_source_answers_every_data_tool_as_the_store_does(tmp_path: Path) -> None:
    events = _events()
    memory = MemorySource(events)
    store = EventStore(tmp_path / "events.db")
    store.add_events(events)
    embedded = EmbeddedSource(None, store, reason="equivalence")
    await embedded.start()
    memory.started_at = embedded.started_at  # (both started observing now: rates are over the data's span)
    try:
        async with open_gateway(memory) as mem_gw, open_gateway(embedded) as emb_gw:
            for name, args in CALLS:
                for _ in range(5):  # both calls in one wall-clock second: windows are whole seconds
                    before = second_of(utcnow())
                    a = await mem_gw.call(name, args)
                    b = await emb_gw.call(name, args)
                    if second_of(utcnow()) == before:
                        break
                assert not a.is_error and not b.is_error, (name, a.text, b.text)
                assert _comparable(a.data) == _comparable(b.data), (name, args)
                assert a.text == b.text, (name, args)
                assert (
                    a.data.get("count")
                    or a.data.get("total_count")
                    or a.data.get("stats", {}).get("total")
                    or a.data.get("processes")
                ), (name, "the demo must put data in every window asked")
    finally:
        await embedded.aclose()
