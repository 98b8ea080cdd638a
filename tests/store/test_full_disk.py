"""The store on a full disk (a small tmpfs the test mounts, then fills): what a refused write counted is held in
memory up to a bound, then given up as a loss that reaches the losses table once the disk has room again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from netspy_tui.models import Scope
from netspy_tui.store import sqlite as store_module
from netspy_tui.store.sqlite import EventStore, StoreError
from tests.factories import connection
from tests.hardening.test_faults_embedded import fill, tiny_filesystem


@pytest.mark.root
def test_counts_held_past_the_bound_are_given_up_as_a_loss_recorded_once_there_is_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "MAX_UNWRITTEN_ROWS", 20)
    now = datetime.now(UTC)
    with tiny_filesystem(tmp_path / "disk", "8m") as mount:
        store = EventStore(mount / "h.sqlite3", retention_seconds=None)
        try:
            store.add_events([connection(pid=1, command="kept", time=now - timedelta(seconds=100))])
            fill(mount / "filler")
            for i in range(40):  # 40 seconds of one connect each, each write refused
                with pytest.raises(StoreError, match="database or disk is full") as refused:
                    store.add_events([connection(pid=2, command="held", time=now - timedelta(seconds=90 - i))])
                assert refused.value.kept and refused.value.lost == 1
            # past 20 rows held, the oldest seconds went: a loss (store_error), counts incomplete; the rest are held
            lost = store.totals["store_error"]
            assert 0 < lost < 40 and store.unwritten_events() == (40 - lost, 0)
            assert store.losses() == {"unstored": 40, "store_error": lost}
            assert store.count(Scope("connection", None, "held", 600)) == 40  # (live figures: memory)

            (mount / "filler").unlink()  # room again: the next write stores the held counts and the losses
            store.add_events([connection(pid=3, command="later", time=now - timedelta(seconds=10))])
            assert store.unwritten_events() == (0, 0) and store.last_write_error is None
        finally:
            store.close()
        with EventStore(mount / "h.sqlite3", readonly=True) as reread:
            assert reread.losses() == {"unstored": 40, "store_error": lost}
            assert reread.count(Scope("connection", None, "held", 600)) == 40 - lost
            assert reread.count(Scope("connection", None, "later", 600)) == 1
