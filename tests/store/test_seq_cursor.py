"""The insertion-order cursor (issue 17): ``EventQuery(after=page.cursor)`` lists exactly the events stored since
that page, records in chunks and JSON rows alike, whatever their times (a late one older than the newest seen
included), with its counts; the same through the tools (``after`` / ``cursor``) of an embedded store."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from bench import synth
from netspy_tui.collector.base import Batch
from netspy_tui.models import EventQuery, ns_to_time
from netspy_tui.store.sqlite import EventStore
from tests.factories import connection, drop

pytestmark = pytest.mark.quiet


def _ids(store: EventStore, q: EventQuery) -> set[str]:
    page = store.query(q)
    assert not page.truncated
    return {e.id for e in page.events if e.id}


@pytest.mark.parametrize("kind", ["connection", "packet_drop"])
def test_after_lists_exactly_what_was_stored_since(tmp_path: Path, kind: str) -> None:
    store = EventStore(tmp_path / "s.db", retention_seconds=None, max_rows=None)
    rng = np.random.default_rng(3)
    codec = synth.codec()
    first = synth.records(2000, 300.0, rng, drop_share=0.3)
    store.write([Batch(records=first[i : i + 400].copy(), codec=codec) for i in range(0, 2000, 400)])
    old_time = ns_to_time(int(first["wall"].min()))
    store.add_events([connection(pid=11, time=old_time), drop(pid=11, time=old_time)])
    everything = EventQuery(kind=kind, limit=100_000)  # type: ignore[arg-type]
    before = store.query(everything)
    assert before.cursor is not None and before.cursor == store.newest_seq()

    # new records, and JSON rows stamped before everything held (late arrivals)
    store.write([Batch(records=synth.records(700, 5.0, rng, drop_share=0.3), codec=codec)])
    late = old_time - timedelta(seconds=30)
    store.add_events([connection(pid=12, time=late), drop(pid=12, time=late)])
    store.flush()

    new = _ids(store, everything) - {e.id for e in before.events}
    q = EventQuery(kind=kind, limit=100_000, after=before.cursor)  # type: ignore[arg-type]
    page = store.query(q)
    assert {e.id for e in page.events} == new and len(page.events) == page.total_count == len(new)
    assert any(e.pid == 12 for e in page.events)  # the late one too
    assert page.cursor == store.newest_seq()
    # with a pid, a page bound and a time bound as well
    assert _ids(store, EventQuery(kind=kind, pid=12, limit=10, after=before.cursor)) == {  # type: ignore[arg-type]
        e.id for e in page.events if e.pid == 12
    }
    small = store.query(EventQuery(kind=kind, limit=5, after=before.cursor))  # type: ignore[arg-type]
    assert small.total_count == len(new) and small.truncated and len(small.events) == 5
    nothing = store.query(EventQuery(kind=kind, limit=10, after=page.cursor))  # type: ignore[arg-type]
    assert nothing.events == [] and nothing.total_count == 0
    store.close()
