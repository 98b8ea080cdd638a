"""Paging back by a page's token (``EventQuery.before`` of ``EventPage.before``): through runs of events of one time
(a procfs sample's connections share the sample's time) where ``until`` lists the same events again, every event
once, in the list's order, with the count of those left; records in chunks, JSON rows and JSON blocks alike."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from bench import synth
from netspy_tui.collector.base import Batch
from netspy_tui.models import EventQuery, ns_to_time, parse_page_token
from netspy_tui.store import rollups as R
from netspy_tui.store.sqlite import EventStore, event_row
from tests.factories import connection, drop

pytestmark = pytest.mark.quiet


def _tied_store(path: Path) -> EventStore:
    """Records, rows and blocks, most of them at one time (half the records with one timestamp too), some older."""
    store = EventStore(path, retention_seconds=None, max_rows=None)
    recs = synth.records(300, 5.0, np.random.default_rng(5), drop_share=0.3)
    recs["wall"][:250] = recs["wall"][-1]  # (the newest time, shared by 250 of them)
    recs["ts"][:250:2] = recs["ts"][0]
    codec = synth.codec()
    store.write([Batch(records=recs[i : i + 100].copy(), codec=codec) for i in range(0, 300, 100)])
    t = ns_to_time(int(recs["wall"][-1]))
    store.add_events([connection(pid=7, time=t, timestamp=5) for _ in range(20)])
    store.add_events([drop(pid=7, time=t, timestamp=5) for _ in range(20)])
    store.add_events([connection(pid=8, time=t - timedelta(seconds=1)) for _ in range(5)])
    blocks = [connection(pid=9, time=t, timestamp=5) for _ in range(30)] + [drop(pid=9, time=t) for _ in range(9)]
    store.add_rows([event_row(e)[0] for e in blocks], R.rows_from_events(blocks))
    return store


QUERIES = [
    EventQuery(kind="connection"),
    EventQuery(kind="packet_drop"),
    EventQuery(kind="connection", pid=9),
    EventQuery(kind="connection", command="curl"),
    EventQuery(kind="packet_drop", pid=7),
]


@pytest.mark.parametrize("q", QUERIES, ids=lambda q: f"{q.kind}-{q.pid}-{q.command}")
@pytest.mark.parametrize("limit", [1, 3, 7])
def test_following_the_token_lists_every_event_once_in_order(tmp_path: Path, q: EventQuery, limit: int) -> None:
    store = _tied_store(tmp_path / "s.db")
    whole = store.query(EventQuery(kind=q.kind, pid=q.pid, command=q.command, limit=100_000))
    assert whole.total_count == len(whole.events) > 2 * limit  # (several pages)
    assert whole.events[0].time == whole.events[limit].time  # a page is all of one time: until would not move
    listed: list[str | None] = []
    page = store.query(EventQuery(kind=q.kind, pid=q.pid, command=q.command, limit=limit))
    while True:
        assert page.total_count == len(whole.events) - len(listed)  # the count of those left, the page among them
        listed += [e.id for e in page.events]
        if not page.truncated:
            break
        assert page.before is not None
        token = parse_page_token(page.before)
        page = store.query(EventQuery(kind=q.kind, pid=q.pid, command=q.command, limit=limit, before=token))
    assert listed == [e.id for e in whole.events]
    store.close()


def test_the_token_keeps_the_other_bounds(tmp_path: Path) -> None:
    store = _tied_store(tmp_path / "s.db")
    whole = store.query(EventQuery(limit=100_000)).events
    first = store.query(EventQuery(limit=4))
    assert first.before is not None
    token = parse_page_token(first.before)
    tied = whole[0].time
    # an until before the token's time bounds alone; a since at or after the token's time leaves nothing
    until = tied - timedelta(seconds=1)
    older = store.query(EventQuery(limit=100_000, until=until, before=token))
    assert [e.id for e in older.events] == [e.id for e in store.query(EventQuery(limit=100_000, until=until)).events]
    assert store.query(EventQuery(since=tied + timedelta(microseconds=1), before=token)).total_count == 0
    # stored after a cursor: of those after the token, the ones stored since
    cursor = store.query(EventQuery(limit=1)).cursor
    late = connection(pid=10, time=tied, timestamp=0)
    store.add_events([late])
    after = store.query(EventQuery(limit=100, before=token, after=cursor))
    assert [e.pid for e in after.events] == [10] and after.total_count == 1
    store.close()
