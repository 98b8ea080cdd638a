"""The event store as its users see it: queries, retention, errors, concurrent use."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import netspy_tui.store.sqlite as store_module
from netspy_tui.analysis.aggregate import second_of
from netspy_tui.errors import NetspyError
from netspy_tui.models import ConnectionEvent, EventQuery, PacketDropEvent, Scope, parse_event, utcnow
from netspy_tui.store import EventStore, StoreError
from tests.factories import BASE_TIME, connection, connection_json, drop


def _at(seconds: float) -> datetime:
    return BASE_TIME + timedelta(seconds=seconds)


def test_query_is_newest_first_with_limit_total_and_filters() -> None:
    events = [connection(pid=10 + i % 3, command="curl" if i % 2 else "wget", time=_at(i)) for i in range(10)]
    events.append(drop(time=_at(5)))
    with EventStore() as store:
        store.add_events(events)
        page = store.query(EventQuery(limit=4))
        assert [e.time for e in page.events] == [_at(9), _at(8), _at(7), _at(6)]
        assert page.total_count == 10 and page.truncated
        assert store.query(EventQuery(kind="packet_drop")).total_count == 1
        by_pid = store.query(EventQuery(pid=11))
        assert {e.pid for e in by_pid.events} == {11} and by_pid.total_count == 3 and not by_pid.truncated
        by_cmd = store.query(EventQuery(command="curl", limit=2))
        assert [e.time for e in by_cmd.events] == [_at(9), _at(7)] and by_cmd.total_count == 5
        both = store.query(EventQuery(pid=11, command="curl"))
        assert [(e.pid, e.command) for e in both.events] == [(11, "curl")] * len(both.events)
        want = [e for e in events if e.pid == 11 and e.command == "curl" and e.type == "connection"]
        assert both.total_count == len(want) > 0
        # since is exclusive, until inclusive
        window = store.query(EventQuery(since=_at(3), until=_at(6)))
        assert [e.time for e in window.events] == [_at(6), _at(5), _at(4)]
        assert store.query(EventQuery(limit=0)).total_count == 10


def test_equal_times_keep_timestamp_then_insertion_order() -> None:
    a = connection(time=_at(1), timestamp=5, command="a")
    b = connection(time=_at(1), timestamp=5, command="b")
    c = connection(time=_at(1), timestamp=9, command="c")
    with EventStore() as store:
        store.add_events([a, b])
        store.add_events([c])
        assert [e.command for e in store.query(EventQuery()).events] == ["c", "a", "b"]


def test_events_come_back_exactly_as_ingested() -> None:
    data = connection_json(
        time=_at(0),
        outcome="refused",
        sampled=True,
        protocol_inferred=False,
        source="procfs",
        k8s_node_name="node-1",
        custom_extension={"x": [1, 2]},
    )
    data["time"] = "2026-11-24T14:00:00.123456789+02:00"  # nanoseconds and an offset
    original = parse_event(data)
    built = ConnectionEvent.model_construct(
        id="abc", pid=3, command="x", time=_at(2), destination="1.2.3.4:1", note="from model_construct"
    )
    with EventStore() as store:
        store.add_events([original, built])
        got = store.query(EventQuery()).events
    assert got[0] == built and got[0].model_extra == {"note": "from model_construct"}
    assert got[1] == original
    assert got[1].model_extra == {"custom_extension": {"x": [1, 2]}}
    assert got[1].time == datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=UTC)
    assert got[1].sampled is True and got[1].k8s_node_name == "node-1"


def test_untrusted_text_and_impossible_values_do_not_lose_the_batch() -> None:
    weird = connection(command="a\udc80b", time=_at(1))  # undecodable bytes, as surrogateescape leaves them
    markup = connection(command="[red]x\x1b[2J", time=_at(2))
    huge = connection(pid=2**70, time=_at(3))  # beyond SQLite's 64-bit integers
    fine = connection(time=_at(4))
    with EventStore() as store:
        with pytest.raises(StoreError) as err:
            store.add_events([weird, markup, huge, fine])
        assert err.value.lost == 1
        assert "1 of 4 events could not be stored" in str(err.value) and "\n" not in str(err.value)
        got = store.query(EventQuery()).events
        assert [e.time for e in got] == [_at(4), _at(2), _at(1)]
        assert got[1].command == "[red]x\x1b[2J"
        assert got[2].command == "a\\x80b"
        assert store.row_count() == 3


def test_window_count_and_stats_use_the_wall_clock_by_default() -> None:
    with EventStore() as store:
        store.add_events([connection(ago=5), connection(ago=30, return_code=-111), connection(ago=120), drop(ago=1)])
        assert store.count(Scope("connection", None, None, 60)) == 2
        stats = store.stats(Scope("connection", None, None, 60))
        assert stats.total == 2 and [(c.key, c.count) for c in stats.outcomes] == [("refused", 1), ("unknown", 1)]
        assert stats.until is not None and abs((utcnow() - stats.until).total_seconds()) < 5
        assert store.stats(Scope("packet_drop", None, None, 60)).total == 1
        assert store.newest_time() is not None and abs((utcnow() - store.newest_time()).total_seconds()) < 5


def test_empty_store() -> None:
    with EventStore() as store:
        assert store.newest_time() is None and store.row_count() == 0
        page = store.query(EventQuery())
        assert page.events == [] and page.total_count == 0 and not page.truncated
        stats = store.stats(Scope("connection", None, None, 60), buckets=6, now=BASE_TIME)
        assert stats.total == 0 and stats.rate_buckets == [0] * 6 and stats.bucket_seconds == 10


def test_retention_by_age_is_applied_by_prune_and_periodically(monkeypatch: pytest.MonkeyPatch) -> None:
    now = utcnow()
    old = [connection(time=now - timedelta(hours=3), pid=1), drop(time=now - timedelta(hours=2), pid=1)]
    new = [connection(time=now - timedelta(minutes=5), pid=2), drop(time=now, pid=2)]
    with EventStore(retention_seconds=3600) as store:
        store.add_events(old + new)
        assert store.row_count() == 4
        assert store.prune() == 2
        assert store.row_count() == 2
        assert {e.pid for e in store.query(EventQuery()).events} == {2}
        assert store.query(EventQuery(kind="packet_drop")).total_count == 1
        # Applied without an explicit prune() once enough rows arrived.
        monkeypatch.setattr(store_module, "PRUNE_EVERY_ROWS", 3)
        store.add_events(old)
        assert store.row_count() == 4  # 2 + 2: not yet due
        store.add_events([connection(time=now, pid=3)])
        assert store.row_count() == 3
        assert store.query(EventQuery(pid=1)).total_count == 0


def test_retention_by_row_count_drops_the_oldest(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with EventStore(path, retention_seconds=None, max_rows=100) as store:
        for batch in range(5):
            store.add_events([connection(time=_at(batch * 60 + i), pid=batch) for i in range(50)])
        store.prune()
        assert store.row_count() == 100
        page = store.query(EventQuery(limit=1000))
        assert page.total_count == 100 and {e.pid for e in page.events} == {3, 4}
        # raw events are capped; the counts are not: they come from the rollups, kept by age only
        assert store.stats(Scope("connection", None, None, 3600), now=_at(300)).total == 250
        assert store.query(EventQuery(limit=1000)).not_kept == 0  # (the page's seconds are all kept)


def test_a_file_store_keeps_history_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "events.db"  # missing directories are created
    with EventStore(path) as store:
        store.add_events([connection(ago=10, command="first")])
    with EventStore(path) as store:
        store.add_events([connection(ago=5, command="second")])
        assert [e.command for e in store.query(EventQuery()).events] == ["second", "first"]
        assert store.row_count() == 2
    with EventStore(path, readonly=True) as history:
        assert history.row_count() == 2 and history.count(Scope("connection", None, None, 60)) == 2
        with pytest.raises(StoreError, match="read-only"):
            history.add_events([connection()])


def test_unwritable_path_is_a_one_line_error_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(NetspyError) as err:
        EventStore(blocker / "events.db")
    text = str(err.value)
    assert str(blocker / "events.db") in text and "\n" not in text
    assert "a directory you can write" in err.value.hint


def test_not_an_event_store_is_refused_untouched(tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("hello, this is not SQLite " * 100)
    with pytest.raises(StoreError, match="notes.txt"):
        EventStore(junk)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE customers (name TEXT)")
    with pytest.raises(StoreError, match="is not a netspy-tui event store"):
        EventStore(other)
    with sqlite3.connect(other) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"customers"}
    with pytest.raises(StoreError, match="cannot open"):
        EventStore(tmp_path / "missing.db", readonly=True)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to drop privileges")
@pytest.mark.root
def test_permission_denied_for_an_unprivileged_user(tmp_path: Path) -> None:
    """A directory the user may not write, checked honestly as uid 65534 (nobody)."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o755)
    tmp_path.chmod(0o755)
    code = (
        "import sys\n"
        "from netspy_tui.store import EventStore, StoreError\n"
        "try:\n"
        f"    EventStore({str(locked / 'events.db')!r})\n"
        "except StoreError as exc:\n"
        "    print(exc); sys.exit(3)\n"
    )
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=str(Path(__file__).parents[2]))
    if done.returncode not in (0, 3):
        pytest.skip(f"cannot run as nobody here: {done.stderr.strip()[-200:]}")
    assert done.returncode == 3, done.stdout + done.stderr
    line = done.stdout.strip()
    assert str(locked / "events.db") in line and len(line.splitlines()) == 1


