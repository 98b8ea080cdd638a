"""Counts and rates in the one-shot commands' text have thousands separators and the right plural; ``--json``
keeps them numbers."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from netspy_tui.serve import BackgroundServer, create_app
from netspy_tui.store import rollups as R
from netspy_tui.store.sqlite import EventStore
from netspy_tui.telemetry.embedded import EmbeddedSource
from tests.factories import connection


def test_counts_and_rates_read_with_thousands_separators(run_cli):
    store = EventStore(None)
    at = datetime.now(UTC) - timedelta(seconds=5)
    store.add_events([connection(pid=7, command="storm", ip="127.0.0.1", port=18080, time=at)])
    many = [connection(pid=7, command="storm", ip="127.0.0.1", port=18080, time=at) for _ in range(1233)]
    store.add_rows([], R.rows_from_events(many))  # counted (a storm's raw events shed)
    source = EmbeddedSource(None, store)
    try:
        with BackgroundServer(create_app(source)) as srv:
            out = {tool: run_cli("--server", srv.url, "--tool", tool, "--duration", "60")
                   for tool in ("get_network_summary", "analyze_patterns", "list_processes")}  # fmt: skip
            data = json.loads(run_cli("--server", srv.url, "--tool", "analyze_patterns", "--json").stdout)["data"]
    finally:
        asyncio.run(source.aclose())
    assert all(o.returncode == 0 for o in out.values()), {t: o.stderr for t, o in out.items()}
    made = "All processes made 1,234 outbound connection attempts over the last 60 seconds"
    assert out["get_network_summary"].stdout.startswith(made)
    patterns = out["analyze_patterns"].stdout
    assert f"{made} (1,234.0 per minute)." in patterns and "Ports: 18080 1,234\nOutcomes: unknown 1,234 " in patterns, (
        patterns
    )
    assert "1,234 attempts" in out["list_processes"].stdout and "1 destination " in out["list_processes"].stdout
    assert data["stats"]["total"] == 1234 and data["rate_per_minute"] == 1234.0  # (numbers, not text)
