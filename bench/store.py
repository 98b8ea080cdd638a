"""Store: ingest rate, and the three dashboard/tool queries over 1,000,000 stored events, measured
at the store and through the MCP tool (in-memory client) so the tool overhead shows.

Events: :mod:`bench.synth` (realistic spread over the last hour, decoded by the product decoder).
Queries ask for the whole hour (``duration=3600``: every stored event is in the window) and for
the tools' default minute (``duration=60``).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

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
    store.close()
    return ms


def file_store_path(ctx: Context) -> Path | None:
    p = ctx.shared.get("store_file")
    return p if isinstance(p, Path) and p.exists() else None
