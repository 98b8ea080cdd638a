"""Connects a previous run left in progress in a store file are settled when the next run starts
(:meth:`EventStore.settle_in_progress`): ``in_progress`` -> ``unknown`` in their seconds, counted as the loss
``restart_unresolved``, and not counted again as this run's (``counted_since_open``, what /metrics exports)."""

from __future__ import annotations

from pathlib import Path

import pytest

from netspy_tui.collector.base import Collector, Sink
from netspy_tui.models import Scope, utcnow
from netspy_tui.store import EventStore
from netspy_tui.store.rollups import Row
from netspy_tui.store.sqlite import FOLLOWED
from netspy_tui.telemetry.embedded import EmbeddedSource

pytestmark = pytest.mark.quiet

NS = 1_000_000_000


def rows(second: int) -> list[Row]:
    t = second * NS
    key = (0, 4242, "app", "198.51.100.7", 443, "TCP")
    return [
        (second, *key, "in_progress", 0, 3, t, t),  # three started in progress ...
        (second, *key, "in_progress", 0, -1, t, t),  # ... one of them refused since
        (second, *key, "refused", 1, 1, t, t),
        (second - 5, *key, "ok", 0, 4, t, t),
    ]


def outcomes(store: EventStore) -> dict[str, int]:
    stats = store.stats(Scope("connection", window=600))
    return {c.key: c.count for c in stats.outcomes}


def test_a_previous_runs_in_progress_connects_are_settled_once(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    second = int(utcnow().timestamp()) - 30
    with EventStore(path) as store:
        store.add_rows([], rows(second))
        assert outcomes(store) == {"ok": 4, "in_progress": 2, "refused": 1}
        assert store.settle_in_progress() == 2  # (what start does before the collector runs)
    with EventStore(path) as store:
        assert store.settle_in_progress() == 0  # nothing left in progress: nothing settled twice
        assert outcomes(store) == {"ok": 4, "unknown": 2, "refused": 1}
        assert store.losses() == {"restart_unresolved": 2}
    with EventStore(path) as store:
        t = (second + 1) * NS
        store.add_rows([], [(second + 1, 0, 4242, "app", "198.51.100.7", 443, "TCP", "in_progress", 0, 1, t, t)])
        before = store.counted_since_open()
        assert store.settle_in_progress() == 1  # (a run that did not settle before its collector started)
        assert store.counted_since_open() == before  # (the correction is of counts made before)
        assert store.totals.get("restart_unresolved") == 1
        assert outcomes(store) == {"ok": 4, "unknown": 3, "refused": 1}


def test_a_store_in_memory_has_nothing_to_settle() -> None:
    with EventStore(None) as store:
        second = int(utcnow().timestamp()) - 30
        store.add_rows([], rows(second))
        assert store.settle_in_progress() == 0
        assert outcomes(store)["in_progress"] == 2


def test_a_store_a_sampler_fed_last_is_not_settled(tmp_path: Path) -> None:
    """procfs reports a socket it saw in SYN_SENT as in_progress, its last word: nothing was left behind."""
    path = tmp_path / "h.sqlite3"
    with EventStore(path) as store:
        store.add_rows([], rows(int(utcnow().timestamp()) - 30))
        store.set_meta(FOLLOWED, "0")
    with EventStore(path) as store:
        assert store.settle_in_progress() == 0
        assert outcomes(store)["in_progress"] == 2 and store.losses() == {}
        store.set_meta(FOLLOWED, "1")
        assert store.settle_in_progress() == 2


class _Following(Collector):
    """A collector that follows connects to their outcome (as the eBPF one does), feeding nothing itself."""

    name = "ebpf"

    def start(self, sink: Sink) -> None:
        self._stop.clear()

    def stop(self) -> None:
        self._stop.set()


async def test_a_samplers_rows_stay_its_own_when_a_following_run_comes_after(tmp_path: Path) -> None:
    """procfs writes in_progress as its last word; a later eBPF run on the same file, stopped while it followed
    a connect, leaves only that connect to settle at the next start, not the sampler's rows before it."""
    path = tmp_path / "h.sqlite3"
    with EventStore(path) as store:  # the sampler's run, a minute ago
        store.add_rows([], rows(int(utcnow().timestamp()) - 60))
        store.set_meta(FOLLOWED, "0")
    store = EventStore(path)
    source = EmbeddedSource(_Following(), store)
    await source.start()  # (the sampler left nothing behind: nothing settled)
    now = int(utcnow().timestamp())
    t = now * NS
    store.add_rows([], [(now, 0, 7, "curl", "198.51.100.9", 80, "TCP", "in_progress", 0, 1, t, t)])
    assert store.losses() == {}
    await source.aclose()
    with EventStore(path) as store:
        assert store.settle_in_progress() == 1  # the eBPF run's connect, not the sampler's two
        assert outcomes(store) == {"ok": 4, "in_progress": 2, "refused": 1, "unknown": 1}


def test_a_failed_open_leaves_the_file_free_to_open_again(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """An open that fails after taking the file's writer lock (a full disk while reading it) releases it: the
    next open in the same process is not refused as "written by another netspy-tui process"."""
    path = tmp_path / "h.sqlite3"
    EventStore(path).close()

    def full(self: EventStore) -> bytes:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(EventStore, "_id_salt", full)
        try:
            EventStore(path)
        except OSError as exc:
            assert exc.errno == 28
        else:
            raise AssertionError("the open did not fail")
    EventStore(path).close()
