"""serve --forward's encoding: what it posts for the events of its store is exactly what
``event_json`` of each event (with this node's identity over the event's own) gives, valid by the
contract, whether an event takes the fast path (its stored JSON, no model) or the model path; and it
posts a batch once it is full or once per interval, not once per event that settled."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from netspy_tui.collector.base import Batch
from netspy_tui.models import ConnectionEvent, PacketDropEvent, parse_event
from netspy_tui.serve import forward as F
from netspy_tui.serve.app import event_json
from netspy_tui.store import EventStore
from tests.contract import validate_event
from tests.factories import connection, connection_json, drop_json
from tests.fake_aggregator import FakeAggregator
from tests.serve.test_forward import IDENTITY, until

WHEN = datetime(2026, 11, 24, 11, 59, 0, 123456, tzinfo=UTC)


def _varied() -> list[ConnectionEvent | PacketDropEvent]:
    """Events of every shape a store holds: plain ones (the fast path) and each case it leaves to the model."""
    items: list[dict[str, Any]] = [
        connection_json(pid=1, time=WHEN, command="curl"),
        connection_json(pid=2, time=WHEN, ip="2001:db8::1", port=8443, hostname="example.org", outcome="ok"),
        connection_json(pid=2, time=WHEN, protocol_inferred=False, workload="nginx.service", thread="worker-1"),
        connection_json(pid=3, time=WHEN, protocol="UDP", port=53, return_code=-111, outcome="refused"),
        connection_json(pid=4, time=WHEN, command="snowman \u2603 \U0001f600", k8s_node_name="elsewhere"),
        connection_json(pid=5, time=WHEN, protocol="MPTCP"),  # no contract name: Unknown(6) + protocol_name
        connection_json(pid=6, time=WHEN.replace(microsecond=0)),  # pydantic writes no fraction
        connection_json(pid=7, time=WHEN, raw_ipv6=[]),  # derived from destination_ip on the way out
        connection_json(pid=8, time=WHEN, id=""),  # a stable id made on the way out
        connection_json(pid=9, time=WHEN, custom={"nested": None, "n": 1}),  # an extension field
        connection_json(pid=10, time=WHEN, big=2**70),  # beyond 64 bits (orjson refuses it)
        drop_json(pid=11, time=WHEN, reason="NO_SOCKET", code=3, protocol="UDP"),
        drop_json(pid=12, time=WHEN, reason="TCP_DROP", code=2),
        drop_json(pid=13, time=WHEN, reason="NETFILTER_DROP", code=12, protocol="TCP", destination="10.0.0.1:80"),
        drop_json(pid=14, time=WHEN, reason="UNKNOWN(7)", code=7),
        drop_json(pid=15, time=WHEN, reason="OTHERHOST", code=16),
    ]
    events = [parse_event(item) for item in items]
    plus2 = timezone(timedelta(hours=2))
    events.append(connection(pid=16).model_copy(update={"time": WHEN.astimezone(plus2)}))  # an offset, not Z
    return events


def _exactly(events: list[dict[str, Any]]) -> list[str]:
    """Each object as canonical JSON text: equal only if every value is, type included (``1 == True`` in Python)."""
    return [json.dumps(e, sort_keys=True) for e in events]


def test_the_posted_json_is_event_json_with_the_identity_for_every_kind_of_event(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "spool.db")
    events = _varied()
    store.add_events(events)
    built, _ = store.after(0, 1000, 2**62)
    stored, _ = store.after_stored(0, 1000, 2**62)
    assert [q for q, _ in built] == [q for q, _ in stored] and len(built) == len(events)
    identity = {"k8s_node_name": "node-a", "k8s_pod_name": "agent-x", "k8s_namespace": "netspy"}
    got = json.loads(F.encode_batch([item for _, item in stored], identity))["events"]
    want = []
    for _, event in built:
        data = event_json(event, identity)
        data.update(identity)
        want.append(data)
    assert _exactly(got) == _exactly(want)
    as_text = [item.decode() if isinstance(item, bytes) else item for _, item in stored]  # (a TEXT body)
    assert _exactly(json.loads(F.encode_batch(as_text, identity))["events"]) == _exactly(want)
    # built events (what a ring record is read back as) and a batch mixing them with stored JSON: the same
    as_built = [event for _, event in built]
    assert _exactly(json.loads(F.encode_batch(as_built, identity))["events"]) == _exactly(want)
    mixed = [s if i % 2 else b for i, ((_, s), (_, b)) in enumerate(zip(stored, built, strict=True))]
    assert _exactly(json.loads(F.encode_batch(mixed, identity))["events"]) == _exactly(want)
    plain = [item for _, item in stored[:5]] + [item for _, item in stored[11:16]]  # (the batch decoded at once)
    assert _exactly(json.loads(F.encode_batch(plain, identity))["events"]) == _exactly(want[:5] + want[11:16])
    for obj in got:
        if "big" not in obj:  # (the contract's integers are 64-bit; an extension field is the sender's)
            validate_event(obj)
    assert got[5]["protocol"] == "Unknown(17)" and got[5]["protocol_name"] == "MPTCP"
    assert got[11]["drop_reason"] == "UDP_DROP" and got[11]["kernel_drop_reason"] == "NO_SOCKET"
    assert got[4]["command"] == "snowman \u2603 \U0001f600" and got[4]["k8s_node_name"] == "node-a"
    store.close()


def test_plain_stored_events_take_the_fast_path(tmp_path: Path, monkeypatch: Any) -> None:
    store = EventStore(tmp_path / "spool.db")
    store.add_events(_varied()[:5] + _varied()[11:16])
    stored, _ = store.after_stored(0, 1000, 2**62)
    assert all(isinstance(item, bytes) for _, item in stored)

    def no_model(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a plain stored event went through a model")

    monkeypatch.setattr(F, "event_json", no_model)
    events = json.loads(F.encode_batch([item for _, item in stored], IDENTITY))["events"]
    assert len(events) == 10 and {e["k8s_node_name"] for e in events} == {"node-a"}
    store.close()


def _varied_records(n: int = 300, seed: int = 3) -> np.ndarray:
    """Ring records of every shape the forwarder meets: connects and drops (synthetic spread), and the cases
    its templates must get right."""
    from bench import synth
    from netspy_tui.collector.ebpf import programs as P

    recs = next(synth.batches(n, 50, seed=seed, batch=n)).records
    assert recs is not None
    connects = np.flatnonzero(recs["kind"] == P.KIND_CONNECT)
    drops = np.flatnonzero(recs["kind"] == P.KIND_DROP)
    recs["protocol"][connects[:3]] = 262  # MPTCP: Unknown(262) and protocol_name on the way out
    recs["thread"][connects[3:6]] = b"worker-1"  # a thread named unlike its process
    recs["thread"][connects[6]] = recs["comm"][connects[6]]  # a thread named as its process: no "thread"
    recs["thread"][drops[:2]] = b"ksoftirqd/0"
    recs["wall"][connects[7]] = recs["wall"][connects[7]] // 10**9 * 10**9  # a whole second
    recs["comm"][connects[8:10]] = "snowman \u2603 100%".encode()  # non-ASCII, and a % in a template's values
    recs["comm"][connects[10]] = b'\xff\xfebad"q'  # not UTF-8 (replaced), a quote to escape
    recs["comm"][connects[13:15]] = b"back\\slash\x01\t\x1f"  # a backslash and control characters to escape
    recs["thread"][connects[14:16]] = b'q"t\\\x7f\x00x'  # in a thread's name too (a NUL ends it, as in the kernel)
    recs["comm"][drops[6]] = "\u00e9t\u00e9 \U0001f600".encode()[:15]  # non-ASCII cut mid-character
    recs["flags"][connects[11]] |= P.F_MAPPED  # an IPv6 socket to an IPv4-mapped address: socket_family
    recs["sockfam"][connects[11]] = P.AF_INET6
    recs["code"][drops[2]] = 77  # a drop reason the kernel named no name for
    recs["pid"][connects[12]] = 2**32 - 1
    # the same destination and outcome again with other ids, pids, commands and times: one template, filled in
    recs[connects[20:30]] = recs[connects[19]]
    recs["pid"][connects[20:30]] += np.arange(10, dtype=np.uint32)
    recs["comm"][connects[25:30]] = b"other"
    recs["length"][drops[3:6]] = (40, 41, 1500)  # a drop's lengths differ per event
    return recs


def _write_varied(store: EventStore) -> None:
    """:func:`_varied_records` stored, and the kernel's outcome of the first connect stored in progress."""
    from bench import synth
    from netspy_tui.collector.ebpf import programs as P

    recs = _varied_records()
    store.write([Batch(records=recs, codec=synth.codec())])
    pending = recs[(recs["flags"] & P.F_PENDING) != 0]
    outcome = np.zeros(1, P.RECORD)
    outcome["kind"], outcome["key"], outcome["wall"], outcome["result"] = (P.KIND_OUTCOME, pending["key"][0],
                                                                           pending["wall"][0], 111)  # fmt: skip
    store.write([Batch(records=outcome, codec=synth.codec())])


