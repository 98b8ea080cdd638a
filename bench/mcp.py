"""MCP: tool-call latency in memory (the app's own gateway) and over stdio (an outside agent's
``netspy-tui mcp`` subprocess), against a direct call of the TelemetrySource methods the tool makes.

Data: 10,000 synthetic events from the last minute. In memory: written into a file store (the
product's default is a scratch file) the way the eBPF collector delivers them — ring records and
their kernel counts through the store's own ``write`` (:func:`bench.synth.batches`). Over stdio:
the server replays a recording of the same events (``--replay``, the product's replay path; a
recording holds built events). The tool is ``get_network_summary`` (one count + the source info:
the cheapest data, so the figure is the MCP path itself); ``server_status`` and
``list_connections`` (20 events) are measured beside it. Each row's note gives the connects the
tool's 60 s window held at the first and the last call (the window slides while it runs).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from mcp import StdioServerParameters
from mcp.client import Client

from bench import synth
from bench.common import PY, Context, Metric, child_env, metric, percentile
from netspy_tui.collector.replay import Recorder
from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.models import Scope
from netspy_tui.store.sqlite import EventStore
from netspy_tui.telemetry.embedded import EmbeddedSource

NAME = "mcp"
TARGET_MEMORY_MS, TARGET_STDIO_MS = 1.0, 3.0
CALLS: dict[str, dict[str, object]] = {
    "get_network_summary": {},
    "server_status": {},
    "list_connections": {"max_events": 20},
}


async def _lat(call, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    for _ in range(min(20, n)):  # warm-up
        await call()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _in_window(result: object) -> int:
    data = getattr(result, "data", None) or getattr(result, "structured_content", None) or {}
    return int(data.get("count", -1))


async def _in_memory(store: EventStore, n: int) -> tuple[dict[str, list[float]], list[int]]:
    """Latencies by call, and the connects in the 60 s window at the first and last summary."""
    source = EmbeddedSource(None, store, reason="bench")
    window = [await source.count(Scope("connection", None, None, 60))]

    async def direct() -> None:  # what get_network_summary asks the source
        await source.count(Scope("connection", None, None, 60))
        await source.info()

    out = {"direct": await _lat(direct, n)}
    async with open_gateway(source) as gw:
        for name, args in CALLS.items():

            async def call(name: str = name, args: dict[str, object] = args) -> None:
                r = await gw.call(name, args)
                assert not r.is_error, r.text

            out[name] = await _lat(call, n)
        window.append(_in_window(await gw.call("get_network_summary", {})))
    return out, window


async def _stdio(recording: Path, events: int, n: int) -> tuple[dict[str, list[float]], list[int]]:
    params = StdioServerParameters(
        command=PY,
        args=["-m", "netspy_tui", "mcp", "--replay", str(recording), "--replay-speed", "0"],
        env=child_env(),
    )
    out: dict[str, list[float]] = {}
    async with Client(params, read_timeout_seconds=60) as client:
        deadline = time.monotonic() + 60
        while True:  # the replay loads the store on the server's collector thread
            status = await client.call_tool("server_status", {})
            stored = (status.structured_content or {}).get("source", {}).get("stored_events") or 0
            if stored >= events:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the stdio server stored only {stored} of {events} events in 60 s")
            await asyncio.sleep(0.1)
        window = [_in_window(await client.call_tool("get_network_summary", {}))]
        for name, args in CALLS.items():

            async def call(name: str = name, args: dict[str, object] = args) -> None:
                r = await client.call_tool(name, args)
                assert not r.is_error, r.content

            out[name] = await _lat(call, n)
        window.append(_in_window(await client.call_tool("get_network_summary", {})))
    return out, window


def _row(
    area_name: str, samples: list[float], target: float | None, base: float | None, label: str, window: list[int]
) -> Metric:
    m = metric(NAME, area_name, samples, "ms", target=target)
    m.note = f"p95 {percentile(samples, 0.95):.3f} ms; 60 s window: {window[0]:,} -> {window[-1]:,} connects"
    if base is not None:
        m.set_baseline(base, label)
    return m


def run(ctx: Context) -> list[Metric]:
    events = 2_000 if ctx.quick else 10_000
    n = 50 if ctx.quick else 500
    db = ctx.tmp / "mcp.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    store = EventStore(db, retention_seconds=None, max_rows=None)
    store.write(list(synth.batches(events, 60, seed=2)))  # the product path: records + kernel counts
    # The stdio server replays a recording, and a recording holds built events (JSON lines), so the
    # same data (same seed) is made as events for the file only; no store is filled from them here.
    recording = ctx.tmp / "mcp-recording.jsonl"
    with Recorder(lambda batch: None, recording) as rec:
        for batch in synth.event_batches(events, 60, seed=2):
            rec(batch)
    mem, window = asyncio.run(_in_memory(store, n))
    store.close()
    base = metric(NAME, "", mem["direct"]).value
    ms = [_row("direct TelemetrySource calls (count + info), p50", mem["direct"], None, None, "", window)]
    for name in CALLS:
        target = TARGET_MEMORY_MS if name == "get_network_summary" else None
        ms.append(_row(f"{name} in memory, p50", mem[name], target, base, "direct", window))
    ctx.log("mcp: stdio server subprocess")
    stdio, window = asyncio.run(_stdio(recording, events, n))
    for name in CALLS:
        target = TARGET_STDIO_MS if name == "get_network_summary" else None
        ms.append(_row(f"{name} over stdio, p50", stdio[name], target, base, "direct", window))
    return ms
