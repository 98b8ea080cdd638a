"""Names: what reverse DNS costs a dashboard refresh, and how the resolver asks (issue "Names").

Two dashboards run headless side by side in this process (``App.run_test``), each reading the same
embedded file store through its own real in-process MCP gateway, as :mod:`bench.dashboard` does: one
with names off (the resolver of ``--no-dns``), one with names on. The window holds 10,000 events
whose connects go to 2,000 distinct destinations (every one of :data:`bench.synth.DESTINATIONS`).
Names come from a DNS server this bench starts on 127.0.0.1 (``tests/names/dns_server.py``: real
UDP, PTR answers for nine destinations in ten, NXDOMAIN for the others); nothing leaves the machine.

One refresh is ``Poller.poll()`` (one ``dashboard_snapshot`` call) plus ``apply_snapshot`` (the
table updates) after 100 new events, as in :mod:`bench.dashboard`. After each batch of new events
both dashboards refresh, one after the other (which one first alternates), so each pair of
refreshes sees the same data and the same load of a busy machine: the figure is the median of the
differences (names on - names off), target at most 5 ms. A full garbage collection runs before
each timed refresh, so that one does not land in a random sample.

Also measured:

* a refresh while the names arrive: a dashboard shows its rows with their addresses first, the DNS
  server is let go, and the next refreshes name the rows shown (the poller asks about at most
  ``NAMES_PER_POLL`` addresses a refresh);
* the resolver on a cold cache of the 2,000 addresses: questions in flight at once (at most the
  configured concurrency) and the time to a name or a known failure for all of them; and the DNS
  questions asked during the refreshes with the cache warm (none).
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from contextlib import AsyncExitStack
from typing import Any

from bench import synth
from bench.common import Context, Metric, metric
from bench.dashboard import _wait  # (the same wait as the dashboard area's)

NAME = "names"
TARGET_EXTRA_MS = 5.0
CONCURRENCY = 8  # the resolver's default
SIZE = (160, 45)
NEW_PER_REFRESH = 100


def _names() -> dict[str, str]:
    """address -> host name the DNS server answers (nine destinations in ten; the tenth has no name)."""
    return {synth.destination_address(i): f"host-{i}.bench.test" for i in range(synth.DESTINATIONS) if i % 10 != 7}


def _resolver(port: int, **kw: Any) -> Any:
    from netspy_tui.names import NameResolver

    return NameResolver(nameservers=["127.0.0.1"], port=port, hosts_path=None, concurrency=CONCURRENCY, **kw)


class _Dashboard:
    """One headless dashboard on the bench's store, its MCP server naming destinations with ``resolver``."""

    def __init__(self, app: Any, pilot: Any) -> None:
        self.app, self.pilot = app, pilot
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.apply: list[float] = []

    @classmethod
    async def open(cls, stack: AsyncExitStack, source: Any, resolver: Any) -> _Dashboard:
        from netspy_tui.mcp_tools.gateway import open_gateway
        from netspy_tui.tui.app import NetspyApp

        gw = await stack.enter_async_context(open_gateway(source, names=resolver))
        app = NetspyApp(gw, interval=3600, window=120, source_note="bench")
        pilot = await stack.enter_async_context(app.run_test(size=SIZE))
        await _wait(pilot, lambda: app.dashboard.renders >= 1, "the first render")
        return cls(app, pilot)

    @property
    def rows(self) -> list[Any]:
        return list(self.app.dashboard.connections.events.values())

    async def refresh(self, timed: bool = True) -> None:
        # Two apps in one process: the calls made from here run as this app's (Textual keeps the running app in
        # a context variable, which run_test set for the app opened last).
        with self.app._context():
            gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            snap = await self.app.poller.poll()
            t1 = time.perf_counter()
            self.app.dashboard.apply_snapshot(snap)
            c2, t2 = time.process_time(), time.perf_counter()
            await self.pilot.pause()
        if timed:
            self.wall.append((t2 - t0) * 1000)
            self.cpu.append((c2 - c0) * 1000)
            self.apply.append((t2 - t1) * 1000)