@pytest.mark.root
def test_disk_full_raises_to_the_caller_and_the_store_keeps_working(tmp_path: Path) -> None:
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=320k,mode=0700", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        store = EventStore(mount / "events.db", retention_seconds=None)
        failures: list[StoreError] = []
        stored = 0
        for i in range(200):
            batch = [connection(time=_at(i), pid=i, command="x" * 15) for _ in range(50)]
            try:
                store.add_events(batch)
                stored += len(batch)
            except StoreError as exc:
                failures.append(exc)
                if len(failures) >= 3:
                    break
        assert failures, "a 320 KiB filesystem should have filled up"
        exc = failures[0]
        assert exc.lost == 50 and str(mount / "events.db") in str(exc) and "\n" not in str(exc)
        assert "disk" in str(exc).lower()
        # what was stored is still there and readable
        assert store.query(EventQuery(limit=1)).total_count == stored == store.row_count()
        store.close()
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.parametrize("on_disk", [False, True], ids=["memory", "file"])
def test_one_writer_thread_and_concurrent_readers(tmp_path: Path, on_disk: bool) -> None:
    store = EventStore(tmp_path / "events.db" if on_disk else None, retention_seconds=None)
    batches, per_batch = 120, 100
    errors: list[BaseException] = []
    done = threading.Event()
    start = utcnow()

    def write() -> None:
        try:
            for b in range(batches):
                store.add_events(
                    [
                        connection(pid=b % 7, command=f"c{b % 5}", time=start + timedelta(microseconds=b * 1000 + i))
                        for i in range(per_batch)
                    ]
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    def read() -> None:
        last_total = 0
        try:
            while not done.is_set():
                page = store.query(EventQuery(limit=50))
                assert page.total_count >= last_total and page.total_count % per_batch == 0
                assert len(page.events) == min(50, page.total_count)
                stats = store.stats(Scope("connection", None, None, 3600), now=start + timedelta(seconds=10))
                assert stats.total % per_batch == 0 and stats.total == sum(stats.rate_buckets)
                store.query(EventQuery(pid=3, limit=10))
                store.count(Scope("connection", None, "c1", 3600), now=start + timedelta(seconds=10))
                last_total = page.total_count
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    assert store.row_count() == batches * per_batch
    assert store.stats(Scope("connection", window=3600), now=start + timedelta(seconds=10)).total == batches * per_batch
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.query(EventQuery())


def test_body_column_holds_the_event_json(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    event = connection(time=_at(0))
    with EventStore(path) as store:
        store.add_events([event])
    with sqlite3.connect(path) as db:
        (text,) = db.execute("SELECT body FROM events").fetchone()
    assert json.loads(text)["destination"] == event.destination
    assert isinstance(parse_event(json.loads(text)), ConnectionEvent | PacketDropEvent)


def test_timings_are_not_pathological_for_a_modest_store() -> None:
    """A smoke check of the indexes (the real figures come from the benchmark)."""
    now = utcnow()
    events = [connection(pid=i % 50, command=f"p{i % 20}", time=now - timedelta(milliseconds=i)) for i in range(20_000)]
    with EventStore() as store:
        store.add_events(events)
        t0 = time.perf_counter()
        store.query(EventQuery(pid=7, limit=100))
        store.query(EventQuery(limit=100))
        assert time.perf_counter() - t0 < 1.0


def test_pruning_in_small_chunks_removes_everything_due(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "PRUNE_CHUNK", 7)
    now = utcnow()
    old = [connection(time=now - timedelta(hours=5), pid=1) for _ in range(30)]
    old += [drop(time=now - timedelta(hours=5), pid=1) for _ in range(12)]
    new = [connection(time=now - timedelta(seconds=i), pid=2) for i in reversed(range(50))]  # oldest first
    with EventStore(retention_seconds=3600, max_rows=20) as store:
        store.add_events(old + new)
        assert store.prune() == 42 + 30
        assert store.row_count() == 20
        page = store.query(EventQuery(limit=100))
        assert page.total_count == 20 and {e.pid for e in page.events} == {2}
        assert [e.time for e in page.events] == [now - timedelta(seconds=i) for i in range(20)]  # the last inserted
        assert store.query(EventQuery(kind="packet_drop")).total_count == 0


def test_counting_a_big_window_as_total_minus_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "COUNT_PROBE", 4)
    now = BASE_TIME
    inside = [connection(time=now - timedelta(seconds=i)) for i in range(20)]
    before = [connection(time=now - timedelta(seconds=100 + i)) for i in range(3)]
    after = [connection(time=now + timedelta(seconds=1 + i)) for i in range(2)]
    with EventStore() as store:
        store.add_events(before + inside + after + [drop(time=now)])
        assert store.count(Scope("connection", None, None, 60), now=now) == 20
        assert store.query(EventQuery(since=now - timedelta(seconds=60), until=now, limit=5)).total_count == 20
        assert store.query(EventQuery(since=now - timedelta(seconds=60), limit=5)).total_count == 22
        assert store.count(Scope("connection", None, None, 3 * 3600), now=now + timedelta(hours=1)) == 25
        monkeypatch.setattr(store_module, "COUNT_PROBE", 2)  # too many outside: counted directly
        assert store.count(Scope("connection", None, None, 60), now=now) == 20


@contextmanager
def held_background_load(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The background load of a reopened file's last hour held until the block ends; a window that
    needs it waits for it (up to two minutes), so an answer that comes at once did not use it."""
    gate = threading.Event()
    load = EventStore._load_in_background

    def held(self: EventStore, floor: int) -> None:
        gate.wait(120)
        load(self, floor)

    monkeypatch.setattr(EventStore, "_load_in_background", held)
    monkeypatch.setattr(store_module, "LOAD_WAIT", 120.0)
    try:
        yield
    finally:
        gate.set()


def unclosed_copy(path: Path, to: Path) -> None:
    """A store's files as a crash leaves them (copied while it is open)."""
    for suffix in ("", "-wal"):
        if Path(f"{path}{suffix}").exists():
            shutil.copyfile(f"{path}{suffix}", f"{to}{suffix}")


def test_a_reopened_store_answers_the_same_while_and_after_it_loads(tmp_path: Path) -> None:
    """Rollups come back from the file, newest first, a slice at a time (a window waits for its
    seconds), with what was written meanwhile; every answer equals a read-only view of the file."""
    from bench import synth

    path = tmp_path / "events.db"
    with EventStore(tmp_path / "written.db", retention_seconds=None, max_rows=None) as store:
        store.write(list(synth.batches(30_000, 600, seed=1)))
        unclosed_copy(tmp_path / "written.db", path)  # (no memory kept at close: read from the file)
    store = EventStore(path, retention_seconds=None, max_rows=None)
    try:
        store.write(list(synth.batches(3_000, 5, seed=2)))  # (while the memory may still be loading)
        assert store._loaded.wait(30), "the rollups were not loaded into memory"
        assert store.rollups.since is not None and store.rollups.since <= second_of(utcnow()) - 3600
        store.write(list(synth.batches(2_000, 3, seed=3)))
        now = utcnow()
        with EventStore(path, readonly=True) as view:
            for kind in ("connection", "packet_drop"):
                for window, pid, command in ((600, None, None), (60, None, "curl"), (600, 1001, None)):
                    assert store.stats(Scope(kind, pid, command, window), now=now) == view.stats(  # type: ignore[arg-type]
                        Scope(kind, pid, command, window),
                        now=now,  # type: ignore[arg-type]
                    )
                    assert store.count(Scope(kind, pid, command, window), now=now) == view.count(  # type: ignore[arg-type]
                        Scope(kind, pid, command, window),
                        now=now,  # type: ignore[arg-type]
                    )
        assert store.count(Scope("connection", window=700)) + store.count(Scope("packet_drop", window=700)) == 35_000
    finally:
        store.close()


def test_a_reopened_store_counts_at_once_while_its_memory_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A count does not wait for the background load of the last hour: SQLite sums the coarse
    tables at once, exact; a window's figures (rate buckets per second) wait for their seconds."""
    from bench import synth

    path = tmp_path / "events.db"
    with EventStore(tmp_path / "written.db", retention_seconds=None, max_rows=None) as store:
        store.write(list(synth.batches(20_000, 600, seed=1)))
        unclosed_copy(tmp_path / "written.db", path)  # (no memory kept at close: read from the file)
    with EventStore(path, readonly=True) as view:
        now = utcnow()
        expected = {
            (kind, pid, command): view.count(Scope(kind, pid, command, 900), now=now)  # type: ignore[arg-type]
            for kind in ("connection", "packet_drop")
            for pid, command in ((None, None), (None, "curl"), (1001, None))
        }
    assert expected[("connection", None, None)] > 10_000
    with held_background_load(monkeypatch), EventStore(path, retention_seconds=None, max_rows=None) as store:
        got: dict[tuple[str, int | None, str | None], int] = {}

        def count_all() -> None:
            for kind, pid, command in expected:
                got[(kind, pid, command)] = store.count(Scope(kind, pid, command, 900), now=now)  # type: ignore[arg-type]

        counting = threading.Thread(target=count_all)
        counting.start()
        counting.join(60)
        assert not counting.is_alive(), "a count waited for the memory to load"
        assert not store._loaded.is_set()
        assert got == expected
