"""Store: ingest rate, and the three dashboard/tool queries over 1,000,000 stored events, measured
at the store and through the MCP tool (in-memory client) so the tool overhead shows.

Events: :mod:`bench.synth` (realistic spread over the last hour, decoded by the product decoder).
Queries ask for the whole hour (``duration=3600``: every stored event is in the window) and for
the tools' default minute (``duration=60``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import synth
from bench.common import Context, Metric, metric
from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.store.sqlite import EventStore
from netspy_tui.telemetry.embedded import EmbeddedSource
from netspy_tui.telemetry.source import EventQuery

NAME = "store"
TARGET_SUMMARY_MS, TARGET_PATTERNS_MS, TARGET_LIST_MS = 20.0, 20.0, 5.0


def fill(store: EventStore, n: int, span: float = 3600.0, seed: int = 1) -> list[float]:
    """Ingest ``n`` synthetic events; returns the ingest rate (events/s) of each ~10% slice."""
    rates: list[float] = []
    slice_n, slice_t = 0, 0.0
    step = max(1, n // 10)
    for batch in synth.event_batches(n, span, seed=seed):
        t0 = time.perf_counter()
        store.add_events(batch)
        slice_t += time.perf_counter() - t0
        slice_n += len(batch)
        if slice_n >= step:
            rates.append(slice_n / slice_t)
            slice_n, slice_t = 0, 0.0
    if slice_n:
        rates.append(slice_n / slice_t)
    return rates


#: a query slower than this gets fewer runs (at least MIN_RUNS)
BUDGET_S, MIN_RUNS = 8.0, 3


def _ms(fn, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    fn()  # warm (page cache, statement cache)
    out: list[float] = []
    spent = 0.0
    while len(out) < repeat and (len(out) < MIN_RUNS or spent < BUDGET_S):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
        spent += out[-1] / 1000
    return out


@contextlib.contextmanager
def no_client_validation() -> Iterator[None]:
    """PROTOTYPE: the MCP client skips its jsonschema re-validation of structured content (the
    gateway validates the same data with pydantic right after)."""
    from mcp.client.session import ClientSession

    original = ClientSession.validate_tool_result

    async def skip(self: Any, name: str, result: Any) -> None:
        return None

    ClientSession.validate_tool_result = skip  # type: ignore[method-assign]
    try:
        yield
    finally:
        ClientSession.validate_tool_result = original  # type: ignore[method-assign]


@contextlib.contextmanager
def covering_index(store: EventStore) -> Iterator[None]:
    """PROTOTYPE: window aggregates read one covering index instead of an index plus the table."""
    from netspy_tui.store import sqlite as store_mod

    with store._write_lock:
        store._writer.execute("CREATE INDEX IF NOT EXISTS bench_cover ON events "
                              "(kind, t, command, destination, protocol, port, outcome, failed, pid)")
    original = store_mod._where

    def where(*args: Any) -> tuple[str, list[Any], str]:
        clause, params, index = original(*args)
        return clause, params, "bench_cover" if index == "events_time" else index

    store_mod._where = where
    try:
        yield
    finally:
        store_mod._where = original
        with store._write_lock:
            store._writer.execute("DROP INDEX bench_cover")


async def _tool_ms(store: EventStore, calls: dict[str, dict[str, object]], repeat: int) -> dict[str, list[float]]:
    source = EmbeddedSource(None, store, reason="bench")
    out: dict[str, list[float]] = {}
    async with open_gateway(source) as gw:
        for name, args in calls.items():
            result = await gw.call(name, args)
            assert not result.is_error, result.text
            times: list[float] = []
            spent = 0.0
            while len(times) < repeat and (len(times) < MIN_RUNS or spent < BUDGET_S):
                t0 = time.perf_counter()
                await gw.call(name, args)
                times.append((time.perf_counter() - t0) * 1000)
                spent += times[-1] / 1000
            out[name] = times
    return out


def run(ctx: Context) -> list[Metric]:
    n = 20_000 if ctx.quick else 1_000_000
    repeat = 3 if ctx.quick else 15
    label = f"{n:,} events"
    ms: list[Metric] = []

    store = EventStore(None, retention_seconds=None, max_rows=None)
    ctx.log(f"store: ingesting {label} (in memory)")
    rates = fill(store, n)
    ms.append(metric(NAME, "ingest, in-memory store (default)", rates, "events/s",
                     note="EventStore.add_events, batches of 4,096 decoded events; samples = 10% slices"))
    if not ctx.quick:
        path = ctx.tmp / "store-1m.sqlite"
        file_store = EventStore(path, retention_seconds=None, max_rows=None)
        ctx.log(f"store: ingesting {label} (file, WAL)")
        frates = fill(file_store, n)
        file_store.close()
        ms.append(metric(NAME, "ingest, file store (--db)", frates, "events/s"))
        ctx.shared["store_file"] = path
        ctx.shared["store_file_events"] = n

    for duration in (3600, 60):
        span = "all stored" if duration == 3600 else "last 60 s"
        direct = {
            "get_network_summary": _ms(lambda d=duration: store.count("connection", None, None, d), repeat),
            "analyze_patterns": _ms(lambda d=duration: store.stats("connection", None, None, d), repeat),
        }
        tools = asyncio.run(_tool_ms(store, {"get_network_summary": {"duration": duration},
                                             "analyze_patterns": {"duration": duration}}, repeat))
        for tool, target in (("get_network_summary", TARGET_SUMMARY_MS), ("analyze_patterns", TARGET_PATTERNS_MS)):
            base = direct[tool]
            ms.append(metric(NAME, f"{tool} store call, {span} ({label})", base, "ms", target=target))
            m = metric(NAME, f"{tool} MCP tool, {span} ({label})", tools[tool], "ms", target=target)
            ms.append(m.set_baseline(metric(NAME, "", base).value, "store"))
    direct_list = _ms(lambda: store.query(EventQuery(kind="connection", limit=100)), repeat)
    tool_list = asyncio.run(_tool_ms(store, {"list_connections": {"max_events": 100}}, repeat))["list_connections"]
    ms.append(metric(NAME, f"list_connections(100) store call ({label})", direct_list, "ms", target=TARGET_LIST_MS))
    m = metric(NAME, f"list_connections(100) MCP tool ({label})", tool_list, "ms", target=TARGET_LIST_MS)
    ms.append(m.set_baseline(metric(NAME, "", direct_list).value, "store"))
    # --- prototypes of proposed changes (files this benchmark does not own) ---------------------
    with no_client_validation():
        proto_list = asyncio.run(_tool_ms(store, {"list_connections": {"max_events": 100}}, repeat))
    ms.append(metric(NAME, "PROTOTYPE list_connections(100) MCP, no client re-validation",
                     proto_list["list_connections"], "ms", target=TARGET_LIST_MS).set_baseline(m.value, "today"))
    ctx.log("store: covering-index prototype")
    today = metric(NAME, "", [x.value for x in ms if x.name.startswith("analyze_patterns store call, all")
                              and x.value is not None] or [0.0]).value
    with covering_index(store):
        cover = _ms(lambda: store.stats("connection", None, None, 3600), repeat)
    ms.append(metric(NAME, f"PROTOTYPE analyze_patterns store call, covering index, all stored ({label})", cover, "ms",
                     target=TARGET_PATTERNS_MS).set_baseline(today, "today"))
    store.close()
    return ms


def file_store_path(ctx: Context) -> Path | None:
    p = ctx.shared.get("store_file")
    return p if isinstance(p, Path) and p.exists() else None
