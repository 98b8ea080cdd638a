"""The poll loop body without a UI: incremental fetching, window bounds, bursts, reconfiguration."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.models import Scope
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.tui.messages import PollFailed, SnapshotReady
from netspy_tui.tui.poller import MAX_BACKOFF, Poller, _Window, backoff, event_key
from tests.factories import connection
from tests.tui.conftest import Clock, spy_snapshots
from tests.tui.demo_data import DEMO_NOW

pytestmark = pytest.mark.quiet


def burst(n: int, start: float, step: float = 0.001) -> list:
    return [
        connection(
            pid=7,
            command="burst",
            port=1000 + i % 50,
            time=DEMO_NOW - timedelta(seconds=start - i * step),
            outcome="ok",
        )
        for i in range(n)
    ]


async def test_polls_are_incremental_bounded_and_report_bursts() -> None:
    clock = Clock()
    source = MemorySource(burst(50, 30), clock=clock)
    async with open_gateway(source) as gw:
        poller = Poller(gw, clock=clock, window=60, interval=1.0, max_rows=120, max_events=100)
        first = await poller.poll()
        assert len(first.connections) == 50 and first.new_connections == 50
        again = await poller.poll()
        assert again.new_connections == 0 and again.connections == first.connections

        source.add_events(burst(110, 20))  # more than max_events, fewer than max_rows: paged backward with `until`
        snap = await poller.poll()
        assert snap.new_connections == 110 and snap.burst_skipped == 0
        assert len(snap.connections) == 120  # capped at max_rows, newest kept
        assert snap.connections[-1].time == max(e.time for e in snap.connections)
        times = [e.time for e in snap.connections]
        assert times == sorted(times)  # arrival order is time order across pages

        newer = burst(130, 15)
        source.add_events(newer)  # more than max_rows: the newest page shown, the rest reported, not paged for
        snap = await poller.poll()
        assert snap.new_connections == 100 and snap.burst_skipped == 30
        assert len(snap.connections) == 120
        newest = sorted(newer, key=lambda e: e.time)[-100:]
        assert [e.id for e in snap.connections[-100:]] == [e.id for e in newest]
        times = [e.time for e in snap.connections]
        assert times == sorted(times)

        source.add_events(burst(300, 10))  # far more than max_rows: the rest is reported, not silently lost
        snap = await poller.poll()
        # The unfetched rest is reported (exact up to the 10 older rows max_rows had already trimmed,
        # which the 2 s re-read overlap cannot tell from new ones).
        assert snap.new_connections == 100 and 300 <= snap.new_connections + snap.burst_skipped <= 310

        clock.now = DEMO_NOW + timedelta(seconds=55)  # the older rows leave the window
        later = await poller.poll()
        assert all(e.time > clock.now - timedelta(seconds=60) for e in later.connections)
        assert len(later.connections) < 120


async def test_configure_switches_subject_from_the_next_poll_and_wakes_the_loop() -> None:
    clock = Clock()
    source = MemorySource(
        burst(5, 10) + [connection(pid=8, command="other", time=DEMO_NOW - timedelta(seconds=1), outcome="refused")],
        clock=clock,
    )
    async with open_gateway(source) as gw:
        poller = Poller(gw, clock=clock, window=60, interval=5.0)
        snap = await poller.poll()
        assert snap.version == 0 and len(snap.connections) == 6
        version = poller.configure(subject=Scope(command="other"))
        assert version == 1 and poller.wake.is_set()
        assert poller.configure(subject=Scope(command="other")) == 1  # no change, same version
        await poller.sleep(5.0)  # returns at once: woken
        snap = await poller.poll()
        assert snap.version == 1 and [e.command for e in snap.connections] == ["other"]
        assert snap.patterns is not None and snap.patterns.stats.command == "other"
        assert snap.processes is not None and {p.command for p in snap.processes.processes} == {"burst", "other"}


def test_backoff_doubles_to_a_cap() -> None:
    assert [backoff(1.0, n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff(1.0, 20) == MAX_BACKOFF


def test_poll_results_coalesce() -> None:
    from netspy_tui.tui.snapshot import PollConfig, Snapshot

    snap = Snapshot(
        version=0,
        config=PollConfig(window=60),
        taken_at=DEMO_NOW,
        latency_ms=1.0,
        status=None,
        connections=(),
        drops=(),
        processes=None,
        patterns=None,
        drop_patterns=None,
        new_connections=0,
    )
    old, new = SnapshotReady(snap), SnapshotReady(snap)
    failed = PollFailed("down", stale_since=DEMO_NOW, retry_at=DEMO_NOW, attempt=1)
    assert old.can_replace(new) and old.can_replace(failed) and failed.can_replace(new)


def pinned_gap(seconds: float) -> Callable[..., None]:
    """``Poller._keep_summaries`` with the gap between summary reads pinned to ``seconds`` while events arrive (0:
    every poll reads them; more: as if slow to read)."""
    keep = Poller._keep_summaries

    def kept(self: Poller, *args: Any) -> None:
        keep(self, *args)
        self._summary_gap = seconds

    return kept


def gap_pinned(seconds: float) -> type[Poller]:
    """A poller whose summaries are read at most every ``seconds`` while events arrive (as if slow to read)."""
    return type("Slow", (Poller,), {"_keep_summaries": pinned_gap(seconds)})


async def test_slow_summaries_are_still_reread_while_idle() -> None:
    """Summaries that are slow to read (here pinned to at most one read every 50 ms) are re-read while idle:
    throttled by the time since the last read (counted as two moduli of the poll count, slow summaries and
    idle polls could stay out of phase for good, and the process table stale)."""
    import asyncio
    import time

    Slow = gap_pinned(0.05)

    clock = Clock()
    source = MemorySource([connection(pid=7, command="steady", time=clock.now - timedelta(seconds=1))], clock=clock)
    async with open_gateway(source) as gateway:
        asked = spy_snapshots(gateway, "parts")
        poller = Slow(gateway, clock=clock, window=60, interval=0.01)
        await poller.poll()
        deadline = time.monotonic() + 10
        while sum("patterns" in parts for parts in asked) < 4:  # nothing new arrives
            assert time.monotonic() < deadline, asked
            await poller.poll()
            await asyncio.sleep(0.01)


async def test_an_event_within_the_summary_gap_reaches_the_panels_without_another_event() -> None:
    """A lone event that came within the summary gap (the panels were read a moment before) is in the panels once
    the gap has passed, even while following change notifications and nothing else changes: before, the panels
    waited for the idle read (5 x 10 s while following) — the drops tab's line said 10 drops while the table
    held 11."""
    import time

    Slow = gap_pinned(0.3)

    clock = Clock()
    source = MemorySource([connection(pid=7, command="steady", time=clock.now - timedelta(seconds=2))], clock=clock)
    async with open_gateway(source) as gateway:
        poller = Slow(gateway, clock=clock, window=60, interval=0.01)
        poller.following = True
        first = await poller.poll()
        assert first.patterns is not None and first.patterns.stats.total == 1
        source.add_events([connection(pid=8, command="lone", time=clock.now - timedelta(seconds=1))])
        snap = await poller.poll()  # the row now, the panels not yet (read 0.3 s apart at most)
        assert len(snap.connections) == 2
        if snap.patterns is not None and snap.patterns.stats.total == 2:
            return  # this machine took longer than the gap between the two polls: nothing was behind
        assert poller.summaries_behind
        deadline = time.monotonic() + 10
        while snap.patterns is None or snap.patterns.stats.total < 2:
            assert time.monotonic() < deadline, "the panels never read the lone event"
            started = time.monotonic()
            await poller.next_poll(poller.interval)  # no change notification comes: must not wait for one
            assert time.monotonic() - started < 5
            snap = await poller.poll()
        assert not poller.summaries_behind


def _window_as_before(pages: list[list[Any]]) -> list[str]:
    """The window's order as it was kept before: each page's new events appended, then, when one was older than
    the newest held, the whole window sorted (stably) by time."""
    events: dict[str, Any] = {}
    newest = None
    for page in pages:
        late = False
        for event in reversed(page):
            key = event_key(event)
            if key in events:
                continue
            events[key] = event
            if newest is None or event.time >= newest:
                newest = event.time
            else:
                late = True
        if late:
            events = dict(sorted(events.items(), key=lambda item: item[1].time))
    return list(events)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 40), st.integers(0, 12)), max_size=12),  # (event number, seconds)
        min_size=1,
        max_size=8,
    )
)
def test_the_window_keeps_time_order_as_a_full_sort_would(pages: list[list[tuple[int, int]]]) -> None:
    """Late events (older than the newest held: an outcome recorded after newer connects, an older page of a
    burst) are put in place by re-sorting only what is newer than the earliest of them; the order, ties
    included, is what a stable sort of the whole window gives. An event number seen again is the same event."""
    first_time: dict[int, int] = {}
    made = []
    for page in pages:
        events = []
        for number, seconds in page:
            at = first_time.setdefault(number, seconds)  # (an id seen again is the same event, same time)
            when = DEMO_NOW + timedelta(seconds=at)
            events.append(connection(pid=1000 + number, timestamp=number + 1, time=when, id=f"e{number}"))
        made.append(sorted(events, key=lambda e: e.time, reverse=True))  # (pages come newest first)
    window: _Window[Any] = _Window(max_rows=1000)
    for page in made:
        window.add(page)
    assert list(window.events) == _window_as_before(made)
    times = [e.time for e in window.events.values()]
    assert times == sorted(times)


def _unnamed_by_walk(window: _Window[Any], most: int, nameless: set[str]) -> list[str]:
    """What ``unnamed`` answered before it kept a count by address: every held row walked, newest first."""
    out: dict[str, None] = {}
    for event in reversed(window.events.values()):
        if not event.hostname and event.destination_ip and event.destination_ip not in nameless:
            out[event.destination_ip] = None
            if len(out) >= most:
                break
    return list(out)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "update", "name", "trim"]),
            st.lists(st.tuples(st.integers(0, 30), st.integers(0, 5), st.booleans(), st.booleans()), max_size=8),
        ),
        min_size=1,
        max_size=10,
    ),
    st.sets(st.integers(0, 5), max_size=3),
    st.integers(1, 4),
)
def test_the_window_names_and_workloads_it_holds_as_a_walk_finds_them(
    steps: list[tuple[str, list[tuple[int, int, bool, bool]]]], nameless_hosts: set[int], most: int
) -> None:
    """The addresses still to name (newest first, up to ``most``, none the resolver said has no name) and whether a
    held row carries a workload, kept as rows come, change, get names and leave: what a walk over every held row
    finds (the dashboard at 100 events/s walked 2,000 rows for both at every refresh)."""
    window: _Window[Any] = _Window(max_rows=12)
    nameless = {f"10.0.0.{h}" for h in nameless_hosts}
    second = 0
    for op, rows in steps:
        second += 1
        events = [
            connection(pid=1000 + n, ip=f"10.0.0.{host}", time=DEMO_NOW + timedelta(seconds=second), id=f"e{n}",
                       timestamp=n + 1, outcome="in_progress" if pending else "ok",
                       workload="docker 3f2a" if loaded else None)
            for n, host, pending, loaded in rows
        ]  # fmt: skip
        if op == "add":
            window.add(sorted(events, key=lambda e: e.time, reverse=True))
        elif op == "update":
            window.update(events)
        elif op == "name":
            window.name({f"10.0.0.{host}": f"host{host}.example" for _, host, _, _ in rows})
        else:
            window.trim(DEMO_NOW + timedelta(seconds=second - 3))
        for asked in (most, 200):
            assert window.unnamed(asked, nameless) == _unnamed_by_walk(window, asked, nameless)
        assert bool(window.with_workload) == any(e.workload for e in window.events.values())