def test_ring_records_are_forwarded_as_their_models_would_be(tmp_path: Path) -> None:
    """The eBPF collector's records (chunks, not JSON rows): what the forwarder makes of them (each event's JSON
    from a template per record shape, no model) posts what their built events' event_json gives."""

    store = EventStore(tmp_path / "spool.db")
    _write_varied(store)
    built, _ = store.after(0, 1000, 2**62)
    stored, _ = store.after_stored(0, 1000, 2**62, F.RecordJson(IDENTITY))
    assert len(built) == 300 and all(isinstance(item, msgspec.Raw) for _, item in stored)
    got = json.loads(F.encode_batch([item for _, item in stored], IDENTITY))["events"]
    assert sum("protocol_name" in e for e in got) == 3 and sum(e.get("thread") == "worker-1" for e in got) == 3
    assert sum(e.get("thread") == "ksoftirqd/0" for e in got) == 2 and sum("socket_family" in e for e in got) == 1
    assert sum(e.get("outcome") == "refused" and e["return_code"] == -115 for e in got) == 1  # (resolved later)
    assert got == [{**event_json(e, IDENTITY), **IDENTITY} for _, e in built]
    for obj in got:
        validate_event(obj)
    # after a JSON row (each on its own), and with an identity the structs have no field for (event_json)
    row = connection(pid=1).__pydantic_serializer__.to_json(connection(pid=1))
    mixed = [row] + [item for _, item in store.after_stored(0, 1000, 2**62, F.RecordJson(IDENTITY))[0]]
    assert json.loads(F.encode_batch(mixed, IDENTITY))["events"][1:] == got
    other = {**IDENTITY, "cluster": "c1"}
    again = [item for _, item in store.after_stored(0, 1000, 2**62, F.RecordJson(other))[0]]
    assert json.loads(F.encode_batch(again, other))["events"] == [{**event_json(e, other), **other} for _, e in built]
    store.close()


