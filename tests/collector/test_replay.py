"""Replaying recordings: same file in, same results out; malformed files named by line."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from netspy_tui.collector.replay import (
    Recorder,
    ReplayCollector,
    ReplayFileError,
    check_recording,
    iter_recording,
    record_sink,
)
from netspy_tui.errors import CollectorError, NetspyError
from netspy_tui.models import ConnectionEvent, EventQuery, PacketDropEvent, Scope, parse_event, utcnow
from netspy_tui.store import EventStore
from tests.factories import BASE_TIME, connection_json, drop_json

pytestmark = pytest.mark.quiet

DEMO = Path(__file__).parents[1] / "data" / "demo.jsonl"
AnyEvent = ConnectionEvent | PacketDropEvent


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def write_recording(path: Path, items: Sequence[dict[str, Any] | str]) -> Path:
    path.write_text("".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in items))
    return path


def varied_events(n: int = 300) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for i in range(n):
        when = BASE_TIME + timedelta(milliseconds=37 * i)
        if i % 7 == 0:
            items.append(drop_json(pid=100 + i % 3, reason=["TCP_DROP", "NETFILTER_DROP"][i % 2], time=when))
        else:
            items.append(
                connection_json(
                    pid=200 + i % 5,
                    command=f"cmd{i % 4}",
                    port=[53, 443, 5432][i % 3],
                    return_code=[0, -111, -115][i % 3],
                    time=when,
                    timestamp=i,
                    **({"outcome": "timeout"} if i % 11 == 0 else {}),
                )
            )
    return items


class ListSink:
    def __init__(self) -> None:
        self.batches: list[list[AnyEvent]] = []
        self.lock = threading.Lock()

    def __call__(self, events: Sequence[AnyEvent]) -> None:
        with self.lock:
            self.batches.append(list(events))

    @property
    def events(self) -> list[AnyEvent]:
        with self.lock:
            return [e for b in self.batches for e in b]


def replay_into_store(path: Path, speed: float = 0) -> tuple[EventStore, ReplayCollector, datetime]:
    store = EventStore()
    collector = ReplayCollector(path, speed=speed)
    collector.start(store.add_events)
    assert collector.wait(30), "replay did not finish"
    finished = utcnow()
    assert collector.stats.events == store.row_count() and collector.stats.lost == 0
    return store, collector, finished


def _unshift_token(token: str, offset: timedelta) -> str:
    t, rest = token.split(":", 1)
    return f"{int(t) - offset // timedelta(microseconds=1) * 1000}:{rest}"


def _unshift(value: Any, offset: timedelta) -> Any:
    if isinstance(value, datetime):
        return value - offset
    if isinstance(value, dict):  # (a page's token, "t_ns:timestamp:seq", names its last event's time too)
        return {k: _unshift_token(v, offset) if k == "before" and v else _unshift(v, offset) for k, v in value.items()}
    if isinstance(value, list):
        return [_unshift(v, offset) for v in value]
    return value


def test_same_file_gives_the_same_results_apart_from_the_shift(tmp_path: Path) -> None:
    path = write_recording(tmp_path / "rec.jsonl", varied_events())
    runs = []
    for _ in range(2):
        store, collector, finished = replay_into_store(path)
        newest = store.newest_time()
        assert newest is not None and newest <= finished and (finished - newest).total_seconds() < 5
        results = []
        for kind in ("connection", "packet_drop"):
            for pid, command in ((None, None), (201, None), (None, "cmd2")):
                for window in (1, 5, 60):
                    results.append(store.stats(Scope(kind, pid, command, window), now=newest).model_dump())
            results.append(store.query(EventQuery(kind=kind, limit=500)).model_dump())
            recent = EventQuery(kind=kind, pid=100, since=newest - timedelta(seconds=4))
            results.append(store.query(recent).model_dump())
        runs.append(_unshift(results, collector.offset))
        store.close()
    assert runs[0] == runs[1]
    assert runs[0][0]["total"] > 0 and runs[0][2]["total"] > runs[0][0]["total"]  # the windows held data


def test_rebase_keeps_spacing_and_the_events_themselves(tmp_path: Path) -> None:
    items = varied_events(50)
    path = write_recording(tmp_path / "rec.jsonl", items)
    sink = ListSink()
    collector = ReplayCollector(path, speed=0)
    collector.start(sink)
    assert collector.wait(10)
    got = sink.events
    originals = [parse_event(item) for item in items]
    assert len(got) == len(originals)
    for replayed, original in zip(got, originals, strict=True):
        assert replayed.time - collector.offset == original.time
        assert replayed.source == "replay"
        assert replayed.model_copy(update={"time": original.time, "source": None}) == original
    assert collector.offset > timedelta(days=0)  # the recording is in the past
    plain = ReplayCollector(path, speed=0, rebase=False)
    sink2 = ListSink()
    plain.start(sink2)
    assert plain.wait(10)
    assert [e.time for e in sink2.events] == [e.time for e in originals] and plain.offset == timedelta(0)


def test_the_demo_recording_replays(tmp_path: Path) -> None:
    store, collector, _ = replay_into_store(DEMO)
    assert store.row_count() == sum(1 for line in DEMO.read_text().splitlines() if line.strip())
    assert store.stats(Scope("connection", None, None, 3600)).total > 0
    store.close()


def test_speed_paces_the_replay(tmp_path: Path) -> None:
    # 41 events over 20 seconds of recorded time, replayed at 10x: at least 2 s of wall time, in
    # batches of at most half a second (BATCH_SLACK)
    items = [connection_json(time=BASE_TIME + timedelta(milliseconds=500 * i), timestamp=i) for i in range(41)]
    path = write_recording(tmp_path / "rec.jsonl", items)
    sink = ListSink()
    collector = ReplayCollector(path, speed=10)
    started = time.monotonic()
    collector.start(sink)
    wait_until(lambda: len(sink.events) >= 1, what="the first event")
    assert len(sink.events) < 41  # not all at once
    assert collector.wait(20)
    elapsed = time.monotonic() - started
    assert elapsed >= 2 * 0.95
    assert len(sink.batches) >= 3  # delivered over time, in several batches
    got = sink.events
    assert [e.timestamp for e in got] == list(range(41))
    # the last event is stamped (about) when the replay finished, the first 4 s before it
    assert abs((utcnow() - got[-1].time).total_seconds()) < 2
    assert got[-1].time - got[0].time == timedelta(seconds=20)


def test_no_event_reaches_the_sink_before_its_time(tmp_path: Path) -> None:
    # 51 events 20 ms apart at their own pace: batched (a store write per half second, not per
    # event), but each batch goes out once its last event is due, never ahead of the recording
    items = [connection_json(time=BASE_TIME + timedelta(milliseconds=20 * i), timestamp=i) for i in range(51)]
    path = write_recording(tmp_path / "rec.jsonl", items)
    arrivals: list[tuple[float, list[int]]] = []
    started = time.monotonic()

    def sink(events: Sequence[AnyEvent]) -> None:
        arrivals.append((time.monotonic() - started, [e.timestamp for e in events]))

    collector = ReplayCollector(path, speed=1)
    collector.start(sink)
    assert collector.wait(20)
    assert [t for _, batch in arrivals for t in batch] == list(range(51))
    assert 2 <= len(arrivals) <= 4  # ~1 s of events: a batch per half second
    for at, batch in arrivals:
        assert at >= 0.020 * max(batch), (at, batch)  # the batch's last event was due


def test_stop_interrupts_a_slow_replay(tmp_path: Path) -> None:
    items = [connection_json(time=BASE_TIME + timedelta(seconds=60 * i)) for i in range(3)]
    path = write_recording(tmp_path / "rec.jsonl", items)
    sink = ListSink()
    collector = ReplayCollector(path, speed=1)
    collector.start(sink)
    wait_until(lambda: len(sink.events) == 1, what="the first event")
    t0 = time.monotonic()
    collector.stop()
    assert time.monotonic() - t0 < 5 and collector.finished
    assert len(sink.events) == 1


@pytest.mark.parametrize(
    ("line3", "expected"),
    [
        ('{"type": "connection", "pid": 1,', "bad JSON"),
        ("[1, 2, 3]", "expected an event object, got list"),
        (json.dumps(connection_json(pid="abc")), "pid: Input should be a valid integer"),  # type: ignore[arg-type]
        (json.dumps({k: v for k, v in connection_json().items() if k != "time"}), "time: missing"),
        (json.dumps({**connection_json(), "type": "mystery"}), "mystery"),
        (json.dumps({**connection_json(), "time": "yesterday"}), "time: Input should be a valid datetime"),
    ],
    ids=["bad-json", "not-object", "wrong-type", "missing-time", "unknown-type", "bad-time"],
)
def test_a_malformed_line_is_named_by_file_and_line(tmp_path: Path, line3: str, expected: str) -> None:
    path = write_recording(tmp_path / "broken.jsonl", [connection_json(), "", line3, drop_json()])
    collector = ReplayCollector(path, speed=0)
    sink = ListSink()
    with pytest.raises(ReplayFileError) as err:
        collector.start(sink)
    message = str(err.value)
    assert isinstance(err.value, NetspyError) and "\n" not in message
    assert f"{path}:3: " in message and expected in message
    assert sink.events == []  # nothing half-replayed


def test_unreadable_recordings(tmp_path: Path) -> None:
    with pytest.raises(ReplayFileError, match="cannot read recording .*missing.jsonl"):
        ReplayCollector(tmp_path / "missing.jsonl").start(ListSink())
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(json.dumps(connection_json()).encode() + b"\n\xff\xfe\x00garbage\n")
    with pytest.raises(ReplayFileError, match=r"binary.jsonl:2: not UTF-8"):
        check_recording(binary)
    with pytest.raises(CollectorError, match="replay speed"):
        ReplayCollector(binary, speed=-1)


def test_an_empty_recording_replays_nothing(tmp_path: Path) -> None:
    path = write_recording(tmp_path / "empty.jsonl", [])
    sink = ListSink()
    collector = ReplayCollector(path, speed=1)
    collector.start(sink)
    assert collector.wait(5) and sink.events == []


def test_a_failing_sink_is_counted_and_the_replay_goes_on(tmp_path: Path) -> None:
    path = write_recording(tmp_path / "rec.jsonl", varied_events(30))  # 37 ms apart (~1.1 s): several batches
    calls = []

    def flaky(events: Sequence[AnyEvent]) -> None:
        calls.append(len(events))
        if len(calls) == 1:
            raise NetspyError("disk full", "free space")

    collector = ReplayCollector(path, speed=1)
    collector.start(flaky)
    assert collector.wait(10)
    assert len(calls) > 1
    assert collector.stats.lost == calls[0] and collector.stats.events == 30 - calls[0]
    assert collector.stats.errors == 1 and "disk full" in collector.stats.last_error


def test_recorder_writes_json_lines_that_replay_to_the_same_events(tmp_path: Path) -> None:
    source = write_recording(tmp_path / "in.jsonl", varied_events(40))
    out = tmp_path / "out.jsonl"
    inner = ListSink()
    recorder = record_sink(inner, out)
    collector = ReplayCollector(source, speed=0, rebase=False)
    collector.start(recorder)
    assert collector.wait(10)
    # flushed per batch: readable before the recorder is closed
    lines = out.read_text().splitlines()
    assert len(lines) == 40 == len(inner.events) == recorder.written
    assert [parse_event(json.loads(line)) for line in lines] == inner.events
    recorder.close()
    again = ListSink()
    replay = ReplayCollector(out, speed=0, rebase=False)
    replay.start(again)
    assert replay.wait(10)
    assert again.events == inner.events


def test_recorder_keeps_undecodable_text(tmp_path: Path) -> None:
    event = parse_event(connection_json(command="bad\udcffname", extra_field=[1]))
    out = tmp_path / "out.jsonl"
    with Recorder(ListSink(), out) as recorder:
        recorder([event])
    (replayed,) = [e for _, e in iter_recording(out)]
    assert replayed == event


def test_recorder_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CollectorError, match="cannot write recording .*file/out.jsonl"):
        Recorder(ListSink(), blocker / "out.jsonl")


def test_recorder_records_the_events_of_a_collector_batch_and_passes_it_on(tmp_path: Path) -> None:
    """The eBPF collector hands the store batches of ring records and counts: --record writes
    their events, and the batch itself reaches the store unchanged (counts included)."""
    from bench import synth
    from netspy_tui.collector.base import Batch
    from netspy_tui.store import EventStore

    recs = synth.records(50, 10, __import__("numpy").random.default_rng(3))
    batch = Batch(records=recs, counts=synth.counts(recs), codec=synth.codec())
    store = EventStore()
    recorder = Recorder(store, tmp_path / "rec.jsonl")
    recorder.ingest(batch)
    recorder.close()
    store.flush(10)
    lines = (tmp_path / "rec.jsonl").read_text().splitlines()
    recorded = [parse_event(json.loads(line)) for line in lines]
    assert len(recorded) == 50
    assert sorted(e.timestamp for e in recorded) == sorted(recs["ts"].tolist())
    assert store.row_count() == 50
    assert sum(store.count(Scope(k, None, None, 60)) for k in ("connection", "packet_drop")) == 50
    store.close()