async def _run(ctx: Context, window_events: int, pairs: int) -> dict[str, Any]:
    from netspy_tui.models import EventQuery
    from netspy_tui.names import NameResolver
    from netspy_tui.store.sqlite import EventStore
    from netspy_tui.telemetry.embedded import EmbeddedSource
    from tests.names.dns_server import PtrServer

    store = EventStore(ctx.tmp / "names-refresh.sqlite", retention_seconds=None, max_rows=None)
    store.write(list(synth.batches(window_events, 55, seed=4, every_destination=True)))
    seed = iter(range(100, 10**6))

    def write_new() -> None:
        store.write(list(synth.batches(NEW_PER_REFRESH, 0.5, seed=next(seed), every_destination=True)))

    page = store.query(EventQuery(kind="connection", limit=10**6))
    res: dict[str, Any] = {"destinations": len({getattr(e, "destination_ip", "") for e in page.events})}
    source = EmbeddedSource(None, store, reason="bench")
    addresses = [synth.destination_address(i) for i in range(synth.DESTINATIONS)]
    cold_count = 200 if ctx.quick else synth.DESTINATIONS
    with PtrServer(_names(), delay=0.002) as server:
        # the resolver on a cold cache: every destination at once
        warm = _resolver(server.port, timeout=5.0)
        t0 = time.perf_counter()
        got = warm.resolve(addresses[:cold_count], wait=120)
        res["cold_seconds"] = time.perf_counter() - t0
        stats = warm.stats()
        res["cold"] = {
            "named": len(got),
            "queries": stats.queries,
            "failed": stats.failed,
            "in_flight_max_resolver": stats.in_flight_max,
            "in_flight_max_server": server.in_flight_max,
            "server_questions": server.count,
        }
        warm.resolve(addresses, wait=120)  # (quick: the rest)
        # names off and names on (every answer cached), refreshed in pairs
        asked = server.count
        async with AsyncExitStack() as stack:
            off = await _Dashboard.open(stack, source, NameResolver(enabled=False))
            on = await _Dashboard.open(stack, source, warm)
            for i in range(-2, pairs):  # two untimed pairs first: the first refreshes after the first render
                write_new()
                for board in (off, on) if i % 2 else (on, off):
                    await board.refresh(timed=i >= 0)
            shown = on.rows
            res["rows"] = len(shown)
            res["distinct"] = len({e.destination_ip for e in shown})
            res["named_rows"] = sum(1 for e in shown if e.hostname)
            res["off_rows"] = len(off.rows)
        res["warm_questions"] = server.count - asked
        res["off"], res["on"] = off.wall, on.wall
        res["off_cpu"], res["on_cpu"] = off.cpu, on.cpu
        res["off_apply"], res["on_apply"] = off.apply, on.apply
        res["pair_wall"] = [b - a for a, b in zip(off.wall, on.wall, strict=True)]
        res["pair_cpu"] = [b - a for a, b in zip(off.cpu, on.cpu, strict=True)]
        warm.close()
        # names arriving: rows shown first with their addresses, then the answers land
        server.gate.clear()
        arriving = _resolver(server.port, timeout=30.0)
        async with AsyncExitStack() as stack:
            board = await _Dashboard.open(stack, source, arriving)
            server.gate.set()
            await _wait(board.pilot, lambda: arriving.stats().pending == 0, "every answer", 120)
            res["arriving_named"] = []
            for _ in range(3):
                before = sum(1 for e in board.rows if e.hostname)
                write_new()
                await board.refresh()
                res["arriving_named"].append(sum(1 for e in board.rows if e.hostname) - before)
            res["arriving"] = board.wall
        arriving.close()
    store.close()
    return res


def run(ctx: Context) -> list[Metric]:
    from netspy_tui.tui.poller import NAMES_PER_POLL

    window_events = 2_000 if ctx.quick else 10_000
    pairs = 4 if ctx.quick else 40
    r = asyncio.run(_run(ctx, window_events, pairs))
    cold = r["cold"]
    label = f"{window_events:,} events, {r['destinations']:,} destinations in the window"
    shown = f"{r['rows']} rows, {r['distinct']} destinations shown, {r['named_rows']} by name"
    ms = [
        metric(
            NAME,
            f"refresh, names off ({label})",
            r["off"],
            "ms",
            note=f"CPU {statistics.median(r['off_cpu']):.1f} ms; {r['off_rows']} rows",
        ),
        metric(
            NAME,
            "refresh, names on, answers cached",
            r["on"],
            "ms",
            note=f"CPU {statistics.median(r['on_cpu']):.1f} ms; {shown}",
        ),
        metric(
            NAME,
            "  names on - names off (pairs of refreshes)",
            r["pair_wall"],
            "ms",
            target=TARGET_EXTRA_MS,
            note=f"median of {len(r['pair_wall'])} differences, each of two refreshes of the same data one after "
            f"the other; table updates {statistics.median(r['on_apply']):.1f} vs "
            f"{statistics.median(r['off_apply']):.1f} ms",
        ),
        metric(
            NAME,
            "  names on - names off, CPU time of the process",
            r["pair_cpu"],
            "ms",
            target=TARGET_EXTRA_MS,
            note="the same pairs in CPU time, which other processes on a busy machine change less",
        ),
        metric(
            NAME,
            "refresh while the names arrive",
            r["arriving"],
            "ms",
            baseline=statistics.median(r["on"]),
            baseline_label="names cached",
            note=f"rows named by each: {', '.join(str(n) for n in r['arriving_named'])} (at most "
            f"{NAMES_PER_POLL} addresses asked a refresh)",
        ),
        Metric(
            NAME,
            f"cold cache, {cold['queries']:,} addresses: most questions in flight",
            float(max(cold["in_flight_max_resolver"], cold["in_flight_max_server"])),
            "",
            target=float(CONCURRENCY),
            note=f"concurrency {CONCURRENCY}; {cold['server_questions']} questions, {cold['named']} named, "
            f"{cold['failed']} without a name",
        ),
        Metric(
            NAME,
            f"cold cache, {cold['queries']:,} addresses: time to resolve all",
            r["cold_seconds"],
            "s",
            note="DNS server on 127.0.0.1 answering each question after 2 ms",
        ),
        Metric(
            NAME, "DNS questions during the refreshes with the cache warm", float(r["warm_questions"]), "", target=0.0
        ),
    ]
    ctx.shared["names_extra"] = {"cold": cold, "pairs_wall_ms": r["pair_wall"], "pairs_cpu_ms": r["pair_cpu"]}
    return ms