@pytest.mark.parametrize("identity", [IDENTITY, {"k8s_node_name": 'n"1', "k8s_pod_name": "p%d", "k8s_namespace": "ns"}])
def test_ring_records_templates_write_the_bytes_their_structs_write(
    tmp_path: Path, identity: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Byte for byte: a template filled in per event is what encoding the event's struct writes (the JSON the
    forwarder posted before it had templates), for every shape, read twice (the second time from the templates
    the first made), and after the store learns new drop reason names (new templates)."""
    from bench import synth

    store = EventStore(tmp_path / "spool.db")
    _write_varied(store)
    make = F.RecordJson(identity)

    def structs(codec: Any, recs: np.ndarray, ids: list[str], outcomes: list[str | None]) -> list[Any]:
        return codec.events(recs, ids, outcomes, connection=F._connection, drop=F._drop, time_of=F._time_text)

    alone = 0
    encode_alone = F.RecordJson._alone

    def counted(*args: Any) -> Any:
        nonlocal alone
        alone += 1
        return encode_alone(*args)

    monkeypatch.setattr(F.RecordJson, "_alone", counted)
    want = F.encode_batch([item for _, item in store.after_stored(0, 1000, 2**62, structs)[0]], identity)
    for _ in range(2):
        assert F.encode_batch([item for _, item in store.after_stored(0, 1000, 2**62, make)[0]], identity) == want
    assert alone == 2 * 3  # (only the MPTCP connects: every other record from its template)
    assert "UNKNOWN(77)" in want.decode()
    codec = synth.codec()
    codec.drop_reasons[77] = "SOME_NEW_REASON"
    recs = _varied_records()
    store.write([Batch(records=recs[recs["code"] == 77], codec=codec)])  # (a store learns names from a write)
    want = F.encode_batch([item for _, item in store.after_stored(0, 1000, 2**62, structs)[0]], identity)
    assert "SOME_NEW_REASON" in want.decode()
    assert F.encode_batch([item for _, item in store.after_stored(0, 1000, 2**62, make)[0]], identity) == want
    store.close()


async def test_a_batch_goes_out_when_full_or_once_per_interval(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "spool.db")
    store.add_events([connection(pid=1, port=20000 + i, ago=30) for i in range(250)])
    with FakeAggregator() as agg:
        fw = F.Forwarder(store, agg.url + "/api/events/ingest", batch=100, interval=3600, identity=IDENTITY)
        task = asyncio.create_task(fw.run())
        # full batches go at once, one after the other; the last, partial one too
        await until(lambda: len(agg.received()) >= 250, "the 250 stored events")
        assert agg.batches == 3
        store.add_events([connection(pid=1, port=30000 + i, ago=30) for i in range(10)])
        await asyncio.sleep(0.5)  # the forwarder now waits its interval: the 10 new events wait with it
        assert agg.batches == 3 and len(agg.received()) == 250
        fw.stop()
        await task
    store.close()


def test_ring_records_between_json_rows_keep_their_order(tmp_path: Path) -> None:
    """A store with JSON rows between runs of ring records (a collector changed with ``--db`` kept): the body
    lists every event in insertion order, from the start and from inside a run or a JSON row."""
    from bench import synth

    store = EventStore(tmp_path / "spool.db")
    recs = _varied_records()
    store.write([Batch(records=recs[:100], codec=synth.codec())])
    store.add_events([connection(pid=1, port=20000 + i, ago=30) for i in range(3)])
    store.write([Batch(records=recs[100:], codec=synth.codec())])
    store.add_events([connection(pid=2, port=30000, ago=30)])
    built, _ = store.after(0, 1000, 2**62)
    stored, _ = store.after_stored(0, 1000, 2**62, F.RecordJson(IDENTITY))
    assert [q for q, _ in stored] == [q for q, _ in built] == list(range(1, 305))
    got = json.loads(F.encode_batch([item for _, item in stored], IDENTITY))["events"]
    assert [e["pid"] for e in got[100:103]] == [1, 1, 1] and got[-1]["pid"] == 2
    assert got == [{**event_json(e, IDENTITY), **IDENTITY} for _, e in built]
    for start in (50, 101, 102):  # (from inside a run, and from a JSON row)
        rows, _ = store.after_stored(start, 1000, 2**62, F.RecordJson(IDENTITY))
        assert json.loads(F.encode_batch([item for _, item in rows], IDENTITY))["events"] == got[start:]
    store.close()


async def test_ring_records_forwarded_in_batches_post_the_bytes_each_event_alone_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An eBPF agent's store forwarded by the forwarder (posts to an aggregator): every body is byte for byte what
    each event's own JSON (:meth:`RecordJson.__call__`, the struct's encoding) joined gives, for batches whose
    records share pieces with earlier batches' and bring new ones (places, threads, commands, pids of every width,
    timestamps of other widths, drops' lengths, outcomes resolved, every shape :func:`_varied_records` has), with an
    identity whose text a template must escape."""
    from bench import synth
    from netspy_tui.collector.ebpf import programs as P

    identity = {"k8s_node_name": 'n"1', "k8s_pod_name": "p%d", "k8s_namespace": "ns"}
    monkeypatch.setattr(F, "SETTLE_SECONDS", 0.0)  # (the varied records' newest are from the last two seconds)
    store = EventStore(tmp_path / "spool.db")
    _write_varied(store)
    rng = np.random.default_rng(5)
    for i in range(4):
        recs = synth.records(1500, 2.0, rng, now_wall_ns=int(WHEN.timestamp() * 1e9) + i * 10**9)
        recs["thread"][::7] = b"worker\xff\x01"
        recs["pid"][::13] = rng.integers(0, 2**32, len(recs[::13]), dtype=np.uint64).astype(np.uint32)
        recs["ts"][::11] = rng.integers(0, 10**6, len(recs[::11]), dtype=np.uint64)
        recs["ts"][5::11] = 2**64 - 1 - rng.integers(0, 10**6, len(recs[5::11]), dtype=np.uint64)
        recs["length"][recs["kind"] == P.KIND_DROP] = rng.integers(0, 70000, int((recs["kind"] == P.KIND_DROP).sum()))
        store.write([Batch(records=recs, codec=synth.codec())])
    built, _ = store.after_stored(0, 10_000, 2**62, F.RecordJson(identity))
    want = [bytes(item) for _, item in built]
    with FakeAggregator() as agg:
        fw = F.Forwarder(store, agg.url + "/api/events/ingest", batch=1000, interval=3600, identity=identity)
        task = asyncio.create_task(fw.run())
        await until(lambda: len(agg.received()) >= len(want) or fw.status.failures > 0, "every stored event")
        assert fw.status.failures == 0, fw.status.last_error
        fw.stop()
        await task
        bodies = agg.bodies()
    assert len(want) == 6300 and agg.batches == 7
    assert bodies == [b'{"events":[' + b",".join(want[i : i + 1000]) + b"]}" for i in range(0, len(want), 1000)]
    store.close()


