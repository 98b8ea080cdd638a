"""Window tallies kept between calls (store/window.py) against analysis.aggregate, the definition.

A state machine drives one store the way the dashboard and tools do — batches arrive, time moves
(by a poll, by less than a second, by more than a window, backwards), retention prunes by age
and by row count — and after every step each question asked so far must still get exactly
``aggregate()``'s answer over the events that survive. A read-only view of the same file (another
process, which never sees this writer's prune records) must agree too.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import threading
import time
from contextlib import nullcontext
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import netspy_tui.store.sqlite as store_module
import netspy_tui.store.window as window_module
from netspy_tui.analysis.aggregate import aggregate
from netspy_tui.models import ConnectionEvent, PacketDropEvent, parse_event
from netspy_tui.store import EventStore
from netspy_tui.store.sqlite import time_to_ns
from netspy_tui.store.window import Subject
from tests.factories import BASE_TIME, connection, connection_json, drop, drop_json

AnyEvent = ConnectionEvent | PacketDropEvent
WINDOWS = [1, 3, 60, 61, 600]
SUBJECTS: list[tuple[Any, int | None, str | None]] = [
    ("connection", None, None), ("packet_drop", None, None), ("connection", 77, None), ("connection", None, "curl"),
    ("connection", 77, "curl"), ("packet_drop", None, ""),
]  # fmt: skip
#: Offsets in microseconds before "now": window edges, second and bucket boundaries, the future.
EDGES = [0, 1, -1, 999_999, 1_000_000, 1_000_001, 3_000_000, 59_999_999, 60_000_000, 60_000_001, 61_000_000,
         600_000_000, 600_000_001, 120_000_000, -2_000_000]  # fmt: skip


@st.composite
def event_at(draw: st.DrawFn, now: datetime) -> AnyEvent:
    how = draw(st.sampled_from(["edge", "edge", "whole second", "near", "far", "future"]))
    if how == "edge":
        when = now - timedelta(microseconds=draw(st.sampled_from(EDGES)))
    elif how == "whole second":  # exactly on a second, inside or around the windows
        base = now.replace(microsecond=0)
        when = base - timedelta(seconds=draw(st.integers(-1, 70)))
    elif how == "near":
        when = now - timedelta(microseconds=draw(st.integers(0, 70_000_000)))
    elif how == "far":
        when = now - timedelta(microseconds=draw(st.integers(0, 900_000_000)))
    else:
        when = now + timedelta(microseconds=draw(st.integers(1, 4_000_000)))
    common: dict[str, Any] = {
        "pid": draw(st.sampled_from([1, 77, 77, 9])),
        "command": draw(st.sampled_from(["curl", "curl", "nginx", "", "zeta"])),
        "time": when,
        "timestamp": draw(st.integers(0, 3)),
    }
    if draw(st.booleans()):
        data = connection_json(port=draw(st.sampled_from([80, 443, 9])), return_code=draw(st.sampled_from([0, -111])),
                               protocol=draw(st.sampled_from(["TCP", "", "UDP"])), **common)
        data["destination"] = draw(st.sampled_from(["", "unknown", "1.2.3.4:443", "[::1]:9"])
                                   | st.builds("10.0.0.{}:80".format, st.integers(1, 30)))
        if draw(st.booleans()):
            data["outcome"] = draw(st.sampled_from(["ok", "refused", "timeout", "weird"]))
    else:
        data = drop_json(reason=draw(st.sampled_from(["", "TCP_DROP", "NO_SOCKET"])), **common)
        if draw(st.booleans()):
            data["destination"] = draw(st.sampled_from(["", "1.2.3.4:443", "unknown"]))
    return parse_event(data)


class StoreWindows(RuleBasedStateMachine):
    """One store, a moving clock, and the model: the events that should survive, in insertion order."""

    def __init__(self) -> None:
        super().__init__()
        self.saved = (store_module.PRUNE_EVERY_ROWS, store_module.PRUNE_EVERY_SECONDS, store_module.PRUNE_CHUNK,
                      window_module.CACHE_WINDOWS, window_module.GROW_ROWS)
        store_module.PRUNE_EVERY_ROWS = 10**9  # retention only when a rule says so
        store_module.PRUNE_EVERY_SECONDS = 1e9
        store_module.PRUNE_CHUNK = 7  # several prune transactions (records) per prune
        window_module.CACHE_WINDOWS = 5  # fewer than the questions asked: some are forgotten
        window_module.GROW_ROWS = 4  # in memory, windows tallied from scratch pause every few rows
        self.tmp = Path(tempfile.mkdtemp(prefix="netspy-window-"))
        self.now = BASE_TIME + timedelta(microseconds=250_000)
        self.model: list[AnyEvent] = []
        self.asked: set[tuple[Any, ...]] = set()
        self.counted: set[tuple[Any, ...]] = set()
        self.store: EventStore
        self.view: EventStore | None = None

    @initialize(on_disk=st.booleans())
    def open(self, on_disk: bool) -> None:
        path = self.tmp / "events.db" if on_disk else None
        self.store = EventStore(path, retention_seconds=None, max_rows=None)
        if on_disk:
            self.view = EventStore(path, readonly=True)

    def teardown(self) -> None:
        if hasattr(self, "store"):
            self.store.close()
        if self.view is not None:
            self.view.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        (store_module.PRUNE_EVERY_ROWS, store_module.PRUNE_EVERY_SECONDS, store_module.PRUNE_CHUNK,
         window_module.CACHE_WINDOWS, window_module.GROW_ROWS) = self.saved

    @rule(data=st.data(), n=st.integers(1, 25))
    def add(self, data: st.DataObject, n: int) -> None:
        batch = [data.draw(event_at(self.now)) for _ in range(n)]
        self.store.add_events(batch)
        self.model.extend(batch)

    @rule(step_us=st.sampled_from([1, 999, 250_000, 999_999, 1_000_000, 1_000_001, 2_500_000, 30_000_000,
                                   61_000_000, 400_000_000, -1, -1_000_000, -45_000_000]))
    def tick(self, step_us: int) -> None:
        """Time moves: a poll interval, less than a second, more than a window, or back."""
        self.now += timedelta(microseconds=step_us)

    @rule(retention=st.sampled_from([None, 30, 60, 65, 700]), max_rows=st.sampled_from([None, None, 5, 40, 80]),
          lag_us=st.sampled_from([0, 500_000, 10_000_000]))
    def prune(self, retention: int | None, max_rows: int | None, lag_us: int) -> None:
        """Retention by age (as of a moment at or before now) and by row count, in small chunks."""
        self._prune(retention, max_rows, lag_us)

    @rule(subject=st.sampled_from(SUBJECTS[:3]), window=st.sampled_from([60, 61, 600]), data=st.data(),
          during=st.lists(st.sampled_from(["add", "add", "prune", "nothing"]), min_size=1, max_size=4))
    def ask_while_collecting(self, subject: tuple[Any, int | None, str | None], window: int, data: st.DataObject,
                             during: list[str]) -> None:
        """A window tallied from scratch by an in-memory store pauses between chunks; the collector's
        batches and retention get in there. The answer describes the data after the last pause."""
        self.add(data, data.draw(st.integers(8, 20)))  # enough rows for a few chunks
        self.forget_all()
        actions = [(what, [data.draw(event_at(self.now)) for _ in range(data.draw(st.integers(1, 5)))],
                    data.draw(st.sampled_from([(700, None), (65, 40), (2, None), (None, 3)]))) for what in during]
        original = self.store._breathe

        def pause(conn: sqlite3.Connection) -> None:  # EventStore._breathe, with the writer getting in
            conn.execute("COMMIT")
            self.store._write_lock.release()
            try:
                if actions:
                    what, batch, (retention, max_rows) = actions.pop(0)
                    if what == "add":
                        self.store.add_events(batch)
                        self.model.extend(batch)
                    elif what == "prune":
                        self._prune(retention, max_rows, 0)
            finally:
                self.store._write_lock.acquire()
            conn.execute("BEGIN")

        kind, pid, command = subject
        self.store._breathe = pause  # type: ignore[method-assign]
        try:
            got = self.store.stats(kind, pid, command, window, now=self.now)
        finally:
            self.store._breathe = original  # type: ignore[method-assign]
        assert got == aggregate(self.model, kind, pid, command, window, self.now)

    def forget_all(self) -> None:
        self.store._windows.clear()

    def _prune(self, retention: int | None, max_rows: int | None, lag_us: int) -> None:
        self.store.retention_seconds, self.store.max_rows = retention, max_rows
        at = self.now - timedelta(microseconds=lag_us)
        deleted = self.store.prune(now=at)
        before = len(self.model)
        if retention is not None:
            cutoff = time_to_ns(at) - retention * 1_000_000_000
            self.model = [e for e in self.model if time_to_ns(e.time) >= cutoff]
        if max_rows is not None and len(self.model) > max_rows:
            self.model = self.model[len(self.model) - max_rows:]
        assert deleted == before - len(self.model)

    @rule(subject=st.sampled_from(SUBJECTS), window=st.sampled_from(WINDOWS), top_n=st.sampled_from([0, 1, 3, 10]),
          buckets=st.sampled_from([1, 7, 60]))
    def ask(self, subject: tuple[Any, int | None, str | None], window: int, top_n: int, buckets: int) -> None:
        self.asked.add((*subject, window, top_n, buckets))
        self.check(*subject, window, top_n, buckets)

    @rule(subject=st.sampled_from(SUBJECTS), window=st.sampled_from(WINDOWS), polls=st.integers(2, 6),
          step_us=st.sampled_from([300_000, 1_000_000, 1_000_001, 7_000_000, -700_000, -2_000_000]),
          data=st.data())
    def poll(self, subject: tuple[Any, int | None, str | None], window: int, polls: int, step_us: int,
             data: st.DataObject) -> None:
        """The dashboard: the same question every interval while events keep arriving (or, to cover
        windows sliding back over stored events, the same with the clock going backwards)."""
        for _ in range(polls):
            self.now += timedelta(microseconds=step_us)
            if data.draw(st.booleans()):
                self.add(data, data.draw(st.integers(1, 6)))
            self.check(*subject, window, 10, 60)

    @rule(subject=st.sampled_from(SUBJECTS), window=st.sampled_from([*WINDOWS, 7, 2.5]))
    def ask_count(self, subject: tuple[Any, int | None, str | None], window: float) -> None:
        """get_network_summary alone: a count-only window (or the stats window of the same question)."""
        self.counted.add((*subject, window))
        self.check_count(*subject, window)

    @invariant()
    def every_question_still_exact(self) -> None:
        for question in sorted(self.asked, key=repr)[-4:]:
            self.check(*question)
        for counted in sorted(self.counted, key=repr)[-4:]:
            self.check_count(*counted)

    def check(self, kind: Any, pid: int | None, command: str | None, window: int, top_n: int, buckets: int) -> None:
        want = aggregate(self.model, kind, pid, command, window, self.now, top_n, buckets)
        for store in filter(None, (self.store, self.view)):
            assert store.stats(kind, pid, command, window, top_n=top_n, buckets=buckets, now=self.now) == want

    def check_count(self, kind: Any, pid: int | None, command: str | None, window: float) -> None:
        since = self.now - timedelta(seconds=window)
        want = sum(1 for e in self.model if e.type == kind and since < e.time <= self.now
                   and pid in (None, e.pid) and command in (None, e.command))
        for store in filter(None, (self.store, self.view)):
            assert store.count(kind, pid, command, window, now=self.now) == want


TestStoreWindows = StoreWindows.TestCase
TestStoreWindows.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# --- the paths one by one, with what a user sees --------------------------------------------------


def _at(seconds: float) -> datetime:
    return BASE_TIME + timedelta(seconds=seconds)


def _window(store: EventStore, kind: str = "connection") -> window_module.Window:
    (w,) = [w for w in store._windows.windows() if w.full and w.subject.kind == kind]
    return w


def test_a_polled_window_slides_instead_of_recounting() -> None:
    """Polled every second for ten minutes: tallied once, then only the changes are read."""
    events = [connection(time=_at(i * 0.5), command=f"c{i % 7}", port=80 + i % 5) for i in range(2400)]
    with EventStore(retention_seconds=None, max_rows=None) as store:
        store.add_events(events[:200])
        for second in range(100, 1200):
            if second % 10 == 0 and 2 * second < len(events):
                store.add_events(events[2 * second - 20 : 2 * second])  # late batches, like a collector's
            got = store.stats("connection", None, None, 60, now=_at(second))
            if second % 97 == 0:
                stored = events[: min(len(events), max(200, 2 * (second // 10) * 10))]
                assert got == aggregate(stored, "connection", None, None, 60, _at(second))
        assert _window(store).rebuilds == 1


def test_retention_outside_the_window_keeps_the_tallies_and_inside_rebuilds_them() -> None:
    events = [connection(time=_at(i)) for i in range(300)]
    with EventStore(retention_seconds=100, max_rows=None) as store:
        store.add_events(events)
        assert store.stats("connection", None, None, 60, now=_at(299)).total == 60
        store.prune(now=_at(299))  # deletes t < 199: all older than the window
        assert store.stats("connection", None, None, 60, now=_at(300)).total == 59
        assert _window(store).rebuilds == 1
        store.retention_seconds = 30
        store.prune(now=_at(300))  # deletes inside the window
        got = store.stats("connection", None, None, 60, now=_at(300))
        assert got == aggregate(events[270:], "connection", None, None, 60, _at(300))
        assert _window(store).rebuilds == 2


def test_max_rows_pruning_inside_the_window_is_seen() -> None:
    events = [connection(time=_at(i), pid=i % 3) for i in range(100)]
    late = [connection(time=_at(50.5), pid=5)]  # inserted last, in the middle of the window
    with EventStore(retention_seconds=None, max_rows=60) as store:
        store.add_events(events)
        store.add_events(late)
        assert store.stats("connection", None, None, 3600, now=_at(100)).total == 101
        store.prune()  # the 41 oldest by insertion go, from inside the window
        got = store.stats("connection", None, None, 3600, now=_at(100))
        assert got == aggregate(events[41:] + late, "connection", None, None, 3600, _at(100)) and got.total == 60


def test_another_process_pruning_is_noticed(tmp_path: Path) -> None:
    """A read-only view (as `netspy-tui` reading the history another process writes)."""
    path = tmp_path / "events.db"
    events = [connection(time=_at(i), command="a" if i % 2 else "b") for i in range(120)]
    with EventStore(path, retention_seconds=None, max_rows=None) as writer, EventStore(path, readonly=True) as view:
        writer.add_events(events)
        assert view.stats("connection", None, None, 60, now=_at(119)).total == 60
        writer.retention_seconds = 30
        writer.prune(now=_at(119))
        assert view.stats("connection", None, None, 60, now=_at(119)) == aggregate(
            events[89:], "connection", None, None, 60, _at(119))
        assert view.count("connection", None, "a", 60, now=_at(119)) == 16  # 89, 91, ..., 119
        # an outside writer that deletes without the serial (an older netspy-tui): the row counts tell
        with sqlite3.connect(path) as raw:
            raw.execute("DELETE FROM events WHERE seq = (SELECT max(seq) - 10 FROM events)")  # i = 109
            raw.execute("UPDATE kind_counts SET n = n - 1 WHERE kind = 0")
        raw.close()
        survivors = events[89:109] + events[110:]
        assert view.stats("connection", None, None, 60, now=_at(119)) == aggregate(
            survivors, "connection", None, None, 60, _at(119))
        assert view.count("connection", None, "a", 60, now=_at(119)) == 15
        assert view.count("connection", None, "b", 60, now=_at(119)) == 15  # 90, 92, ..., 118
        # ... or a file whose prune serial went missing: rebuilt, never trusted
        with sqlite3.connect(path) as raw:
            raw.execute("DELETE FROM meta WHERE key = 'prunes'")
            raw.execute("DELETE FROM events WHERE seq = (SELECT max(seq) FROM events)")
            raw.execute("UPDATE kind_counts SET n = n - 1 WHERE kind = 0")
        raw.close()
        assert view.stats("connection", None, None, 60, now=_at(119)) == aggregate(
            survivors[:-1], "connection", None, None, 60, _at(119))
        assert view.count("connection", None, "a", 60, now=_at(119)) == 14


def test_a_reader_with_an_older_snapshot_gets_its_own_answer(tmp_path: Path) -> None:
    """Two readers race: the one holding the older snapshot must not see (or spoil) the newer tallies."""
    path = tmp_path / "events.db"
    first = [connection(time=_at(i)) for i in range(50)]
    second = [connection(time=_at(50 + i), pid=2) for i in range(10)]
    with EventStore(path, retention_seconds=None, max_rows=None) as store:
        store.add_events(first)
        old = sqlite3.connect(path, isolation_level=None)
        old.execute("BEGIN")
        old.execute("SELECT count(*) FROM events").fetchone()  # the snapshot starts here
        store.add_events(second)
        now = _at(59)
        lo, hi = time_to_ns(now - timedelta(seconds=3600)), time_to_ns(now)
        assert store.stats("connection", None, None, 3600, now=now).total == 60  # tallies at the newer data
        subject = Subject("connection", None, None)
        got = store._windows.stats(lambda: nullcontext(old), subject, 3600, now, lo, hi, 10, 60)
        assert got == aggregate(first, "connection", None, None, 3600, now)
        assert store._windows.count(lambda: nullcontext(old), subject, 3600, lo, hi) == 50
        assert _window(store).seq == 60 and _window(store).rebuilds == 1  # the shared tallies untouched
        old.execute("COMMIT")
        old.close()
        assert store.stats("connection", None, None, 3600, now=now) == aggregate(
            first + second, "connection", None, None, 3600, now)


def test_forgotten_idle_and_huge_windows_still_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(window_module, "CACHE_WINDOWS", 2)
    events = [connection(time=_at(i), command=f"p{i % 4}", ip=f"10.0.{i % 50}.1") for i in range(200)]
    events += [drop(time=_at(i + 0.5)) for i in range(0, 200, 3)]
    with EventStore() as store:
        store.add_events(events)
        for window in (10, 60, 600, 10, 60):
            for kind in ("connection", "packet_drop"):
                got = store.stats(kind, None, None, window, now=_at(199))  # type: ignore[arg-type]
                assert got == aggregate(events, kind, None, None, window, _at(199))  # type: ignore[arg-type]
        assert len(store._windows.windows()) == 2
        monkeypatch.setattr(window_module, "CACHE_MAX_KEYS", 10)  # too big to keep: answered, not kept
        assert store.stats("connection", None, None, 3600, now=_at(199)) == aggregate(
            events, "connection", None, None, 3600, _at(199))
        assert [w.hi - w.lo for w in store._windows.windows()] == [60 * 10**9]  # the hour was not kept
        monkeypatch.setattr(window_module, "CACHE_IDLE_SECONDS", 0.0)  # idle ones go at the next call
        assert store.count("connection", None, None, 5, now=_at(199)) == 5
        assert [(w.full, w.hi - w.lo) for w in store._windows.windows()] == [(False, 5 * 10**9)]


def test_a_count_uses_the_stats_window_of_the_same_question_when_it_can_slide() -> None:
    events = [connection(time=_at(i), pid=i % 2) for i in range(400)]
    with EventStore() as store:
        store.add_events(events)
        assert store.stats("connection", 1, None, 60, now=_at(300)).total == 30
        assert store.count("connection", 1, None, 60, now=_at(301)) == 30  # slid the stats window
        assert [w.full for w in store._windows.windows()] == [True]
        assert store.count("connection", 1, None, 60, now=_at(399)) == 30  # too far: a count of its own
        assert sorted(w.full for w in store._windows.windows()) == [False, True]
        assert store.stats("connection", 1, None, 60, now=_at(399)) == aggregate(
            events, "connection", 1, None, 60, _at(399))


def test_a_window_sliding_back_over_stored_events() -> None:
    """``now`` earlier than last time (a tool asking about a moment ago): rows enter at the bottom."""
    events = [connection(time=_at(i * 0.25), ip=f"10.1.0.{i % 40}") for i in range(800)]
    with EventStore() as store:
        store.add_events(events)
        for second in (150, 149, 140.5, 141, 139.75):
            got = store.stats("connection", None, None, 60, now=_at(second))
            assert got == aggregate(events, "connection", None, None, 60, _at(second))
        assert _window(store).rebuilds == 1


def test_a_window_tallied_from_scratch_lets_the_collector_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """In memory, reads hold the write lock; a long first tally must pause for the collector's batches."""
    monkeypatch.setattr(window_module, "GROW_ROWS", 500)
    events = [connection(time=_at(i / 100), ip=f"10.2.{i % 200}.{i % 7}", command=f"c{i % 30}") for i in range(20_000)]
    with EventStore(retention_seconds=None, max_rows=None) as store:
        store.add_events(events)
        running, stored_meanwhile = threading.Event(), []
        stop = threading.Event()

        def collector() -> None:  # drops only: the connection window's answer stays the same
            while not stop.is_set():
                running.set()
                store.add_events([drop(time=_at(100))])
                if calling.is_set():
                    stored_meanwhile.append(1)

        calling = threading.Event()
        thread = threading.Thread(target=collector)
        thread.start()
        try:
            assert running.wait(10)
            calling.set()
            got = store.stats("connection", None, None, 3600, now=_at(200))
            calling.clear()
        finally:
            stop.set()
            thread.join(10)
        assert got == aggregate(events, "connection", None, None, 3600, _at(200))
        assert len(stored_meanwhile) >= 5  # 40 pauses; a read holding the lock throughout lets none in


def test_concurrent_readers_of_one_window_do_not_deadlock_an_in_memory_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """One reader pauses (lets the writer in) while tallying; others ask the same question meanwhile."""
    monkeypatch.setattr(window_module, "GROW_ROWS", 50)
    events = [connection(time=_at(i / 10), command=f"c{i % 9}") for i in range(6000)]
    store = EventStore(retention_seconds=None, max_rows=None)
    store.add_events(events)
    want = aggregate(events, "connection", None, None, 3600, _at(700))
    errors: list[BaseException] = []

    def ask(n: int) -> None:
        try:
            for i in range(n):
                if i % 2:
                    store._windows.clear()  # tallied from scratch again: many pauses
                assert store.stats("connection", None, None, 3600, now=_at(700)) == want
                assert store.count("connection", None, None, 3600, now=_at(700)) == want.total
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(6,), daemon=True) for _ in range(3)]
    threads.append(threading.Thread(target=lambda: [store.add_events([drop(time=_at(1))]) for _ in range(200)],
                                    daemon=True))
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stuck = [t for t in threads if t.is_alive()]
    assert not stuck, "readers and the writer deadlocked"  # (the store is left open: closing would hang too)
    store.close()
    assert not errors, errors
