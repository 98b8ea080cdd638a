"""Store, on the product path: what the eBPF collector hands the store (ring records and the
kernel's counts, :mod:`bench.synth`) written by the store's own ``write`` into a file store (the
product's default is a scratch file), then the tools' queries over windows that hold the data.

Data: 1,000,000 events with a realistic spread over the hour before *now*, so the last hour holds
all of them and the last minute about 1/60th (each row says how many the window held). Every
query is computed from scratch from the rollups (there is no answer cache); "after reopening" is a
fresh store opened on the same file, as a restarted dashboard or a one-shot ``--tool --db`` sees it.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import numpy as np

from bench import synth
from bench.common import Context, Metric, metric
from netspy_tui.collector.base import Batch
from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.models import EventQuery, Scope
from netspy_tui.store.sqlite import EventStore
from netspy_tui.telemetry.embedded import EmbeddedSource

NAME = "store"
TARGET_SUMMARY_MS, TARGET_PATTERNS_MS, TARGET_LIST_MS, TARGET_DAY_MS = 20.0, 20.0, 5.0, 50.0
#: a query slower than this gets fewer runs (at least MIN_RUNS)
BUDGET_S, MIN_RUNS = 8.0, 3
#: times the file is closed and reopened for the first calls after reopening (their median is the figure)
REOPENS = 3


def fill(store: EventStore, n: int, span: float = 3600.0, seed: int = 1) -> tuple[list[float], float]:
    """Write ``n`` events (records + counts, as the collector delivers them); returns the ingest
    rate (events/s) of each ~10% slice and the CPU seconds per 100k events."""
    rates: list[float] = []
    slice_n, slice_t = 0, 0.0
    step = max(1, n // 10)
    cpu0 = time.thread_time()
    for batch in synth.batches(n, span, seed=seed):
        t0 = time.perf_counter()
        store.write([batch])
        slice_t += time.perf_counter() - t0
        slice_n += len(batch.records)
        if slice_n >= step:
            rates.append(slice_n / slice_t)
            slice_n, slice_t = 0, 0.0
    if slice_n:
        rates.append(slice_n / slice_t)
    return rates, (time.thread_time() - cpu0) / n * 1e5


def _ms(fn, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
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
            times: list[float] = []
            spent = 0.0
            while len(times) < repeat and (len(times) < MIN_RUNS or spent < BUDGET_S):
                t0 = time.perf_counter()
                result = await gw.call(name, args)
                times.append((time.perf_counter() - t0) * 1000)
                assert not result.is_error, result.text
                spent += times[-1] / 1000
            out[name] = times
    return out


def _queries(store: EventStore, duration: int) -> dict[str, object]:
    return {
        "get_network_summary": lambda: store.count(Scope("connection", None, None, duration)),
        "analyze_patterns": lambda: store.stats(Scope("connection", None, None, duration)),
        "list_processes": lambda: store.stats(Scope("connection", None, None, duration), top_n=1, buckets=1),
    }


def run(ctx: Context) -> list[Metric]:
    n = 20_000 if ctx.quick else 1_000_000
    repeat = 3 if ctx.quick else 15
    label = f"{n:,} events in the last hour"
    ms: list[Metric] = []
    path = ctx.tmp / "store-1m.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    store = EventStore(path, retention_seconds=None, max_rows=None)
    ctx.log(f"store: writing {label} (file store, records + counts as the collector delivers them)")
    rates, cpu = fill(store, n)
    ms.append(
        metric(
            NAME,
            "ingest, file store, records + kernel counts (the writer's work)",
            rates,
            "events/s",
            note=f"batches of 4,096; samples = 10% slices; {cpu:.2f} s CPU per 100k events",
        )
    )
    size = sum(Path(f"{path}{s}").stat().st_size for s in ("", "-wal") if Path(f"{path}{s}").exists())
    ms.append(metric(NAME, "store bytes per raw event (file + WAL, rollups and indexes included)", [size / n], "bytes"))
    # after reopening, each first call is one sample and the machine's noise is of its size: the file is closed and
    # reopened REOPENS times, and the first calls' figure is their median (the medians of repeated calls: the last)
    for phase, rounds in (("after writing", 1), ("after reopening the file", REOPENS)):
        firsts: dict[tuple[int, str], list[float]] = {}
        opens: list[float] = []
        loads: list[float] = []
        for round_ in range(rounds):
            if phase != "after writing":
                store.close()
                t0 = time.perf_counter()
                store = EventStore(path, retention_seconds=None, max_rows=None)
                opens.append((time.perf_counter() - t0) * 1000)
            for duration in (60, 3600):
                # The first calls come before anything else asks the store about this window: after reopening, a
                # window that reaches back before what is in memory waits for the background load (first call).
                for tool, fn in _queries(store, duration).items():
                    firsts.setdefault((duration, tool), []).extend(_ms(fn, 1))
                if phase != "after writing" and duration == 3600:
                    store._loaded.wait(600)
                    loads.append((time.perf_counter() - t0) * 1000)
                if round_ < rounds - 1:
                    continue
                if phase != "after writing" and duration == 60:
                    ms.append(
                        metric(
                            NAME,
                            "open the file store (starts loading the last hour of rollups in the background)",
                            opens,
                            "ms",
                        )
                    )
                if loads and duration == 3600:
                    ms.append(
                        metric(
                            NAME,
                            "reopened: the last hour's rollups in memory, after open",
                            loads,
                            "ms",
                            note="the background load; windows within it wait",
                        )
                    )
                rows = store.count(Scope("connection", None, None, duration))
                span = f"last {duration} s, {rows:,} connects in the window ({phase})"
                for tool, fn in _queries(store, duration).items():
                    first = firsts[duration, tool]  # the first calls: nothing of them was computed before
                    target = TARGET_SUMMARY_MS if tool == "get_network_summary" else TARGET_PATTERNS_MS
                    ms.append(metric(NAME, f"{tool} store call, first, {span}", first, "ms", target=target))
                    ms.append(metric(NAME, f"{tool} store call, median, {span}", _ms(fn, repeat), "ms", target=target))
    tools = asyncio.run(_tool_ms(store, {"get_network_summary": {"duration": 60}, "analyze_patterns": {"duration": 60},
                                         "list_processes": {"duration": 60}}, repeat))  # fmt: skip
    for tool, times in tools.items():
        ms.append(metric(NAME, f"{tool} MCP tool (in-memory client), last 60 s", times, "ms"))
    direct_list = _ms(lambda: store.query(EventQuery(kind="connection", limit=100)), repeat)
    tool_list = asyncio.run(_tool_ms(store, {"list_connections": {"max_events": 100}}, repeat))["list_connections"]
    ms.append(metric(NAME, f"list_connections(100) store call ({label})", direct_list, "ms", target=TARGET_LIST_MS))
    m = metric(NAME, f"list_connections(100) MCP tool ({label})", tool_list, "ms", target=TARGET_LIST_MS)
    ms.append(m.set_baseline(metric(NAME, "", direct_list).value, "store"))
    store.close()
    ms.extend(run_day(ctx))
    ctx.shared["store_file"] = path
    ctx.shared["store_file_events"] = n
    ctx.shared["store_rss_note"] = f"pid {os.getpid()}"
    return ms


def day_of_counts(store: EventStore, per_second: int, seconds: int, seed: int = 3) -> tuple[int, float]:
    """``seconds`` (ending now) of the kernel's counts at ``per_second`` connects a second from a
    host profile (10 commands, 100 destinations: :func:`_host_records`), written by the store's
    ``write`` an hour at a time (no raw records: counts only); returns (connects, writer CPU s)."""
    rng = np.random.default_rng(seed)
    end = time.time_ns()
    total = 0
    cpu0 = time.thread_time()
    codec = synth.codec()
    for hour_end in range(0, seconds, 3600):
        span = min(3600, seconds - hour_end)
        # a tenth of the connects as records, each counted 10 times: the keys a busy host repeats
        recs = _host_records(per_second // 10 * span, span, rng, end - hour_end * 1_000_000_000)
        for i in range(0, len(recs), 60 * per_second // 10):
            keys, values = synth.counts(recs[i : i + 60 * per_second // 10])
            values["n"] *= 10
            total += int(values["n"].sum())
            store.write([Batch(counts=(keys, values), codec=codec)])
    return total, time.thread_time() - cpu0


def _host_records(n: int, span: float, rng: np.random.Generator, now_ns: int) -> np.ndarray:
    """:func:`synth.records` narrowed to a host's working set: 10 commands, 100 destinations, each
    on one of 4 service ports (the outcome mix and IPv6 share of :func:`synth.records`)."""
    recs = synth.records(n, span, rng, drop_share=0.0, now_wall_ns=now_ns)
    pick = rng.integers(0, 10, n)
    recs["comm"] = np.array([c.encode() for c in synth.COMMANDS[:10]], "S16")[pick]
    recs["pid"] = 1000 + pick
    recs["addr"][:, 2] %= 10
    recs["addr"][:, 3] %= 10
    recs["port"] = synth.PORTS[(recs["addr"][:, 2].astype(int) * 10 + recs["addr"][:, 3]) % 4]  # a service's port
    return recs


def run_day(ctx: Context) -> list[Metric]:
    """Windows over a day of rollups (counts only) at 1,000 connects/s, a reopened file store."""
    per_second = 1000
    seconds = 3600 if ctx.quick else 24 * 3600
    path = ctx.tmp / "store-day.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    store = EventStore(path, retention_seconds=None, max_rows=None)
    ctx.log(f"store: writing {seconds // 3600} h of counts at {per_second:,} connects/s (host profile)")
    made, cpu = day_of_counts(store, per_second, seconds)
    store.close()
    store = EventStore(path, retention_seconds=None, max_rows=None)
    store._loaded.wait(120)  # (the last hour in memory, as a restarted dashboard has it after a few seconds)
    window = seconds - 60
    held = store.count(Scope("connection", window=window))
    label = f"last {window // 3600} h {window % 3600 // 60} min, {held:,} connects"
    ms: list[Metric] = []
    size = sum(Path(f"{path}{s}").stat().st_size for s in ("", "-wal") if Path(f"{path}{s}").exists())
    for tool, fn in _queries(store, window).items():
        ms.append(metric(NAME, f"{tool} store call, first, {label} (counts only, host profile)", _ms(fn, 1), "ms",
                         target=TARGET_DAY_MS,
                         note=f"{made:,} connects written in {cpu:.0f} s CPU; {size / 2**20:.0f} MB"))  # fmt: skip
        ms.append(metric(NAME, f"{tool} store call, median, {label} (counts only, host profile)", _ms(fn, 5), "ms",
                         target=TARGET_DAY_MS))  # fmt: skip
    store.close()
    return ms


def file_store_path(ctx: Context) -> Path | None:
    p = ctx.shared.get("store_file")
    return p if isinstance(p, Path) and p.exists() else None
