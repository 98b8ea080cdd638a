"""The fleet's figures from its nodes' equal the figures of all the events at once (property test
against analysis/aggregate.py, the executable definition of every figure)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netspy_tui.analysis.aggregate import aggregate
from netspy_tui.fleet.merge import NODE_TOP_N, merge_pages, merge_stats, merge_stored_items
from netspy_tui.models import EventPage, Scope, time_to_ns
from tests.factories import BASE_TIME, connection

pytestmark = pytest.mark.quiet

EVENTS = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from(["curl", "wget", "nginx"]), st.integers(1, 4),
              st.sampled_from(["10.0.0.1", "10.0.0.2", "2001:db8::1"]), st.sampled_from([0, -111, -110]),
              st.integers(0, 59_000)),
    max_size=60,
)  # fmt: skip


def _events(spec):  # type: ignore[no-untyped-def]
    return [(node, connection(pid=pid, command=cmd, ip=ip, return_code=rc,
                              time=BASE_TIME - timedelta(milliseconds=ms)))
            for node, cmd, pid, ip, rc, ms in spec]  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(EVENTS)
def test_merged_node_stats_equal_the_stats_of_all_events(spec) -> None:  # type: ignore[no-untyped-def]
    events = _events(spec)
    whole = aggregate([e for _, e in events], Scope("connection", None, None, 60), BASE_TIME, top_n=NODE_TOP_N)
    parts = [aggregate([e for n, e in events if n == node], Scope("connection", None, None, 60), BASE_TIME,
                       top_n=NODE_TOP_N) for node in range(3)]  # fmt: skip
    empty = aggregate([], Scope("connection", None, None, 60), BASE_TIME)
    merged = merge_stats(parts, empty, NODE_TOP_N)
    assert merged.total == whole.total
    assert merged.rate_buckets == whole.rate_buckets
    for field in ("outcomes", "protocols", "top_destinations", "ports"):
        assert {c.key: c.count for c in getattr(merged, field)} == {c.key: c.count for c in getattr(whole, field)}
    assert {p.command: (p.attempts, p.failures, p.pids) for p in merged.processes} == \
        {p.command: (p.attempts, p.failures, p.pids) for p in whole.processes}  # fmt: skip
    assert (merged.first_seen, merged.last_seen) == (whole.first_seen, whole.last_seen)


@settings(max_examples=60, deadline=None)
@given(EVENTS, st.integers(1, 20))
def test_merged_pages_are_the_newest_of_all(spec, limit) -> None:  # type: ignore[no-untyped-def]
    events = [e for _, e in _events(spec)]
    newest_first = sorted(events, key=lambda e: (e.time, e.timestamp), reverse=True)
    pages = []
    for node in range(3):
        mine = [e for (n, _), e in zip(_events(spec), events, strict=True) if n == node]
        mine.sort(key=lambda e: (e.time, e.timestamp), reverse=True)
        pages.append(EventPage(events=mine[:limit], total_count=len(mine), truncated=len(mine) > limit))
    merged = merge_pages(pages, limit)
    assert [e.time for e in merged.events] == [e.time for e in newest_first[:limit]]
    assert merged.total_count == len(events) and merged.truncated == (len(events) > limit)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3), st.integers(0, 2)), max_size=40), st.integers(1, 20))
def test_merged_stored_pages_keep_the_order_merge_pages_gives(spec, limit) -> None:  # type: ignore[no-untyped-def]
    """The aggregator merges its nodes' pages as stored (``merge_stored_items``, what ``/api/events`` writes out): the
    same events in the same order as :func:`merge_pages` of the built pages, ties (equal times and timestamps, here
    frequent) in page order, then in each page's."""
    pages, stored = [], []
    for node in range(3):
        mine = [connection(pid=100 + i, time=BASE_TIME - timedelta(seconds=s)) for i, (n, s, _) in enumerate(spec)
                if n == node]  # fmt: skip
        mine = [e.model_copy(update={"timestamp": spec[e.pid - 100][2]}) for e in mine]
        mine.sort(key=lambda e: (e.time, e.timestamp), reverse=True)  # (stable: equal ones keep their order)
        pages.append(EventPage(events=mine[:limit], total_count=len(mine), truncated=len(mine) > limit))
        stored.append((pages[-1].model_copy(update={"events": []}),
                       [(time_to_ns(e.time), e.timestamp, e) for e in mine[:limit]]))  # fmt: skip
    want = merge_pages(pages, limit)
    page, kept = merge_stored_items(stored, limit)
    assert [item[2] for item in kept] == want.events
    assert [(t, ts) for t, ts, _ in kept] == [(time_to_ns(e.time), e.timestamp) for e in want.events]
    assert (page.total_count, page.truncated) == (want.total_count, want.truncated)
