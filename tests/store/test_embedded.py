"""The embedded source end to end: a collector thread writing the store, async queries reading it."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from netspy_tui.analysis.aggregate import aggregate
from netspy_tui.collector.replay import ReplayCollector
from netspy_tui.config import Settings
from netspy_tui.errors import NoData
from netspy_tui.models import ConnectionEvent, EventQuery, Scope, parse_event, utcnow
from netspy_tui.store import EventStore
from netspy_tui.telemetry.embedded import EmbeddedSource, open_embedded, open_history
from netspy_tui.telemetry.source import TelemetrySource
from tests.factories import BASE_TIME, connection_json, drop_json


async def wait_for(predicate: Callable[[], Awaitable[bool]], limit: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + limit
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {limit} s waiting for {what}")
        await asyncio.sleep(0.02)


def recording(tmp_path: Path, n: int = 120) -> Path:
    lines = []
    for i in range(n):
        when = BASE_TIME + timedelta(milliseconds=250 * i)
        if i % 6 == 0:
            lines.append(drop_json(pid=9, command="nginx", time=when, reason="NETFILTER_DROP"))
        else:
            lines.append(
                connection_json(
                    pid=40 + i % 3,
                    command=["curl", "wget"][i % 2],
                    time=when,
                    port=[443, 80][i % 2],
                    return_code=[0, -111][i % 4 == 1],
                )
            )
    path = tmp_path / "rec.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


async def test_replay_through_the_embedded_source(tmp_path: Path) -> None:
    path = recording(tmp_path)
    collector = ReplayCollector(path, speed=0)
    source = EmbeddedSource(collector, EventStore(), reason="replay requested")
    assert isinstance(source, TelemetrySource)
    await source.start()
    try:
        assert await asyncio.to_thread(collector.wait, 10)
        info = await source.info()
        assert info.label == f"replay of {path} (embedded)"
        assert (info.kind, info.generation, info.collector, info.sampled) == ("embedded", "embedded", "replay", False)
        assert info.healthy and info.detail == "replay requested"
        assert info.events_seen == 120 and info.events_lost == 0 and info.stored_events == 120
        assert info.uptime_seconds is not None and info.uptime_seconds >= 0
        assert await source.programs() == []

        page = await source.query(EventQuery(limit=500))
        assert page.total_count == 100 and len(page.events) == 100
        originals = [parse_event(json.loads(line)) for line in path.read_text().splitlines()]
        assert sorted(e.time - collector.offset for e in page.events) == sorted(
            e.time for e in originals if e.type == "connection"
        )
        # the recording spans 30 s and ends "now": the last minute holds it all
        assert await source.count(Scope("connection", None, None, 60)) == 100
        assert await source.count(Scope("packet_drop", 9, "nginx", 60)) == 20
        stats = await source.stats(Scope("connection", None, None, 60))
        replayed = [e.model_copy(update={"time": e.time + collector.offset}) for e in originals]
        assert stats == aggregate(replayed, Scope("connection", None, None, 60), stats.until)  # type: ignore[arg-type]
        assert [(c.key, c.count) for c in stats.outcomes] == [("unknown", 70), ("refused", 30)]
        assert [(p.command, p.attempts) for p in stats.processes] == [("wget", 60), ("curl", 40)]
    finally:
        await source.aclose()
        await source.aclose()  # idempotent
    assert not collector.running
    info = await source.info()
    assert not info.healthy


async def test_store_failures_are_counted_not_raised(tmp_path: Path) -> None:
    store = EventStore()
    store.close()  # every write now fails with a StoreError
    collector = ReplayCollector(recording(tmp_path, 30), speed=0)
    source = EmbeddedSource(collector, store, reason="test")
    await source.start()
    assert await asyncio.to_thread(collector.wait, 10)
    info = await source.info()
    assert info.events_seen == 30 and info.events_lost == 30
    assert not info.healthy and "store:" in info.detail and "closed" in info.detail
    assert source.store_sink.errors >= 1
    await source.aclose()


async def test_live_procfs_source_with_recording(tmp_path: Path) -> None:
    record = tmp_path / "live.jsonl"
    store = EventStore(tmp_path / "events.db")
    source = await EmbeddedSource.launch("procfs", store, record=record, procfs_interval=0.1)
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    try:
        info = await source.info()
        assert info.label == "procfs sampling (embedded)" and info.collector == "procfs" and info.sampled
        assert info.detail == "procfs sampling: requested"

        async def seen() -> bool:
            page = await source.query(EventQuery(command=None, limit=1000))
            return any(isinstance(e, ConnectionEvent) and e.destination_port == port for e in page.events)

        await wait_for(seen, what="the test's connection in the store")
        lines = [json.loads(line) for line in record.read_text().splitlines()]
        assert any(line["destination_port"] == port and line["sampled"] is True for line in lines)
    finally:
        client.close()
        server.close()
        await source.aclose()


async def test_open_embedded_and_open_history_from_settings(tmp_path: Path) -> None:
    path = recording(tmp_path, 60)
    db = tmp_path / "history.db"
    settings = Settings(replay=path, replay_speed=0, db=db)
    async with open_embedded(settings) as source:
        collector = source.collector
        assert isinstance(collector, ReplayCollector)
        assert await asyncio.to_thread(collector.wait, 10)
        assert (await source.info()).detail == f"replay of {path} as fast as possible"
        live = await source.query(EventQuery(limit=100))
    assert db.is_file() and db.with_name(f"{db.name}-memory").is_file()  # (the memory kept for the next open of --db)
    async with open_history(Settings(db=db)) as history:
        info = await history.info()
        assert info.label == f"history in {db}" and info.collector is None and info.stored_events == 60
        assert (await history.query(EventQuery(limit=100))).events == live.events
        assert (await history.stats(Scope("connection", None, None, 3600))).total == 50
    with pytest.raises(NoData, match="no event history"):
        async with open_history(Settings(db=tmp_path / "absent.db")):
            pass


async def test_queries_do_not_block_the_event_loop(tmp_path: Path) -> None:
    """Stats over a big store run in a worker thread, never on the event loop's (checked by the
    thread that runs them, not by timing)."""
    store = EventStore()
    now = utcnow()
    store.add_events(
        [
            parse_event(
                connection_json(pid=i % 97, command=f"c{i % 13}", port=i % 1000, time=now - timedelta(milliseconds=i))
            )
            for i in range(40_000)
        ]
    )
    source = EmbeddedSource(None, store)
    await source.start()
    ran_in: list[int] = []
    original = store.stats

    def stats(*args: Any, **kwargs: Any) -> Any:
        ran_in.append(threading.get_ident())
        return original(*args, **kwargs)

    store.stats = stats  # type: ignore[method-assign]
    result = await source.stats(Scope("connection", None, None, 3600))
    assert result.total == 40_000
    assert ran_in and threading.get_ident() not in ran_in  # the loop's thread only waited
    await source.aclose()
