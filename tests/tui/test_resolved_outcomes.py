"""The connection table agrees with the store for slow connects: a connect listed in progress shows its outcome
once the store resolves it (the kernel's OUTCOME record, seconds later), and a blocking connect stored when it
returned (its time is its start, seconds before) still gets its row. The store is fed ring records the way the eBPF
collector's writer feeds it (``Batch(records=...)``: CONNECT records, then OUTCOME records in a later write)."""

from __future__ import annotations

import errno
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import numpy as np
from textual.pilot import Pilot

from bench import synth
from netspy_tui.collector.base import Batch
from netspy_tui.collector.ebpf import programs as P
from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.models import Scope
from netspy_tui.serve import BackgroundServer, create_app
from netspy_tui.store.sqlite import EventStore
from netspy_tui.telemetry.client import HttpSource
from netspy_tui.telemetry.embedded import EmbeddedSource
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.tui.app import NetspyApp
from tests.factories import connection
from tests.tui.conftest import Clock, wait_for
from tests.tui.demo_data import DEMO_NOW
from tests.tui.screen_text import screen_text

SIZE = (160, 40)
NS = 1_000_000_000


def connect(pid: int, comm: bytes, last_octet: int, wall: int, key: int, *, result: int, code: int) -> np.ndarray:
    """One CONNECT record to 10.0.0.<last_octet>:443 started at ``wall`` (ns) on socket ``key``: in progress when
    ``result`` is RESULT_PENDING (an OUTCOME record follows), else resolved with ``result`` (the kernel's errno)."""
    rec = np.zeros(1, P.RECORD)
    rec["kind"], rec["pid"], rec["comm"], rec["family"], rec["port"], rec["protocol"] = (
        P.KIND_CONNECT, pid, comm, P.AF_INET, 443, 6,
    )  # fmt: skip
    rec["addr"][0][:4] = (10, 0, 0, last_octet)
    pending = result == P.RESULT_PENDING
    rec["flags"] = P.F_TCP | (P.F_PENDING if pending else P.F_RESOLVED)
    rec["result"], rec["code"], rec["key"], rec["wall"], rec["ts"] = result, code, key, wall, wall
    return rec


def outcome(of: np.ndarray, result: int) -> np.ndarray:
    """The OUTCOME record of ``of`` (same socket, same start) with the handshake's result (an errno, 0 ok)."""
    rec = np.zeros(1, P.RECORD)
    rec["kind"], rec["result"] = P.KIND_OUTCOME, result
    rec["key"], rec["wall"], rec["ts"] = of["key"], of["wall"], of["ts"]
    return rec


def store_records(store: EventStore, recs: np.ndarray) -> None:
    store.write([Batch(records=recs, codec=synth.codec())])


@asynccontextmanager
async def dashboard(store: EventStore, interval: float = 0.2) -> AsyncIterator[tuple[NetspyApp, Pilot[Any]]]:
    source = EmbeddedSource(None, store)
    try:
        async with open_gateway(source) as gateway:
            app = NetspyApp(gateway, interval=interval, source_note="test")
            async with app.run_test(size=SIZE) as pilot:
                yield app, pilot
    finally:
        await source.aclose()


def outcome_cells(app: NetspyApp) -> dict[str, str]:
    """Destination -> the outcome cell of its row, as the connection table shows it."""
    table = app.dashboard.connections
    column = next(i for i, c in enumerate(table.spec) if c.key == "outcome")
    dest = next(i for i, c in enumerate(table.spec) if c.key == "destination")
    return {str(cells[dest]).strip(): str(cells[column]).strip() for cells in table._cells.values()}


