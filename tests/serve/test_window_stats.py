"""``GET /api/window-stats``: a netspy-tui server answers a window's figures from its store's exact
counts, so a dashboard over HTTP shows every event of a busy window, not the newest the client
fetched; the client asks a server without the path once, then aggregates events as before."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from netspy_tui.models import Scope
from netspy_tui.serve import BackgroundServer, create_app
from netspy_tui.store.sqlite import EventStore
from netspy_tui.telemetry import client as client_module
from netspy_tui.telemetry.client import HttpSource
from netspy_tui.telemetry.embedded import EmbeddedSource
from tests.factories import connection, connection_json, drop
from tests.fake_ebpf_server import FakeEbpfServer
from tests.serve.conftest import ProgramSource, sample_events


def _busy_store(path: Path) -> EventStore:
    """300 connects of 3 processes to 3 destinations with 2 outcomes, and 40 drops, in the last 50 s."""
    store = EventStore(path, retention_seconds=None, max_rows=None)
    events = [
        connection(pid=100 + i % 3, command=("curl", "wget", "nginx")[i % 3], ip=f"10.0.0.{i % 3 + 1}",
                   port=443, ago=1 + i / 6, **({"return_code": -111} if i % 5 == 0 else {"outcome": "ok"}))
        for i in range(300)
    ] + [drop(pid=400, command="nginx", ago=2 + i) for i in range(40)]  # fmt: skip
    store.add_events(events)
    return store


async def test_a_busy_window_is_answered_exactly_over_http(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "STATS_FETCH_LIMIT", 50)  # what the client would fetch: fewer than held
    store = _busy_store(tmp_path / "events.sqlite3")
    held = EmbeddedSource(None, store, reason="test")
    try:
        with BackgroundServer(create_app(held)) as srv:
            http = HttpSource(srv.url, retries=0)
            try:
                for scope in (Scope("connection", window=60), Scope("connection", None, "wget", 60),
                              Scope("packet_drop", window=60)):  # fmt: skip
                    served = await http.stats(scope, top_n=5, buckets=12)
                    direct = store.stats(scope, top_n=5, buckets=12, now=served.until)  # the same window's edges
                    assert served.model_dump() == direct.model_dump(), scope
                assert (await http.stats(Scope("connection", window=60))).total == 300
                outcomes = {c.key: c.count for c in (await http.stats(Scope("connection", window=60))).outcomes}
                assert outcomes == {"ok": 240, "refused": 60}  # all 300, not the newest 50
            finally:
                await http.aclose()
    finally:
        store.close()


async def test_parameters_are_checked_and_a_server_without_the_path_is_asked_once() -> None:
    with BackgroundServer(create_app(ProgramSource(sample_events()))) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=5) as c:
            for params, word in (({"type": "flows"}, "type"), ({"top_n": 1001}, "top_n"), ({"buckets": "x"}, "buckets"),
                                 ({"duration_seconds": -1}, "duration_seconds")):  # fmt: skip
                resp = await c.get("/api/window-stats", params=params)
                assert resp.status_code == 400 and word in resp.text, (params, resp.text)
    with FakeEbpfServer("current", events=[connection_json(ago=5), connection_json(ago=6)]) as fake:
        http = HttpSource(fake.url, retries=0)  # an ebpf-server: no such path
        try:
            for _ in range(3):
                assert (await http.stats(Scope("connection", window=60))).total == 2
        finally:
            await http.aclose()
        windows = [r for r in fake.requests_to("/api/events") if "since" in r.query]  # (not the generation probe)
        assert len(fake.requests_to("/api/window-stats")) == 1 and len(windows) == 3