async def test_ring_records_written_while_forwarding_are_taken_as_stored_not_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An eBPF agent forwarding as its collector writes: the ring records the writer stores while the forwarder
    runs are taken as the writer handed them over (:meth:`EventStore.on_records`), not read back from the store's
    chunks, and the bodies are byte for byte what the events read back from the store give (ids, outcomes resolved
    in the same write, every shape of :func:`_varied_records`, pids, threads and timestamps of every width, drops'
    lengths); what was stored before the forwarder started is read from the store."""
    from bench import synth
    from netspy_tui.collector.ebpf import programs as P

    identity = {"k8s_node_name": 'n"1', "k8s_pod_name": "p%d", "k8s_namespace": "ns"}
    monkeypatch.setattr(F, "SETTLE_SECONDS", 0.0)
    store = EventStore(tmp_path / "spool.db")
    _write_varied(store)  # (before the forwarder: read back)
    read_back = 0
    after_pieces = store.after_pieces

    def counted(*args: Any) -> Any:
        nonlocal read_back
        got = after_pieces(*args)
        read_back += 0 if got is None else len(got[0][2]) // F.PIECES
        return got

    monkeypatch.setattr(store, "after_pieces", counted)
    rng = np.random.default_rng(9)
    with FakeAggregator() as agg:
        fw = F.Forwarder(store, agg.url + "/api/events/ingest", batch=1000, interval=0.05, identity=identity)
        task = asyncio.create_task(fw.run())
        await until(lambda: len(agg.received()) >= 300, "the events stored before")
        assert read_back == 300
        for i in range(4):  # (written as the forwarder runs: batches across writes, and a write across batches)
            recs = synth.records(1500, 2.0, rng, now_wall_ns=int(WHEN.timestamp() * 1e9) + i * 10**9)
            recs["thread"][::7] = b"worker\xff\x01"
            recs["pid"][::13] = rng.integers(0, 2**32, len(recs[::13]), dtype=np.uint64).astype(np.uint32)
            recs["ts"][5::11] = 2**64 - 1 - rng.integers(0, 10**6, len(recs[5::11]), dtype=np.uint64)
            recs["key"][recs["key"] != 0] += np.uint64((i + 1) << 24)  # (sockets of their own: none resolved late)
            drops = recs["kind"] == P.KIND_DROP
            recs["length"][drops] = rng.integers(0, 70000, int(drops.sum()))
            pending = recs[(recs["flags"] & P.F_PENDING) != 0][:3]
            outcome = np.zeros(len(pending), P.RECORD)  # (resolved in the same write: sent with their outcome)
            outcome["kind"], outcome["key"], outcome["wall"], outcome["result"] = (P.KIND_OUTCOME, pending["key"],
                                                                                   pending["wall"], 111)  # fmt: skip
            store.write([Batch(records=np.concatenate([recs, outcome]), codec=synth.codec())])
            await asyncio.sleep(0.03)
        await until(lambda: len(agg.received()) >= 6300 or fw.status.failures > 0, "every stored event")
        assert fw.status.failures == 0, fw.status.last_error
        fw.stop()
        await task
        bodies = agg.bodies()
    assert read_back == 300  # (nothing written since the start read back)
    want = [bytes(item) for _, item in store.after_stored(0, 10_000, 2**62, F.RecordJson(identity))[0]]
    assert len(want) == 6300 and sum(b'"outcome":"refused"' in w for w in want) >= 12
    assert all(len(b) > 13 and b.startswith(b'{"events":[') and b.endswith(b"]}") for b in bodies)
    assert b",".join(b[len(b'{"events":[') : -2] for b in bodies) == b",".join(want)
    store.close()


async def test_the_outcomes_are_read_only_after_the_store_wrote_some(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forwarder's round reads the outcomes resolved since the last round only once the store wrote one (a read a
    round, whatever it found, cost more than forwarding may); the outcome of a connect forwarded in progress still
    goes, in the round after it was written."""
    from bench import synth
    from netspy_tui.collector.ebpf import programs as P

    monkeypatch.setattr(F, "SETTLE_SECONDS", 0.0)
    store = EventStore(tmp_path / "spool.db")
    recs = _varied_records()
    store.write([Batch(records=recs, codec=synth.codec())])
    reads = 0
    read = store.resolved_stored

    def counted(*args: Any) -> Any:
        nonlocal reads
        reads += 1
        return read(*args)

    monkeypatch.setattr(store, "resolved_stored", counted)
    with FakeAggregator(answer="updates") as agg:
        fw = F.Forwarder(store, agg.url + "/api/events/ingest", interval=0.05, identity=IDENTITY)
        rounds = 0
        forward_batch = fw._forward_batch

        async def round_counted() -> int:
            nonlocal rounds
            rounds += 1
            return await forward_batch()

        monkeypatch.setattr(fw, "_forward_batch", round_counted)
        task = asyncio.create_task(fw.run())
        await until(lambda: rounds >= 10, "ten rounds")
        assert len(agg.received()) == len(recs) and reads == 0
        pending = recs[(recs["flags"] & P.F_PENDING) != 0]
        outcome = np.zeros(1, P.RECORD)
        outcome["kind"], outcome["key"], outcome["wall"], outcome["result"] = (P.KIND_OUTCOME, pending["key"][0],
                                                                               pending["wall"][0], 111)  # fmt: skip
        store.write([Batch(records=outcome, codec=synth.codec())])
        await until(lambda: fw.status.resolved == 1, "the outcome sent")
        settled = reads
        await until(lambda: rounds >= 20, "ten more rounds")
        fw.stop()
        await task
    assert 1 <= settled and reads == settled  # (read when written; not again since)
    assert [e["outcome"] for e in agg.received()[len(recs) :]] == ["refused"]
    store.close()