async def test_a_connect_listed_in_progress_shows_its_outcome_once_the_store_resolves_it() -> None:
    now = time.time_ns()
    slow = connect(42, b"curl", 1, now - NS, 0xFFFF888000000040, result=P.RESULT_PENDING, code=-errno.EINPROGRESS)
    fast = connect(43, b"wget", 2, now - NS // 2, 0xFFFF888000000080, result=0, code=0)
    with EventStore(None) as store:
        store_records(store, np.concatenate([slow, fast]))
        async with dashboard(store) as (app, pilot):
            await wait_for(pilot, lambda: len(outcome_cells(app)) == 2, "both connects in the table")
            assert outcome_cells(app) == {"10.0.0.1:443": "in progress", "10.0.0.2:443": "ok"}
            store_records(store, outcome(slow, errno.EHOSTUNREACH))  # the handshake ended, seconds later
            await wait_for(
                pilot, lambda: outcome_cells(app).get("10.0.0.1:443") == "unreachable", "its outcome in the table"
            )
            assert outcome_cells(app) == {"10.0.0.1:443": "unreachable", "10.0.0.2:443": "ok"}
            assert "Connections (2)" in screen_text(app)


async def test_a_blocking_connect_stored_when_it_returned_seconds_after_its_start_gets_its_row() -> None:
    """A blocking connect's record is written when connect() returns (ETIMEDOUT after ~3 s) with its start as its time:
    older than what the table already holds by more than the old 2 s overlap. It still comes, with its outcome."""
    now = time.time_ns()
    with EventStore(None) as store:
        store_records(store, connect(43, b"wget", 2, now - NS // 10, 0xFFFF8880000000C0, result=0, code=0))
        async with dashboard(store) as (app, pilot):
            await wait_for(pilot, lambda: len(outcome_cells(app)) == 1, "the first connect in the table")
            started = now - 4 * NS  # (it started 4 s ago, before the newest row held)
            store_records(store, connect(44, b"python3", 3, started, 0xFFFF888000000100, result=errno.ETIMEDOUT,
                                         code=-errno.ETIMEDOUT))  # fmt: skip
            await wait_for(pilot, lambda: len(outcome_cells(app)) == 2, "the late-stored connect in the table")
            assert outcome_cells(app) == {"10.0.0.2:443": "ok", "10.0.0.3:443": "timeout"}
            assert "Connections (2)" in screen_text(app)


def drops(n: int, wall: int) -> np.ndarray:
    """``n`` packet drops charged to pid 7 (``nc``) in the nanoseconds from ``wall`` on."""
    recs = np.zeros(n, P.RECORD)
    recs["kind"], recs["pid"], recs["comm"], recs["code"] = P.KIND_DROP, 7, b"nc", 2
    recs["wall"] = recs["ts"] = wall + np.arange(n)
    return recs


async def test_a_burst_of_drops_says_how_many_it_did_not_fetch() -> None:
    """2,500 drops in one second reach the drops table as one page (the newest 1,000): the rest leave a gap there,
    and the header says so, as it does for connections."""
    now = time.time_ns()
    with EventStore(None) as store:
        store_records(store, drops(5, now - 5 * NS))
        # (a poll every 2 s at most: the burst's note, which the next poll replaces, stays up for a loaded machine's
        # test to read it)
        async with dashboard(store, interval=2.0) as (app, pilot):
            await wait_for(pilot, lambda: app.poller._drops.newest is not None, "the first drops held")
            store_records(store, drops(2500, now - NS))
            await wait_for(pilot, lambda: "not fetched" in screen_text(app), "the burst note")
            assert "burst: 1,500 drops not fetched in one poll" in screen_text(app)
            # (the tab's new label may be drawn a frame after the header's note: a wider tab is laid out first)
            await wait_for(pilot, lambda: "Packet drops (1,005, gaps)" in screen_text(app), "the tab's gaps")


def connects(n: int, wall: int) -> np.ndarray:
    """``n`` resolved connects (ok) of pid 8 (``curl``) to 10.0.0.9:443, one a nanosecond from ``wall`` on."""
    recs = np.concatenate([connect(8, b"curl", 9, wall, 0, result=0, code=0)] * n)
    recs["key"] = 0xFFFF888000100000 + np.arange(n, dtype=np.uint64) * 64
    recs["wall"] = recs["ts"] = wall + np.arange(n)
    return recs


async def test_a_flood_of_connects_shows_its_newest_page_and_says_how_many_it_did_not_fetch() -> None:
    """2,500 connects in one second, more than the 2,000 rows the table holds: the poll takes the newest page (1,000)
    and pages back no further (the table could not hold the burst whole whatever it fetched); the header says how
    many it did not fetch, the rows held before stay, and the tab says its rows have gaps (they are not the latest
    1,005)."""
    now = time.time_ns()
    with EventStore(None) as store:
        store_records(store, connects(5, now - 5 * NS))
        async with dashboard(store, interval=2.0) as (app, pilot):  # (the note stays up: see the drops test)
            await wait_for(pilot, lambda: app.dashboard.connections.row_count == 5, "the first connects in the table")
            flood = connects(2500, now - NS)
            store_records(store, flood)
            await wait_for(pilot, lambda: "not fetched" in screen_text(app), "the burst note")
            assert "burst: 1,500 events not fetched in one poll" in screen_text(app)
            # (the 5 held before are older than the burst's middle; the tab may be drawn a frame after the note)
            await wait_for(pilot, lambda: "Connections (1,005, gaps)" in screen_text(app), "the tab's gaps")
            held = app.poller._conns.events.values()
            walls = sorted(int(e.timestamp) for e in held)
            assert len(walls) == 1005 and walls[-1000:] == [int(w) for w in flood["ts"][-1000:]]


async def poll_now(app: NetspyApp, pilot: Pilot[Any]) -> None:
    """The poll the dashboard makes after 10 s with no change (or at a key), now; waits for its snapshot."""
    taken = app.dashboard.latest
    app.poller.wake.set()
    await wait_for(pilot, lambda: app.dashboard.latest is not taken, "a poll")


async def test_events_per_second_decays_under_a_focus_once_the_busy_process_has_stopped() -> None:
    """A process made 1,200 connects in 6 s and stopped; focused on another (whose events alone the polls fetch) the
    header's ev/s is read with the summaries, then aged at each poll: as the busy process's connects leave the
    window it falls (it stayed at 20.0 until the next read of the summaries, up to 50 s later), then reads 0.0."""
    clock = Clock()
    busy = [connection(pid=500, command="busy", time=DEMO_NOW - timedelta(seconds=30 - i * 0.005)) for i in range(1200)]
    quiet = [connection(pid=600, command="quiet", time=DEMO_NOW - timedelta(seconds=50))]
    async with open_gateway(MemorySource(busy + quiet, clock=clock)) as gateway:
        app = NetspyApp(gateway, interval=0.2, clock=clock, window=60)
        async with app.run_test(size=SIZE) as pilot:
            procs = app.dashboard.processes
            await wait_for(pilot, lambda: "quiet" in procs.stats, "quiet in the process table")
            procs.focus()
            procs.move_cursor(row=procs.get_row_index("quiet"))
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.poller.config.subject == Scope(command="quiet"), "focus quiet")
            await wait_for(pilot, lambda: "20.0 ev/s" in screen_text(app), "1,201 connects over the 60 s window")
            for _ in range(2):  # (the first poll after the focus's events reads the summaries again)
                await poll_now(app, pilot)
            assert "20.0 ev/s" in screen_text(app)
            clock.now = DEMO_NOW + timedelta(seconds=33)  # two thirds of the busy one's connects have left the window
            await poll_now(app, pilot)
            # (its oldest counted event has left the window: the summaries are read again, and count the window's
            # whole seconds, 11:59:34-12:00:33, as every tool does: 400 connects)
            await wait_for(pilot, lambda: "6.7 ev/s" in screen_text(app), "the rate aged: 400 connects left")
            clock.now = DEMO_NOW + timedelta(seconds=45)  # all of them have left (and quiet's one)
            await poll_now(app, pilot)
            await wait_for(pilot, lambda: "0.0 ev/s" in screen_text(app), "no connect left in the window")


async def test_a_blocking_connect_that_returned_etimedout_reads_timeout_when_the_kernel_could_not_tell() -> None:
    """The kernel did not see the handshake end before connect() returned ETIMEDOUT (its record says in progress), and
    when it resolved the socket the error was already taken by the call (its OUTCOME says unknown): the row reads
    the call's own answer, timeout (it read 'unknown rc=ETIMEDOUT')."""
    now = time.time_ns()
    stuck = connect(45, b"python3", 4, now - 4 * NS, 0xFFFF888000000140, result=P.RESULT_PENDING,
                    code=-errno.ETIMEDOUT)  # fmt: skip
    with EventStore(None) as store:
        store_records(store, stuck)
        store_records(store, outcome(stuck, P.RESULT_UNTRACKED))
        async with dashboard(store) as (app, pilot):
            await wait_for(pilot, lambda: len(outcome_cells(app)) == 1, "the connect in the table")
            assert outcome_cells(app) == {"10.0.0.4:443": "timeout"}


async def test_over_http_a_served_store_s_connect_listed_in_progress_shows_its_outcome() -> None:
    """The dashboard on ``--server`` of a real ``netspy-tui serve`` (127.0.0.1, a free port) of the store: its
    /api/events takes resolved_after and sends the connects resolved since as updates."""
    now = time.time_ns()
    slow = connect(42, b"curl", 1, now - NS, 0xFFFF888000000180, result=P.RESULT_PENDING, code=-errno.EINPROGRESS)
    with EventStore(None) as store:
        source = EmbeddedSource(None, store)
        store_records(store, slow)
        try:
            with BackgroundServer(create_app(source)) as srv:
                http = HttpSource(srv.url, retries=0)
                try:
                    async with open_gateway(http) as gateway:
                        app = NetspyApp(gateway, interval=0.2, source_note="test")
                        async with app.run_test(size=SIZE) as pilot:
                            await wait_for(pilot, lambda: len(outcome_cells(app)) == 1, "the connect in the table")
                            assert outcome_cells(app) == {"10.0.0.1:443": "in progress"}
                            store_records(store, outcome(slow, errno.ECONNREFUSED))
                            await wait_for(pilot, lambda: outcome_cells(app) == {"10.0.0.1:443": "refused"},
                                           "its outcome in the table")  # fmt: skip
                finally:
                    await http.aclose()
        finally:
            await source.aclose()