def test_the_forwarders_tables_stay_bounded_over_many_new_destinations(monkeypatch: Any) -> None:
    """An agent forwarding for days to ever new destinations: every table the batch encoder keeps (shapes, places,
    their templates) is bounded, not only the numbered ones (found by the review: the templates grew by one per
    new shape for good)."""
    from bench import synth

    monkeypatch.setattr(F, "TEMPLATES_KEPT", 1000)
    codec = synth.codec()
    encoder = F.RecordJson({"k8s_node_name": "n"})
    rng = np.random.default_rng(0)
    for batch in range(20):
        recs = synth.records(500, 5.0, rng, now_wall_ns=int(1.7e18) + batch * 10**9, drop_share=0)
        recs["port"] = np.arange(batch * 500, batch * 500 + 500) % 65536
        encoder.pieces(codec, recs, np.arange(500, dtype=np.uint64), [None] * 500)
    assert len(encoder._shapes_n) <= 1500 and len(encoder._places) <= 1500
    assert len(encoder._templates) <= 1500


def test_a_body_joined_in_blocks_is_the_body_joined_at_once() -> None:
    """:func:`forward.body_of` (pieces joined a block at a time, then the blocks) gives the bytes of the pieces
    joined at once in the body's brackets, for any number of pieces: none, fewer than a block, a block exactly,
    one past it, many blocks, and empty pieces among them."""
    rng = np.random.default_rng(11)
    step = F.BODY_PIECES
    for n in (0, 1, step - 1, step, step + 1, 3 * step, 5 * step + 7):
        pieces = [rng.bytes(int(k)) for k in rng.integers(0, 40, n)]
        assert F.body_of(pieces) == b'{"events":[' + b"".join(pieces) + b"]}", n
