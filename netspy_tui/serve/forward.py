"""``serve --forward URL``: this node's events, batched to an ebpf-server aggregator's
``POST /api/events/ingest`` (body ``{"events": [event, ...]}``, as the contract says), each with
this node's identity.

The store is the spool: events are read from it in insertion order after a cursor kept in the
store itself (so with ``--db`` forwarding resumes where it stopped, across restarts), and the
cursor moves only when the aggregator accepted a batch. While the aggregator is away, events wait
in the store, bounded by its retention and row limit; what retention removes before it was
forwarded is counted as the loss cause ``forward_dropped`` (shown in ``/health``,
``server_status`` and the dashboard header like every loss). Failed batches are retried with
exponential backoff and jitter; forwarding runs beside collection and never slows it (it only
reads the store).

An event goes once it is :data:`SETTLE_SECONDS` old; a connect whose outcome is not known by then (a SYN left
unanswered: a timeout takes two minutes; one a full accept backlog dropped, retried) goes in progress, and when
its outcome comes it is sent again, the same event (id and fields) with that outcome: the store numbers its
resolutions, and the forwarder follows them with a second cursor (:data:`RESOLVED_KEY`, kept in the store like
the first) over the connects it already forwarded (:meth:`EventStore.resolved_stored`, what ``serve``'s
``updates`` are made of), before each batch of new events; the aggregator puts it in place of the one it holds
in progress and moves its count (a resolution sent again is a duplicate there).

It is cheap next to collection: a batch goes out once it is full or once every :data:`INTERVAL` seconds (not one
post per event that settled), and a batch holds up to :data:`BATCH` events, so at the rates an agent sees one post
carries them all (a post costs the agent a millisecond or more of CPU; an aggregator that refuses
a batch as too large, 413, is sent half as many, and so on); what the store's writer just wrote is taken
as it handed it over (:meth:`EventStore.on_rows`, :meth:`EventStore.on_records` for ring records, the last
:data:`RECENT_EVENTS` events), not read back (so an outage shorter than that loses nothing to the store's own
limits either); and events the store keeps
as JSON rows are re-encoded from that JSON (:func:`encode_batch`, msgspec, a batch in one call) without
building a model per event; ring records (an eBPF agent's) from a template per record shape
(:class:`RecordJson`: the same bytes their structs' JSON has); the rare event the fast path does not cover
goes through :func:`~netspy_tui.serve.app.event_json`, with the same result.

Each event goes with its process's workload on this host (:class:`WorkloadJson`: a ring record's from the cgroup
id it carries, resolved once per id; an event stored as JSON from its pid; none added to a recording's events).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import random
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import httpx
import msgspec
import numpy as np
from pydantic import TypeAdapter
from pydantic_core import PydanticSerializationError

from netspy_tui.collector.ebpf import programs as P
from netspy_tui.collector.ebpf.decode import _ADDR_VIEW, destination, raw_address, with_port
from netspy_tui.models import (
    ConnectionEvent,
    Event,
    PacketDropEvent,
    constructor,
    contract_drop,
    time_to_ns,
    utcnow,
)
from netspy_tui.names.workload import WorkloadResolver, k8s_identity
from netspy_tui.serve.app import event_json
from netspy_tui.store import EventStore
from netspy_tui.store import chunks as C
from netspy_tui.textsafe import clean, first_line, mask_secrets, redact_url, secret_forms, url_secrets

__all__ = ["INTERVAL", "ForwardStatus", "Forwarder", "RecordJson", "encode_batch", "encode_events", "node_identity"]

log = logging.getLogger(__name__)

CURSOR_KEY = "forward_cursor"
#: the store's resolution number up to which the outcomes of connects forwarded in progress were sent
RESOLVED_KEY = "forward_resolved_cursor"
#: where an aggregator takes agents' events (the contract's)
INGEST_PATH = "/api/events/ingest"
#: netspy-tui's extension: an agent's own losses, ``{"node": NAME, "losses": [[second, cause, n], ...]}`` (its
#: ingest token; each replaces what the node said before for that second and cause), so the fleet's figures say
#: what the agents saw and could not forward (:meth:`Forwarder.losses_once`)
AGENT_LOSSES_PATH = "/api/agent-losses"
#: meta key: the first second whose losses may still be reported to the aggregator (the earlier ones were)
LOSSES_KEY = "forward_losses_from"
#: seconds after which a second's losses are final (reported once more, then not read again)
LOSS_SLACK_SECONDS = 30
#: the causes of this node's losses an aggregator lacks the events of (reported to it, so its figures say so):
#: raw events not kept or not forwarded, and connects not counted at all
REPORTED_LOSSES = frozenset(
    {
        "shed",
        "ring_full",
        "sink_rejected",
        "bad_records",
        "forward_dropped",
        "unstored",
        "store_error",
        "rejected",
        "sockaddr_fault",
        "inflight_full",
        "exit_without_enter",
    }
)
#: an event is forwarded once it is this old: a connect's outcome may still change before that
SETTLE_SECONDS = 2.0
#: events in one post at most: the aggregator's own limit per batch (``--ingest-max-events``, 5,000). An event
#: still waits at most :data:`INTERVAL` (:attr:`Forwarder.interval`) once it settled: a full batch goes at once.
BATCH = 5000
#: seconds between posts when fewer than :data:`BATCH` events wait (``serve --forward-interval``): a post costs the
#: agent a few milliseconds of CPU whatever it carries (at 2,000 events/s, one every 2 s instead of every second
#: took the forwarding agent's CPU from x1.25-1.30 that of one without to x1.21-1.22: bench.fleet's row), and a
#: fleet view can wait 2 s more for an event that already waits 2 s to settle
INTERVAL = 2.0
#: just-written events kept in memory for forwarding (beyond them they are read back from the store)
RECENT_EVENTS = 16_000


AnyEvent = ConnectionEvent | PacketDropEvent
_EVENT: TypeAdapter[AnyEvent] = TypeAdapter(Event)
_CONTRACT_DROP = functools.lru_cache(maxsize=4096)(contract_drop)


#: what the fast path takes as it is (anything else fails to decode there and takes the model path),
#: checked in C: a time as format_time writes it (the 27 characters of ``…ss.ffffffZ``: the only form of
#: that length pydantic writes), an id, a raw_ipv6 of 16 bytes, a protocol the contract names (``Unknown(n)``
#: too, but that is rare: the model path takes it)
_CHECKED: dict[str, Any] = {
    "time": Annotated[str, msgspec.Meta(min_length=27, max_length=27)],
    "id": Annotated[str, msgspec.Meta(min_length=1)],
    "raw_ipv6": Annotated[list[int], msgspec.Meta(min_length=16, max_length=16)],
    "protocol": Literal["", "TCP", "UDP"],
}


def _stored(model: type[AnyEvent], extra: Sequence[tuple[str, Any, Any]] = ()) -> Any:
    """A struct of the JSON the store keeps for ``model`` (its ``to_json``: every field, ``null``
    where unset) as the fast path reads it: the model's fields, nothing else (an extension field
    fails to decode: the model path takes that event), those of :data:`_CHECKED` as it says; and
    written back without its ``null`` fields, as :func:`event_json` writes them."""
    fields: list[Any] = list(extra)
    for name, f in model.model_fields.items():
        if name != "type":
            kind = _CHECKED.get(name, f.annotation) if f.default is not None else f.annotation
            fields.append((name, kind, None) if f.default is None else (name, kind))
    tag = model.model_fields["type"].default
    # (gc=False: they hold no containers but raw_ipv6's list of ints, so they cannot be in a cycle; a batch of
    # thousands of them tracked by the collector was a third of the time its decoding took)
    return msgspec.defstruct(f"Stored{model.__name__}", fields, kw_only=True, omit_defaults=True,
                             forbid_unknown_fields=True, tag_field="type", tag=tag, gc=False)  # fmt: skip


_Connection = _stored(ConnectionEvent)
_Drop = _stored(PacketDropEvent, [("kernel_drop_reason", str | None, None),  # (what the contract's JSON adds)
                                  ("kernel_drop_reason_code", int | None, None)])  # fmt: skip
_STORED: Any = _Connection | _Drop
_STRUCTS = (_Connection, _Drop)
_DECODER = msgspec.json.Decoder(_STORED)
_DECODE_LIST = msgspec.json.Decoder(list[_STORED])
_ENCODER = msgspec.json.Encoder()
_IDENTITY_FIELDS = frozenset({"k8s_node_name", "k8s_pod_name", "k8s_namespace"})


def _contract_drop(event: Any) -> Any:
    """A stored drop, decoded, with the contract's reason and code (the kernel's in fields of their
    own); None if it already has those fields (the model path)."""
    if event.kernel_drop_reason is not None or event.kernel_drop_reason_code is not None:
        return None
    reason, code = event.drop_reason, event.drop_reason_code
    category, number = _CONTRACT_DROP(reason, event.protocol, code)
    event.drop_reason, event.drop_reason_code = category, number
    if (category, number) != (reason, code):
        event.kernel_drop_reason, event.kernel_drop_reason_code = reason, code
    return event


def _fields(model: type[AnyEvent]) -> dict[str, Any]:
    """The fields of ``model`` its :func:`_stored` struct needs given (those with a default other than None)."""
    return {name: f.default for name, f in model.model_fields.items() if name != "type" and f.default is not None}


_CONNECTION_FIELDS, _DROP_FIELDS = _fields(ConnectionEvent), _fields(PacketDropEvent)
_CONTRACT_PROTOCOLS = frozenset({"", "TCP", "UDP"})
_CONNECTION_MODEL = constructor(ConnectionEvent)


def _connection(**fields: Any) -> Any:
    """A ring record's connect as its :func:`_stored` struct (what decoding its model's JSON gives), made from the
    fields :meth:`Codec.events` gives a model; a protocol the contract has no name for as the model (its JSON takes
    :func:`event_json`)."""
    if fields["protocol"] in _CONTRACT_PROTOCOLS:
        return _Connection(**{**_CONNECTION_FIELDS, **fields})
    return _CONNECTION_MODEL(**{**fields, "time": datetime.fromisoformat(fields["time"])})


def _drop(**fields: Any) -> Any:
    return _Drop(**{**_DROP_FIELDS, **fields})


def _utc_text(wall: np.ndarray) -> list[str]:
    """Wall-clock ns as ``time`` in the contract's JSON without its ``Z``: what :func:`format_time` writes of
    :func:`walls`' datetimes (whole microseconds, truncated), made by numpy for the lot."""
    return np.datetime_as_string((wall.astype(np.int64) // 1000).astype("datetime64[us]")).tolist()


def _time_text(wall: np.ndarray) -> list[str]:
    return [t + "Z" for t in _utc_text(wall)]


def _utc_parts(wall: np.ndarray) -> tuple[Iterator[bytes], list[int]]:
    """:func:`_utc_text` in two parts, as the templates take it: its whole seconds (ASCII bytes, up to the ``.``) and
    its microseconds. numpy writes the seconds of a batch (a few) once each: writing each event's time was a fifth
    of what its JSON cost."""
    us = wall.astype(np.int64) // 1000
    seconds = us // 1_000_000
    firsts = np.unique(seconds)
    text = np.datetime_as_string(firsts.astype("datetime64[s]")).astype("S").tolist()
    return map(dict(zip(firsts.tolist(), text, strict=True)).__getitem__, seconds.tolist()), (us % 1_000_000).tolist()


#: :meth:`Codec.events`' keywords for ring records as structs, not models (building the model and writing its JSON
#: to decode it again was most of what forwarding them cost)
_STRUCT_EVENTS = {"connection": _connection, "drop": _drop, "time_of": _time_text}
#: a template's stand-ins (see :class:`RecordJson`): the text of the fields set to them as the struct is encoded,
#: and the ``%`` fields that take their place, in the order they come in the JSON: what differs from one event to
#: the next (the id to the time, the thread, a drop's lengths), and where it went (the destination's fields)
#: (bytes, not str: ``%`` of bytes finds its fields with memchr, and took half the time ``%`` of str did)
_T0 = "2000-01-01T00:00:00.000000Z"
_HEAD = (b'"id":"","pid":0,"command":"","timestamp":0,"time":"' + _T0.encode() + b'"',
         b'"id":"%s","pid":%d,"command":%s,"timestamp":%d,"time":"%s.%06dZ"')  # fmt: skip
_THREAD = (b',"thread":""', b"%s")
#: (the workload last: it follows every other stand-in's field in both models)
_WORKLOAD = (b',"workload":""', b"%s")
_CONNECTION_HOLES = (_HEAD, _THREAD,
                     (b'"destination_ip":"","destination_port":0,"destination":"","address_family":0', b"%s"),
                     (b'"raw_ipv4":0,"raw_ipv6":[]', b"%s"), _WORKLOAD)  # fmt: skip
_DROP_HOLES = (_HEAD, _THREAD, (b'"skb_length":0,"packet_size_bytes":0', b'"skb_length":%d,"packet_size_bytes":%d'),
               (b',"destination":""', b"%s"), _WORKLOAD)  # fmt: skip
#: seconds before a cgroup id that was not found is looked for again (a cgroup made since the mount's last walk)
WORKLOAD_RETRY = 2.0
#: cgroup ids whose workload :class:`WorkloadJson` keeps (all of them go when full: a host has a few hundred)
WORKLOADS_KEPT = 16384


class WorkloadJson:
    """Each forwarded event's ``workload`` on this host (``ConnectionEvent.workload``: what ``list_processes`` with
    ``group_by='workload'`` names on the host itself), from ``resolver``: a ring record's from the cgroup id the
    kernel gave with it (the process's cgroup when the event happened, so a connect and its outcome sent late say
    the same), resolved once per id and kept as the text of its JSON field (``,"workload":"…"``: one ``%s`` of the
    record's template); an event stored as JSON (procfs), from its pid. Without a resolver (a recording's events:
    their pids are not this host's processes), none is added: an event says the workload it was recorded with, if
    any. An id or pid that names no workload (a cgroup gone before it was found, a drop no process was charged
    with) sends none: the aggregator counts it as ``unknown``."""

    def __init__(self, resolver: WorkloadResolver | None) -> None:
        self.resolver = resolver
        self._texts: dict[int, bytes] = {0: b""}  # cgroup id -> its workload's field (b"": none)
        self._names: dict[int, str | None] = {0: None}
        self._misses: dict[int, float] = {}  # ids not found -> when to look again

    def texts(self, cgroups: np.ndarray) -> Iterator[bytes]:
        """The ``workload`` field of each of these records' cgroup ids (:func:`programs.record_cgroups`)."""
        texts = self._texts
        if self._misses:
            now = time.monotonic()
            for cgroup_id in [c for c, at in self._misses.items() if at <= now]:
                del self._misses[cgroup_id], texts[cgroup_id], self._names[cgroup_id]
        ids = np.unique(cgroups).tolist()
        if len(texts) + len(ids) > WORKLOADS_KEPT:  # (all out, before this batch's are looked up)
            texts = self._texts = {0: b""}
            self._names, self._misses = {0: None}, {}
        for cgroup_id in set(ids).difference(texts):
            self._resolve(cgroup_id)
        return map(texts.__getitem__, cgroups.tolist())

    def name(self, cgroup_id: int) -> str | None:
        """The workload name of a cgroup id :meth:`texts` resolved."""
        return self._names.get(cgroup_id)

    def _resolve(self, cgroup_id: int) -> None:
        found = self.resolver.of_cgroup_id(cgroup_id) if self.resolver is not None else None
        if found is None and self.resolver is not None:
            self._misses[cgroup_id] = time.monotonic() + WORKLOAD_RETRY
        self._names[cgroup_id] = None if found is None else found.name
        self._texts[cgroup_id] = b"" if found is None else b',"workload":' + _ENCODER.encode(found.name)

    def of_pids(self) -> PidWorkload | None:
        """A pid -> workload name function for one batch of events stored as JSON (each pid looked up once a batch;
        None: the events are not this host's)."""
        resolver = self.resolver
        if resolver is None:
            return None
        names: dict[int, str | None] = {0: None}

        def of_pid(pid: int) -> str | None:
            if pid not in names:
                found = resolver.of_pid(pid) if pid > 0 else None
                names[pid] = None if found is None else found.name
            return names[pid]

        return of_pid


def _connect_place(family: int, v4: int, lo: int, hi: int, port: int) -> tuple[bytes, bytes]:
    """The text of a connect's place, as its struct writes its fields (:meth:`Codec.events` sets them so, from the
    same functions): its destination's fields, then its raw address's. Made from its address's pieces
    (:func:`_address_parts`, once per address) and the port's digits."""
    head, middle, tail, raw = _address_parts(family, v4, lo, hi)
    return b"%s%d%s%d%s" % (head, port, middle, port, tail), raw


def _drop_place(family: int, lo: int, hi: int, port: int, l3: int) -> tuple[bytes]:
    """The text of a drop's place (:meth:`RecordJson._place` of its event: :meth:`Codec.names` gives its destination
    so): its ``destination`` field with its comma, when the kernel gave its address ("": none)."""
    if not l3 & P.F_L3:
        return (b"",)
    ip, dest = destination(family, lo, hi, port)
    text = dest if l3 & P.F_PORT else ip
    return (b',"destination":' + _ENCODER.encode(text) if text else b"",)


@functools.lru_cache(maxsize=32768)
def _address_json(family: int, v4: int, lo: int, hi: int) -> tuple[str, bytes, bytes]:
    """A connect's address as text and as JSON, and its raw address's fields as its struct writes them: made once
    per address (a host's destinations come again on other ports: these were most of what a new place cost)."""
    ip, _ = destination(family, lo, hi, 0)
    raw_ipv4, raw_ipv6 = raw_address(family, v4, lo, hi)
    return ip, _ENCODER.encode(ip), _ENCODER.encode({"raw_ipv4": raw_ipv4, "raw_ipv6": raw_ipv6})[1:-1]


@functools.lru_cache(maxsize=32768)
def _address_parts(family: int, v4: int, lo: int, hi: int) -> tuple[bytes, bytes, bytes, bytes]:
    """A connect's place without its port, once per address: the text before the port's digits, between them and
    the port's digits again (in ``destination``) and after those; and its raw address's fields. A new place is
    then one ``%`` of them (writing it whole, its address's text with the port's, was half of what a round of a
    host's new destinations cost). The destination is :func:`with_port`'s text, the port's digits last (digits
    need no escaping: the JSON of the text before them, without its closing quote, then the digits, is the
    JSON of the whole)."""
    ip, ip_json, raw = _address_json(family, v4, lo, hi)
    zero = with_port(family, ip, 0)
    if not zero.endswith(":0"):  # (never: with_port writes the port last; then the whole text, each time)
        raise AssertionError(f"with_port wrote {zero!r}")
    head = b'"destination_ip":' + ip_json + b',"destination_port":'
    return head, b',"destination":' + _ENCODER.encode(zero[:-1])[:-1], b'","address_family":%d' % family, raw


#: the fields of a ring record each event fills in its template: zeroed, what is left of the record names its
#: template; those its JSON does not show (a connect's latency, the pending connect's socket, the cgroup) too
_PER_EVENT = ("ts", "wall", "key", "pid", "tid", "comm", "thread", "length", "size", "cgroup_hi", "cgroup_lo",
              "addr", "family")  # fmt: skip
#: what names an event's place: a drop's destination is its address and port when the kernel gave them
_PLACE = np.dtype([("kind", "<u4"), ("l3", "<u4"), ("family", "<u2"), ("port", "<u2"), ("addr", "u1", (16,))])
#: what names a record's shape (:class:`RecordJson`'s key of its template): the record's fields not in
#: :data:`_PER_EVENT`, and the outcome it was given (a number per outcome)
_SHAPE = np.dtype([("kind", "<u4"), ("flags", "<u4"), ("code", "<i4"), ("result", "<u4"), ("port", "<u2"),
                   ("socktype", "<u2"), ("protocol", "<u2"), ("sockfam", "<u2"), ("outcome", "<u4")])  # fmt: skip
_SHAPE_FIELDS = [name for name in P.RECORD.names or () if name not in _PER_EVENT]
_COMM_AT, _THREAD_AT = P.RECORD.fields["comm"][1], P.RECORD.fields["thread"][1]  # type: ignore[index]
#: record shapes (templates) and places kept per :class:`RecordJson`: the older half goes out when full
TEMPLATES_KEPT = 32768


#: what stands for one event in :meth:`RecordJson.pieces`: its head (``{"type":…,"id":"…","pid":N``), its command
#: (``,"command":…,"timestamp":``), its times (``N,"time":"…Z"``), then its body up to its workload and the rest
PIECES = 8
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
#: the constants between a template's head fields, as :data:`_HEAD` has them (checked for every template; the last
#: begins the text that follows the time)
_HEAD_GLUE = (b'","pid":', b',"command":', b',"timestamp":', b',"time":"', b".", b'Z"')
_SIZE_GLUE = b',"packet_size_bytes":'  # (between a drop's two lengths)
#: the ``%`` fields of a connect's template and of a drop's (:data:`_CONNECTION_HOLES`, :data:`_DROP_HOLES`)
_CONNECTION_FIELDS_AT = [b"s", b"d", b"s", b"d", b"s", b"06d", b"s", b"s", b"s", b"s"]
_DROP_FIELDS_AT = [b"s", b"d", b"s", b"d", b"s", b"06d", b"s", b"d", b"d", b"s", b"s"]
_FIELD = re.compile(rb"%(%|s|d|06d)")
#: random odd multipliers of :func:`_groups`' hash (its collisions are checked, never trusted)
_MIX = np.random.default_rng(0x5EED).integers(1, 2**63, 32, dtype=np.uint64) | np.uint64(1)


def _unique(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(values, return_index=True, return_inverse=True)`` of a 1-D array, the same three arrays, from one
    stable argsort (numpy's took about 1.5 times as long: a third of numbering a batch's places)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.empty(len(ordered), bool)
    starts[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    inverse = np.empty(len(ordered), np.intp)
    inverse[order] = np.cumsum(starts) - 1
    return ordered[starts], order[starts], inverse


def _groups(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a 2-D uint8 array grouped by their bytes: each row's group and each group's first row (in the order
    of their hashes), made by numpy: a hash of each row's 64-bit words, its collisions checked (exact, then)."""
    n, width = rows.shape
    if width % 8:
        rows = np.concatenate([rows, np.zeros((n, 8 - width % 8), np.uint8)], axis=1)
    words = np.ascontiguousarray(rows).view(np.uint64)
    hashed = ((words ^ (words >> np.uint64(31))) * _MIX[: words.shape[1]]).sum(axis=1, dtype=np.uint64)
    _, first, inverse = _unique(hashed)
    if not np.array_equal(words[first[inverse]], words):  # (a collision: never seen, but then exact)
        _, first, inverse = np.unique(words.view((np.void, words.shape[1] * 8)).ravel(), return_index=True,
                                      return_inverse=True)  # fmt: skip
    return inverse.ravel(), first


def _digits(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unsigned integers as decimal ASCII (what ``%d`` writes): 20 columns, right-aligned with leading zeros, and
    how many digits each has. (The 9 low digits by 32-bit arithmetic, the rest per distinct value: a batch's times
    share them; 64-bit division by an array of powers cost several times as much.)"""
    x = values.astype(np.uint64)
    n = len(x)
    high = x // np.uint64(10**9)
    low = (x - high * np.uint64(10**9)).astype(np.uint32)
    digits = np.empty((n, 20), np.uint8)
    for k in range(19, 10, -1):
        digits[:, k] = low % 10
        low //= 10
    highs, which = np.unique(high, return_inverse=True)
    texts = np.array([b"%011d" % h for h in highs.tolist()], "S11").view(np.uint8).reshape(len(highs), 11)
    digits[:, :11] = texts[which.ravel()] - np.uint8(48)
    count = 20 - np.argmax(np.concatenate([digits[:, :19], np.ones((n, 1), np.uint8)], axis=1) != 0, axis=1)
    return digits + np.uint8(48), count


def _hex(numbers: np.ndarray) -> np.ndarray:
    """64-bit numbers as 16 lowercase hex digits each (ASCII, a row each): what ``bytes.hex`` writes of them."""
    octets = numbers.astype(">u8").view(np.uint8).reshape(-1, 8)
    return _HEX[np.stack([octets >> 4, octets & 15], axis=2).reshape(-1, 16)]


def _column(table: Sequence[bytes], index: np.ndarray) -> list[bytes]:
    """``table[i]`` for each ``i`` of ``index``, as a list (numpy's take of an object array: no Python per item)."""
    objects = np.empty(len(table), object)
    objects[:] = table
    return objects[index].tolist()


def _split(template: bytes) -> tuple[list[bytes], list[bytes]] | None:
    """A template's constants (``%%`` back to ``%``) and its ``%`` fields; None when its head is not :data:`_HEAD`'s
    (then its records are made one by one)."""
    parts = _FIELD.split(template)  # (text, field, text, field, ..., text)
    constants: list[bytes] = [parts[0]]
    fields: list[bytes] = []
    for field, text in zip(parts[1::2], parts[2::2], strict=True):
        if field == b"%":
            constants[-1] += b"%" + text
        else:
            fields.append(field)
            constants.append(text)
    head = tuple(constants[1:6]) == _HEAD_GLUE[:5] and len(constants) > 8 and constants[6].startswith(_HEAD_GLUE[5])
    if not head or fields not in (_CONNECTION_FIELDS_AT, _DROP_FIELDS_AT):
        return None
    if fields == _DROP_FIELDS_AT and constants[8] != _SIZE_GLUE:  # (what RecordJson._lengths writes between them)
        return None
    return constants, fields


class _Numbered:
    """Rows of bytes numbered in the order first seen (0, 1, ...), a batch's looked up by numpy: a hash of each
    row's 64-bit words found among the known rows' sorted hashes, each found row checked against the row it names."""

    def __init__(self) -> None:
        self.words = np.empty((0, 0), np.uint64)
        self._hashes = np.empty(0, np.uint64)  # sorted
        self._ids = np.empty(0, np.int64)  # the number of each sorted hash's row

    def __len__(self) -> int:
        return len(self.words)

    def number(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Each row's number, and the first row of each new one (in their numbers' order); None when two rows
        differ by a hash (never seen: the caller makes the batch another way)."""
        n, width = rows.shape
        if width % 8:
            rows = np.concatenate([rows, np.zeros((n, 8 - width % 8), np.uint8)], axis=1)
        words = np.ascontiguousarray(rows).view(np.uint64)
        if not len(self.words):
            self.words = np.empty((0, words.shape[1]), np.uint64)
        hashed = ((words ^ (words >> np.uint64(31))) * _MIX[: words.shape[1]]).sum(axis=1, dtype=np.uint64)
        # (the batch's distinct hashes, sorted: found among the known ones in one sweep, not one search a row)
        distinct, first, inverse = _unique(hashed)
        if not np.array_equal(words[first[inverse]], words):
            return None
        at = np.minimum(np.searchsorted(self._hashes, distinct), max(len(self._hashes) - 1, 0))
        found = self._hashes[at] == distinct if len(self._hashes) else np.zeros(len(distinct), bool)
        ids = np.where(found, self._ids[at] if len(self._ids) else 0, -1)
        if found.any() and not np.array_equal(self.words[ids[found]], words[first[found]]):
            return None
        new_first = np.empty(0, np.int64)
        if not found.all():
            missing = np.flatnonzero(~found)
            order = np.argsort(first[missing], kind="stable")  # (numbered in the order first seen)
            rank = np.empty(len(order), np.int64)
            rank[order] = np.arange(len(order))
            ids[missing] = len(self.words) + rank
            new_first = first[missing[order]]
            self.words = np.concatenate([self.words, words[new_first]])
            where = np.searchsorted(self._hashes, distinct[missing])
            self._hashes = np.insert(self._hashes, where, distinct[missing])
            self._ids = np.insert(self._ids, where, ids[missing])
        return ids[inverse], new_first


class _Table:
    """Texts by number, with numpy's take of them (an object array, grown as texts are added: by their number, in
    blocks that double, the texts added since the last take copied in; made again whole on every take that followed
    new texts, a place table of 30,000 was most of what its take cost)."""

    def __init__(self) -> None:
        self.texts: list[Any] = []
        self._array = np.empty(0, object)
        self._filled = 0  # (texts in _array)

    def take(self, index: np.ndarray) -> np.ndarray:
        n = len(self.texts)
        if n != self._filled:
            if n > len(self._array):
                grown = np.empty(max(n, 2 * len(self._array), 64), object)
                grown[: self._filled] = self._array[: self._filled]
                self._array = grown
            self._array[self._filled : n] = self.texts[self._filled :]
            self._filled = n
        return self._array[index]


class RecordJson:
    """:meth:`EventStore.after_stored`'s ``records`` for ``serve --forward``: each ring record as its event's
    contract JSON with this node's ``identity`` (a :class:`msgspec.Raw`, which :func:`encode_events` puts in the
    body as it is): what :func:`encode_events` writes of its struct, byte for byte.

    A host repeats the same commands, destinations and outcomes over and over, and only the id, pid, command,
    times, thread (and a drop's lengths) differ from one event to the next: the rest of an event's JSON is made
    once per record shape, as a ``%`` template, and each event is one ``%`` of it. The template is the struct
    encoded by :func:`encode_events` with stand-ins for those fields, and for its place (a connect's destination
    and raw address, a drop's destination: many more of those than of shapes), each stand-in's text replaced by its
    ``%`` field (a stand-in's quotes are the JSON's own, never inside a string: it is found only where its fields
    are); a place's text is made once per place, by encoding its fields as the struct does. Shapes and places not
    seen yet are made from :meth:`Codec.events`' structs, one call a batch. A record whose struct
    :func:`encode_events` does not write (a protocol the contract has no name for, an identity the structs have no
    field for) is encoded on its own, the old way."""

    def __init__(self, identity: Mapping[str, str], workloads: WorkloadJson | None = None) -> None:
        self.identity = dict(identity)
        self.workloads = WorkloadJson(None) if workloads is None else workloads
        self._templates: dict[Any, bytes | None] = {}  # a record's shape (and outcome) -> its template
        self._places: dict[bytes, tuple[bytes, ...]] = {}  # a record's place -> the text of its place's fields
        self._reasons: Any = None  # (the drop reason names the templates were made with)
        self._commands: dict[bytes, bytes] = {}  # a record's comm -> its command as JSON
        self._threads: dict[tuple[bytes, bytes], bytes] = {}  # (comm, thread) -> its ``"thread"`` field or b""
        # (what :meth:`pieces` keeps: shapes (with an outcome), places, commands and threads numbered, and their texts
        # by number)
        self._shapes_n, self._places_n, self._threads_n = _Numbered(), _Numbered(), _Numbered()
        self._shape_parts: list[tuple[list[bytes], list[bytes]] | None] = []
        self._shape_starts, self._shape_middles, self._shape_plain = _Table(), _Table(), _Table()
        self._place_firsts, self._place_seconds = _Table(), _Table()
        self._command_texts, self._thread_texts = _Table(), _Table()
        self._outcome_codes: dict[str, int] = {}

    def __call__(self, codec: Any, recs: np.ndarray, ids: list[str], outcomes: list[str | None]) -> list[Any]:
        if codec.drop_reasons is not self._reasons:  # (new reason names: new drop names)
            self._templates.clear()
            self._reasons = codec.drop_reasons
        templates, places, commands, threads = self._templates, self._places, self._commands, self._threads
        for cache in (templates, places):
            if len(cache) > TEMPLATES_KEPT:  # (the older half out: before this batch's are looked up)
                for old in list(itertools.islice(cache, len(cache) - TEMPLATES_KEPT // 2)):
                    del cache[old]
        shapes = recs.copy()
        for name in _PER_EVENT:
            shapes[name] = 0
        keys = [shape if override is None else (shape, override)
                for shape, override in zip(shapes.view(P.RECORD_BYTES).tolist(), outcomes, strict=True)]  # fmt: skip
        where = np.zeros(len(recs), _PLACE)
        for name in ("kind", "family", "port", "addr"):
            where[name] = recs[name]
        where["l3"] = recs["flags"] & (P.F_L3 | P.F_PORT)
        wheres = where.view((np.void, _PLACE.itemsize)).tolist()
        new_shapes: dict[Any, int] = {}  # shapes not seen yet -> the first record of each
        new_places: dict[bytes, int] = {}
        for i, (key, place) in enumerate(zip(keys, wheres, strict=True)):
            if key not in templates:
                new_shapes.setdefault(key, i)
            if place not in places:
                new_places.setdefault(place, i)
        connects = {place: i for place, i in new_places.items() if recs["kind"][i] != P.KIND_DROP}
        if connects:  # (a connect's place from its address and port: many more of those than of shapes)
            these = recs[list(connects.values())]
            alt = these.view(_ADDR_VIEW)
            for place, family, v4, lo, hi, port in zip(
                connects, these["family"].tolist(), alt["ipv4"].tolist(), alt["addr_lo"].tolist(),
                alt["addr_hi"].tolist(), these["port"].tolist(), strict=True,
            ):  # fmt: skip
                places[place] = _connect_place(family, v4, lo, hi, port)
        first = sorted({*new_shapes.values(), *(i for place, i in new_places.items() if place not in connects)})
        if first:  # (their events made in one call, as the store makes events)
            made = dict(zip(first, codec.events(recs[first], [""] * len(first), [outcomes[i] for i in first],
                                                 **_STRUCT_EVENTS), strict=True))  # fmt: skip
            # (places first: a template is made by setting the struct's fields to stand-ins)
            places.update((place, self._place(made[i])) for place, i in new_places.items() if place not in connects)
            templates.update((key, self._template(made[i])) for key, i in new_shapes.items())
        out: list[Any] = []
        raw = msgspec.Raw
        cgroups = P.record_cgroups(recs)
        for i, (id_, key, place, kind, ts, second, us, pid, comm, thread, length, size, workload) in enumerate(zip(
            map(str.encode, ids), keys, wheres, recs["kind"].tolist(), recs["ts"].tolist(), *_utc_parts(recs["wall"]),
            recs["pid"].tolist(), recs["comm"].tolist(), recs["thread"].tolist(), recs["length"].tolist(),
            recs["size"].tolist(), self.workloads.texts(cgroups), strict=True,
        )):  # fmt: skip
            template = templates[key]
            if template is None:
                out.append(self._alone(codec, recs[i : i + 1], ids[i], outcomes[i], int(cgroups[i])))
                continue
            command = commands.get(comm) or self._command(codec, comm)
            named = b""
            if thread and (named := threads.get((comm, thread))) is None:  # type: ignore[assignment]
                named = self._thread(codec, comm, thread)
            if kind == P.KIND_DROP:
                out.append(raw(template % (id_, pid, command, ts, second, us, named, length, size, *places[place],
                                           workload)))  # fmt: skip
            else:
                out.append(raw(template % (id_, pid, command, ts, second, us, named, *places[place], workload)))
        return out

    def pieces(self, codec: Any, recs: np.ndarray, numbers: np.ndarray, outcomes: list[str | None]) -> list[bytes]:
        """The JSON of these records' events, byte for byte what :meth:`__call__` makes of them (ids: ``numbers`` as
        16 hex digits), as :data:`PIECES` pieces an event: joined, the body's list without its brackets (each event
        after the first with its comma). Made by numpy for the batch: the head (type, id, pid), the times and a
        drop's lengths are digits numpy writes; every other piece is the text of something numbered once
        (:class:`_Numbered`: a shape, a place, a command, a thread) or of a few such together in this batch, taken by
        number; Python works only per new shape, place, command and thread, and per shape with a thread or a
        workload in the batch. A record whose template is not a plain one (its head is not :data:`_HEAD`'s, or
        :meth:`__call__` encodes it alone) is made by :meth:`__call__`."""
        n = len(recs)
        if not n:
            return []
        if codec.drop_reasons is not self._reasons:  # (new reason names: new drop names)
            self._templates.clear()
            self._reasons = codec.drop_reasons
            self._numbered_clear()
        if max(len(self._shapes_n), len(self._places_n), len(self._threads_n)) > TEMPLATES_KEPT:
            self._numbered_clear()
        seconds_text, seconds_of, micros = self._seconds(recs["wall"])
        made = None if seconds_text is None else self._numbers(codec, recs, outcomes)
        # (a time numpy does not write in 19 characters, a hash shared: the events one by one)
        if made is None or seconds_text is None:
            each = self._one_by_one(codec, recs, numbers, outcomes, np.arange(n))
            each[0] = each[0][1:]
            return each
        shape, place, thread = made
        parts = self._shape_parts
        drop = recs["kind"] == P.KIND_DROP
        # (shape, thread) and (shape, cgroup): a few in a batch, each made here
        pair = shape * np.int64(len(self._threads_n) + 1) + thread
        pairs, pair_of = np.unique(pair, return_inverse=True)
        named = self._thread_texts.texts
        first_texts = []
        for s, t in zip((pairs // (len(self._threads_n) + 1)).tolist(), (pairs % (len(self._threads_n) + 1)).tolist(),
                        strict=True):  # fmt: skip
            p = parts[s]
            first_texts.append(b"" if p is None else p[0][6][len(_HEAD_GLUE[5]) :] + named[t] + p[0][7])
        cgroups = P.record_cgroups(recs)
        tail_of, tail_first = _groups(np.stack([shape.astype(np.uint64), cgroups], axis=1).view(np.uint8))
        tails = []
        for s, workload in zip(shape[tail_first].tolist(), self.workloads.texts(cgroups[tail_first]), strict=True):
            p = parts[s]
            tails.append(b"" if p is None else p[0][-2] + workload + p[0][-1])
        out: list[bytes] = [b""] * (PIECES * n)
        out[0::PIECES] = self._heads(numbers, recs["pid"], shape)
        out[1::PIECES] = self._command_texts.take(thread).tolist()
        out[2::PIECES] = self._times(recs["ts"], seconds_text, seconds_of, micros)
        out[3::PIECES] = _column(first_texts, pair_of.ravel())
        fourth = self._place_firsts.take(place)
        if drop.any():
            rows = np.flatnonzero(drop)
            fourth[rows] = self._lengths(recs["length"][rows], recs["size"][rows])
        out[4::PIECES] = fourth.tolist()
        out[5::PIECES] = self._shape_middles.take(shape).tolist()
        out[6::PIECES] = self._place_seconds.take(place).tolist()
        out[7::PIECES] = _column(tails, tail_of)
        plain = self._shape_plain.take(shape).astype(bool)
        if not plain.all():
            alone = np.flatnonzero(~plain)
            made_alone = self._one_by_one(codec, recs, numbers, outcomes, alone)
            for k, i in enumerate(alone.tolist()):
                out[PIECES * i : PIECES * (i + 1)] = made_alone[PIECES * k : PIECES * (k + 1)]
        out[0] = out[0][1:]
        return out

    def _numbered_clear(self) -> None:
        for numbered in (self._shapes_n, self._places_n, self._threads_n):
            numbered.__init__()  # type: ignore[misc]
        for table in (self._shape_starts, self._shape_middles, self._shape_plain, self._place_firsts,
                      self._place_seconds, self._command_texts, self._thread_texts):  # fmt: skip
            table.__init__()  # type: ignore[misc]
        self._shape_parts.clear()
        self._outcome_codes.clear()
        self._templates.clear()  # (made again for the shapes numbered next: bounded with them)

    def _numbers(self, codec: Any, recs: np.ndarray, outcomes: list[str | None]) -> tuple[np.ndarray, ...] | None:
        """Each record's shape (with its outcome), place, command and (command, thread) numbers, what is new of
        them made (None: a hash shared, see :meth:`_Numbered.number`)."""
        n = len(recs)
        octets = np.ascontiguousarray(recs).view(np.uint8).reshape(n, P.RECORD_SIZE)
        shaped = np.zeros(n, _SHAPE)  # (what __call__'s key keeps of a record: the fields not zeroed, its outcome)
        for name in _SHAPE_FIELDS:
            shaped[name] = recs[name]
        if outcomes.count(None) != n:  # (no outcome resolved since for any of them: nothing to scan)
            said = np.array(outcomes, object)
            for i in np.flatnonzero(said != None).tolist():  # noqa: E711 (elementwise)
                shaped["outcome"][i] = self._outcome_codes.setdefault(outcomes[i], len(self._outcome_codes) + 1)  # type: ignore[arg-type]
        where = np.zeros(n, _PLACE)
        for name in ("kind", "family", "port", "addr"):
            where[name] = recs[name]
        where["l3"] = recs["flags"] & (P.F_L3 | P.F_PORT)
        comm_at, thread_at = _COMM_AT, _THREAD_AT
        named = octets[:, comm_at : thread_at + 16]  # (comm and thread: side by side in a record)
        got = [
            self._shapes_n.number(shaped.view(np.uint8).reshape(n, _SHAPE.itemsize)),
            self._places_n.number(where.view(np.uint8).reshape(n, _PLACE.itemsize)),
            self._threads_n.number(named),
        ]
        if any(g is None for g in got):
            self._numbered_clear()
            return None
        (shape, new_shapes), (place, new_places), (thread, new_threads) = got  # type: ignore[misc]
        shapes = recs[new_shapes]
        for name in _PER_EVENT:
            shapes[name] = 0
        drop = recs["kind"] == P.KIND_DROP
        keys = [shape_key if outcomes[i] is None else (shape_key, outcomes[i])
                for i, shape_key in zip(new_shapes.tolist(), shapes.view(P.RECORD_BYTES).tolist(),
                                        strict=True)]  # fmt: skip
        first = [i for i, key in zip(new_shapes.tolist(), keys, strict=True) if key not in self._templates]
        made: dict[int, Any] = {}
        if first:  # (their events made in one call, as __call__ makes them)
            made = dict(zip(first, codec.events(recs[first], [""] * len(first), [outcomes[i] for i in first],
                                                 **_STRUCT_EVENTS), strict=True))  # fmt: skip
        # a new place's texts, from its address and port, as the event's struct writes them
        alt = recs[new_places].view(_ADDR_VIEW)
        firsts, seconds = self._place_firsts.texts, self._place_seconds.texts
        parts = _address_parts
        for dropped, family, v4, lo, hi, port, l3 in zip(
            drop[new_places].tolist(), recs["family"][new_places].tolist(), alt["ipv4"].tolist(),
            alt["addr_lo"].tolist(), alt["addr_hi"].tolist(), recs["port"][new_places].tolist(),
            where["l3"][new_places].tolist(), strict=True,
        ):  # fmt: skip
            if dropped:
                firsts.append(b"")
                seconds.append(_drop_place(family, lo, hi, port, l3)[0])
            else:  # (:func:`_connect_place`, inline: a round brings hundreds)
                head, middle, tail, raw = parts(family, v4, lo, hi)
                firsts.append(b"%s%d%s%d%s" % (head, port, middle, port, tail))
                seconds.append(raw)
        for i, key in zip(new_shapes.tolist(), keys, strict=True):
            if key not in self._templates:
                self._templates[key] = self._template(made[i])
            template = self._templates[key]
            split = None if template is None else _split(template)
            self._shape_parts.append(split)
            self._shape_starts.texts.append(b"," + split[0][0] if split is not None else b",")
            self._shape_middles.texts.append(split[0][-3] if split is not None else b"")
            self._shape_plain.texts.append(split is not None)
        for comm_name, thread_name in zip(recs["comm"][new_threads].tolist(), recs["thread"][new_threads].tolist(),
                                          strict=True):  # fmt: skip
            command = self._commands.get(comm_name) or self._command(codec, comm_name)
            self._command_texts.texts.append(_HEAD_GLUE[1] + command + _HEAD_GLUE[2])
            text = b""
            if thread_name and (text := self._threads.get((comm_name, thread_name))) is None:  # type: ignore[assignment]
                text = self._thread(codec, comm_name, thread_name)
            self._thread_texts.texts.append(text)
        return shape, place, thread

    def _one_by_one(self, codec: Any, recs: np.ndarray, numbers: np.ndarray, outcomes: list[str | None],
                    rows: np.ndarray) -> list[bytes]:  # fmt: skip
        """:meth:`pieces` of ``rows`` made by :meth:`__call__` (an event a piece, then empty ones)."""
        ids = _hex(numbers[rows]).view("S16").ravel().astype("U16").tolist()
        made = self(codec, recs[rows], ids, [outcomes[i] for i in rows.tolist()])
        out: list[bytes] = []
        for raw in made:
            out += [b"," + bytes(raw), *[b""] * (PIECES - 1)]
        return out

    @staticmethod
    def _lengths(lengths: np.ndarray, sizes: np.ndarray) -> list[bytes]:
        """Each drop's ``L,"packet_size_bytes":S`` (its lengths' digits)."""
        ld, lc = _digits(lengths)
        sd, sc = _digits(sizes)
        out = np.empty(len(lengths), object)
        glue = np.frombuffer(_SIZE_GLUE, np.uint8)
        widths = lc.astype(np.int64) * 32 + sc
        for width in np.unique(widths).tolist():
            rows = np.flatnonzero(widths == width)
            a, b = width // 32, width % 32
            block = np.zeros((len(rows), a + len(glue) + b), np.uint8)
            block[:, :a] = ld[rows, 20 - a :]
            block[:, a : a + len(glue)] = glue
            block[:, a + len(glue) :] = sd[rows, 20 - b :]
            out[rows] = block.view(f"S{block.shape[1]}").ravel().tolist()
        return out.tolist()

    def _heads(self, numbers: np.ndarray, pids: np.ndarray, shapes: np.ndarray) -> list[bytes]:
        """Each event's ``,{"type":…,"id":"…","pid":N`` (its type's text from its shape's template)."""
        n = len(numbers)
        hexed = _hex(numbers)
        distinct, which = np.unique(pids, return_inverse=True)  # (a batch's pids: a few hundred at most)
        pid = np.array([b"%d" % p for p in distinct.tolist()], "S10").view(np.uint8).reshape(len(distinct), 10)
        pid = pid[which.ravel()]
        starts: dict[bytes, int] = {}
        start_of = np.array([starts.setdefault(start, len(starts)) for start in self._shape_starts.texts],
                            np.int64)[shapes]  # fmt: skip
        out = np.empty(n, object)
        for start, number in starts.items():
            rows = np.flatnonzero(start_of == number)
            if not len(rows):
                continue
            width = len(start)
            block = np.zeros((len(rows), width + 16 + 8 + 10), np.uint8)
            block[:, :width] = np.frombuffer(start, np.uint8)
            block[:, width : width + 16] = hexed[rows]
            block[:, width + 16 : width + 24] = np.frombuffer(_HEAD_GLUE[0], np.uint8)
            block[:, width + 24 :] = pid[rows]
            out[rows] = block.view(f"S{block.shape[1]}").ravel().tolist()
        return out.tolist()

    @staticmethod
    def _seconds(wall: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """The text of each event's whole second as numpy writes it (19 characters, else None), which of them each
        event's is, and each event's microseconds' 6 digits (ASCII)."""
        us = wall.astype(np.int64) // 1000
        seconds = us // 1_000_000
        firsts, which = np.unique(seconds, return_inverse=True)
        text = np.datetime_as_string(firsts.astype("datetime64[s]")).astype("S")
        if (np.char.str_len(text) != 19).any():
            return None, which, us
        text = text.astype("S19")
        micros = np.empty((len(us), 6), np.uint8)
        left = (us % 1_000_000).astype(np.uint32)
        for k in range(5, -1, -1):
            micros[:, k] = left % 10
            left //= 10
        micros += np.uint8(48)
        return np.frombuffer(text.tobytes(), np.uint8).reshape(len(firsts), 19), which.ravel(), micros

    @staticmethod
    def _times(ts: np.ndarray, seconds: np.ndarray, seconds_of: np.ndarray, micros: np.ndarray) -> list[bytes]:
        """Each event's ``N,"time":"….ffffffZ"`` (the timestamp's digits, then the time)."""
        digits, count = _digits(ts)
        out = np.empty(len(ts), object)
        for width in np.unique(count).tolist():
            rows = np.flatnonzero(count == width)
            glue = width + len(_HEAD_GLUE[3])
            block = np.zeros((len(rows), glue + 19 + 1 + 6 + 2), np.uint8)
            block[:, :width] = digits[rows, 20 - width :]
            block[:, width:glue] = np.frombuffer(_HEAD_GLUE[3], np.uint8)
            block[:, glue : glue + 19] = seconds[seconds_of[rows]]
            block[:, glue + 19] = ord(".")
            block[:, glue + 20 : glue + 26] = micros[rows]
            block[:, glue + 26 :] = np.frombuffer(_HEAD_GLUE[5], np.uint8)
            out[rows] = block.view(f"S{block.shape[1]}").ravel().tolist()
        return out.tolist()

    def _template(self, event: Any) -> bytes | None:
        """The template of ``event``'s shape (None: it is encoded alone)."""
        if type(event) not in _STRUCTS or not self.identity.keys() <= _IDENTITY_FIELDS:
            return None
        event.pid, event.command, event.timestamp, event.time, event.thread = 0, "", 0, _T0, ""
        event.workload = ""
        if type(event) is _Drop:
            event.skb_length = event.packet_size_bytes = 0
            event.destination = ""
            holes = _DROP_HOLES
        else:
            event.destination_ip, event.destination_port, event.destination, event.address_family = "", 0, "", 0
            event.raw_ipv4, event.raw_ipv6 = 0, []
            holes = _CONNECTION_HOLES
        template = encode_events([event], self.identity)[1:-1].replace(b"%", b"%%")
        at = [template.find(stand_in) for stand_in, _ in holes]
        # (each once, and in this order: the % fields are filled in it)
        if at != sorted(at) or any(template.count(stand_in) != 1 for stand_in, _ in holes):
            return None
        for stand_in, field in holes:
            template = template.replace(stand_in, field)
        return template

    def _place(self, event: Any) -> tuple[bytes]:
        """The text of a drop's place: its ``destination`` field as its struct writes it, with its comma ("": none)."""
        inner = _ENCODER.encode({} if event.destination is None else {"destination": event.destination})
        return (b"," + inner[1:-1] if len(inner) > 2 else b"",)

    def _alone(self, codec: Any, rec: np.ndarray, id_: str, override: str | None, cgroup_id: int) -> Any:
        """One record's JSON the way :func:`encode_events` writes it of what :meth:`Codec.events` makes (with the
        workload of its cgroup)."""
        (event,) = codec.events(rec, [id_], [override], **_STRUCT_EVENTS)
        if (workload := self.workloads.name(cgroup_id)) is not None:
            if type(event) in _STRUCTS:
                event.workload = workload
            else:
                event = event.model_copy(update={"workload": workload})
        return msgspec.Raw(encode_events([event], self.identity)[1:-1])

    def _command(self, codec: Any, comm: bytes) -> bytes:
        if len(self._commands) > 8192:
            self._commands.clear()
        text = self._commands[comm] = _ENCODER.encode(codec.command(comm))
        return text

    def _thread(self, codec: Any, comm: bytes, thread: bytes) -> bytes:
        """The ``"thread"`` field of an event (as :meth:`Codec.events` sets it: a thread named unlike its process)."""
        if len(self._threads) > 8192:
            self._threads.clear()
        name = codec.command(thread)
        text = b"" if not name or name == codec.command(comm) else b',"thread":' + _ENCODER.encode(name)
        self._threads[(comm, thread)] = text
        return text


#: pid -> its workload's name (None: not known), for events stored as JSON (:meth:`WorkloadJson.of_pids`)
PidWorkload = Callable[[int], str | None]


def _slow(item: Any, identity: Mapping[str, str]) -> dict[str, Any]:
    if type(item) in _STRUCTS:
        item = _ENCODER.encode(item)
    event = _EVENT.validate_json(item) if isinstance(item, bytes | str) else item
    data = event_json(event, identity)
    data.update(identity)
    return data


def encode_batch(items: Sequence[Any], identity: Mapping[str, str], workload: PidWorkload | None = None) -> bytes:
    """The ingest body ``{"events": [...]}`` of stored events: :func:`encode_events` in it (encoded as one object:
    joining a megabyte list to its braces afterwards copied it again, which cost twice what encoding it did).
    What :class:`RecordJson` made carries the identity (and workload) it was made with, not ``identity`` (the
    forwarder gives both the same); an event stored as JSON that does not say its workload is given
    ``workload(pid)``'s (when not None)."""
    return _ENCODER.encode({"events": _encodable(items, identity, workload)})


def encode_events(items: Sequence[Any], identity: Mapping[str, str]) -> bytes:
    """The JSON list of stored events (their stored JSON, or built events): each the contract's JSON
    object with this node's identity over its own (it is where the event was seen), as
    :func:`event_json` and ``update(identity)`` give it. The JSON of a plain event (as stored, or a built
    event's own, pydantic's ``to_json``) is re-encoded without ``event_json`` (decoded into a :func:`_stored`
    struct, msgspec; the whole batch at once, as one list, when every event takes that path); anything else
    (an extension field, a time that is not ``…ss.ffffffZ``, no id, a protocol the contract has no name for,
    a short ``raw_ipv6``) takes :func:`event_json`. What :class:`RecordJson` made (:class:`msgspec.Raw`, with
    the same identity) goes in as it is."""
    return _ENCODER.encode(_encodable(items, identity))


def _encodable(items: Sequence[Any], identity: Mapping[str, str], workload: PidWorkload | None = None) -> list[Any]:
    """:func:`encode_events`' list before it is encoded."""
    made = [type(item) is msgspec.Raw for item in items]
    if all(made):  # (ring records: nothing else to do)
        return list(items)
    if not any(made):
        return _contract_events(items, identity, workload)
    others = iter(_contract_events([item for item, m in zip(items, made, strict=True) if not m], identity, workload))
    return [item if m else next(others) for item, m in zip(items, made, strict=True)]


def _contract_events(items: Sequence[AnyEvent | bytes | str], identity: Mapping[str, str],
                     workload: PidWorkload | None = None) -> list[Any]:  # fmt: skip
    """:func:`encode_events`' list before it is encoded: structs (the fast path), and dicts (``event_json``)."""
    fast = identity.keys() <= _IDENTITY_FIELDS
    events: list[Any] | None = None
    bodies: list[bytes | None] = []
    if fast and all(type(item) in _STRUCTS for item in items):  # ring records, made as the structs
        events = list(items)
    else:
        bodies = [item if type(item) is bytes else _json(item) for item in items] if fast else [None] * len(items)
    if events is None and fast and items and None not in bodies:
        try:  # (one call for the batch: a call per event cost a quarter more)
            events = _DECODE_LIST.decode(b"[" + b",".join(bodies) + b"]")  # type: ignore[arg-type]
        except msgspec.DecodeError:  # (one event the fast path does not take: each on its own below)
            pass
    if events is None:
        events = [None if body is None else _decoded(body) for body in bodies]
    pairs = list(identity.items())
    for i, event in enumerate(events):
        if type(event) is _Drop:
            event = events[i] = _contract_drop(event)
        if event is None:
            data = events[i] = _slow(items[i], identity)
            if workload is not None and not data.get("workload") and (name := workload(data.get("pid", 0))):
                data["workload"] = name
        else:
            for key, value in pairs:
                setattr(event, key, value)
            if workload is not None and not event.workload:
                event.workload = workload(event.pid)
    return events


def _json(item: AnyEvent | bytes | str) -> bytes | None:
    """A built event's JSON as the store keeps it (without its null fields: a fast-path struct's defaults, for
    one in a batch that is not all structs; 3 times quicker than ``event_json``), or a body SQLite gave back
    as text, as bytes; None if it cannot be (untrusted text that is not valid Unicode: ``event_json``
    escapes it). An eBPF agent's ring records do not come here: :class:`RecordJson` makes their JSON."""
    try:
        if isinstance(item, bytes | str):
            return item.encode() if isinstance(item, str) else item
        if type(item) in _STRUCTS:
            return _ENCODER.encode(item)
        return item.__pydantic_serializer__.to_json(item, exclude_none=True)
    except (PydanticSerializationError, UnicodeEncodeError):
        return None


def _decoded(item: bytes | str) -> Any:
    """A stored event's JSON as its :func:`_stored` struct, or None when the fast path does not take it
    (also: a field of the wrong type, an integer beyond 64 bits). A body SQLite gives back as text is the
    same JSON."""
    try:
        return _DECODER.decode(item)
    except msgspec.DecodeError:
        return None


#: loss rows read at a time
LOSS_ROWS_READ = 3600


def _losses_url(url: str) -> str | None:
    """Where a netspy-tui aggregator takes an agent's losses, beside its ingest path (None: another path)."""
    base, sep, query = url.partition("?")
    if not base.endswith(INGEST_PATH):
        return None
    return base.removesuffix(INGEST_PATH) + AGENT_LOSSES_PATH + sep + query


def node_identity() -> dict[str, str]:
    """This node's fields on every forwarded event: the downward API's node/pod/namespace in
    Kubernetes (as ebpf-server sets them), else the host name as ``k8s_node_name``."""
    identity = k8s_identity()
    identity.setdefault("k8s_node_name", socket.gethostname())
    return identity


def identity_problem(identity: Mapping[str, str]) -> str | None:
    """Why an aggregator would refuse every event of a node with this identity (its name is not a node name:
    a Kubernetes node's, a host's), or None. Checked at start: an agent that only learnt it from the
    aggregator's answers would forward nothing."""
    from netspy_tui.fleet.store import NODE_NAME

    node = identity.get("k8s_node_name", "")
    if NODE_NAME.match(node):
        return None
    return f"this node's name {clean(node, 80)!r} is not a node name (letters, digits, '.', '_' and '-')"


def _refused(body: Any, n: int) -> tuple[int, str]:
    """How many of the ``n`` events posted an aggregator's 2xx answer says it did not take, and why (its first
    reason): ``rejected_count``/``rejected`` (netspy-tui's aggregator), else ``success: false`` with fewer
    ``events_processed`` than posted (the contract's ``IngestResponse``)."""
    if not isinstance(body, dict):
        return 0, ""
    count, why = body.get("rejected_count"), ""
    rejected = body.get("rejected")
    if isinstance(rejected, list) and rejected and isinstance(rejected[0], dict):
        why = f"event {rejected[0].get('index')}: {rejected[0].get('reason')}"
    if type(count) is not int and isinstance(rejected, list) and rejected:
        count = len(rejected)  # (a rejected list without its count: each entry one event refused)
    if type(count) is not int:
        processed, duplicates = body.get("events_processed"), body.get("duplicates", 0)
        if body.get("success") is not False or type(processed) is not int:
            return 0, ""
        count = n - processed - (duplicates if type(duplicates) is int else 0)
        why = why or clean(body.get("message", ""), 160)
    return max(0, min(n, count)), first_line(why, 160)


#: pieces (:meth:`RecordJson.pieces`) joined at a time by :func:`body_of`: about 64 kB of JSON, and the table of
#: buffers ``bytes.join`` makes of them 80 kB (below glibc's mmap threshold, 128 kB: memory it hands out again)
BODY_PIECES = 1024


def body_of(pieces: Sequence[bytes]) -> bytes:
    """The ingest body ``{"events":[...]}`` of :meth:`RecordJson.pieces`: joined :data:`BODY_PIECES` at a time, then
    those blocks. Joined at once, the 32,000 pieces of a batch of 4,000 events had ``bytes.join`` make a table of
    their buffers (80 bytes each: 2.6 MB) that came in fresh pages every batch: about 640 page faults, more than
    copying the body twice costs (``bench.fleet``'s forwarding row)."""
    step = BODY_PIECES
    return b"".join([b'{"events":[', *[b"".join(pieces[i : i + step]) for i in range(0, len(pieces), step)], b"]}"])


@dataclass
class ForwardStatus:
    url: str
    interval: float = INTERVAL  # seconds between posts when fewer than a full batch wait
    forwarded: int = 0  # events the aggregator accepted
    resolved: int = 0  # connects forwarded in progress, sent again with their outcome (and accepted)
    unsent_outcomes: int = 0  # such outcomes not sent: the aggregator does not take them (ebpf-server's own)
    rejected: int = 0  # events the aggregator answered it did not take (not retried: it would refuse them again)
    batches: int = 0
    failures: int = 0  # batches that failed (each retried)
    dropped: int = 0  # removed by retention before they were forwarded
    waiting: int = 0  # stored, not forwarded yet (at the last look)
    last_error: str = ""
    last_success: str = ""
    losses_reported: int = 0  # events this node lost (shed, not kept or not forwarded) the aggregator was told of
    losses_note: str = ""  # why they are not told (an aggregator that does not take them), else ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _drop_sent(runs: deque[Any], cursor: int) -> tuple[int, bool]:
    """Drop the runs (``(first seq, items, ...)``) sent by ``cursor``: how many items went, and whether the first
    run kept holds the next one (``cursor + 1``)."""
    gone = 0
    while runs and runs[0][0] + len(runs[0][1]) <= cursor + 1:
        gone += len(runs.popleft()[1])
    return gone, bool(runs) and runs[0][0] <= cursor + 1


class Forwarder:
    """Follows ``store`` and posts its events to ``url`` (``…/api/events/ingest``)."""

    def __init__(
        self,
        store: EventStore,
        url: str,
        *,
        token: str | None = None,
        verify: bool = True,
        batch: int = BATCH,
        interval: float = INTERVAL,
        timeout: float = 10.0,
        max_backoff: float = 30.0,
        identity: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        workloads: WorkloadResolver | None = None,
    ) -> None:
        self.store = store
        self.url = url
        self.batch = batch
        self.interval = interval
        self.max_backoff = max_backoff
        self.identity = node_identity() if identity is None else identity
        #: each event's workload on this host (``workloads``: this host's live collector's processes; None: none)
        self.workloads = WorkloadJson(workloads)
        self._records = RecordJson(self.identity, self.workloads)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(headers=headers, verify=verify, timeout=timeout, transport=transport,
                                         follow_redirects=False)  # fmt: skip
        self.status = ForwardStatus(url=redact_url(url), interval=interval)  # (as /health and the log show it)
        #: never repeated in last_error (/health, server_status), even when an aggregator's answer echoes them
        self._secrets = [form for s in (token, *url_secrets(url)) if s for form in secret_forms(s)]
        stored = store.get_meta(CURSOR_KEY)
        self.cursor = int(stored) if stored and stored.isdigit() else 0
        stored = store.get_meta(RESOLVED_KEY)
        if stored and stored.isdigit():
            self.resolved_cursor = int(stored)
        else:  # (a new store: 0; one a forwarder before this one followed: its resolutions from now on)
            self.resolved_cursor = store.resolution_cursor()
            if not store.readonly:
                store.set_meta(RESOLVED_KEY, str(self.resolved_cursor))
        self.losses_url = _losses_url(url)
        stored = store.get_meta(LOSSES_KEY)
        self._losses_from = int(stored) if stored and stored.isdigit() else 0
        self._losses_sent: dict[tuple[int, str], int] = {}  # (second, cause) -> n, as the aggregator was told
        self._losses_failed = ""
        self.takes_outcomes: bool | None = None
        """Whether the aggregator takes a connect's outcome sent after the connect in progress (None: not known yet
        this run). Another (ebpf-server's own) would store the same id again as a second event: it is sent none."""
        self._stop = asyncio.Event()
        #: ``(first seq, times, JSON bodies)`` of each write of the store while :meth:`run` runs, as its writer
        #: gave them (:meth:`EventStore.on_rows`), up to :data:`RECENT_EVENTS` events: what is forwarded next is
        #: taken from here, not read back from the store, while it is there (the store stays the spool: anything
        #: not here is read from it). Kept a write at a time, not an event at a time: taking a batch is then a
        #: few slices, not a step per event.
        self._recent: deque[tuple[int, list[int], list[Any]]] = deque()
        self._recent_events = 0
        self._recent_keep = max(RECENT_EVENTS, batch)
        self._recent_lock = threading.Lock()
        #: the same for ring records (an eBPF agent's), as the writer stored them (:meth:`EventStore.on_records`):
        #: ``(first seq, records)`` of each run, up to :data:`RECENT_EVENTS` records (reading them back from the
        #: store's chunks each round cost more than a tenth of what forwarding them did)
        self._recent_records: deque[tuple[int, np.ndarray]] = deque()
        self._recent_record_count = 0

    async def run(self) -> None:
        """Forward until :meth:`stop`; never raises (errors are counted, logged once per kind and
        retried)."""
        attempt = 0
        stop_rows = self.store.on_rows(self._written)
        stop_records = self.store.on_records(self._records_written)
        try:
            while not self._stop.is_set():
                try:
                    sent = await self.forward_once()
                except Exception as exc:  # noqa: BLE001 (any failure is counted and retried: the task never dies)
                    attempt += 1
                    self.status.failures += 1
                    error = f"{type(exc).__name__}: {first_line(mask_secrets(str(exc), self._secrets), 200)}"
                    if error != self.status.last_error:
                        log.warning("forwarding to %s failed (%s); retrying with backoff", self.status.url, error)
                    self.status.last_error = error
                    await self._sleep(self._backoff(attempt))
                    continue
                attempt = 0
                if sent < self.batch:  # a full batch may have more behind it; else wait for more to settle
                    await self._sleep(self.interval)
        finally:
            stop_rows()
            stop_records()
            await self._client.aclose()

    def stop(self) -> None:
        self._stop.set()

    def _backoff(self, attempt: int) -> float:
        """Exponential from about a second (or the interval, when shorter), capped, with full jitter in its upper
        half (agents do not retry in step)."""
        ceiling = min(self.max_backoff, min(self.interval, 1.0) * 2 ** min(attempt, 16))
        return ceiling * (0.5 + random.random() / 2)  # noqa: S311 (jitter, not security)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def forward_once(self) -> int:
        """The outcomes that came since of connects forwarded in progress (:meth:`resolve_once`), then one batch:
        read, post, and on acceptance move the cursor. Returns events forwarded."""
        await self.resolve_once()
        sent = await self._forward_batch()
        await self.losses_once()
        return sent

    async def losses_once(self) -> int:
        """Tell the aggregator what this node lost (:data:`REPORTED_LOSSES`, by second and cause, each second's
        figure as it stands: sent again, it replaces the last one), so its figures say what its counts lack.
        Returns how many rows were sent; never raises (a failure is logged once and tried again next round)."""
        if self.losses_url is None or self.status.losses_note:
            return 0
        try:
            rows = await asyncio.to_thread(self.store.loss_rows, self._losses_from, LOSS_ROWS_READ)
        except Exception as exc:  # noqa: BLE001 (a store that cannot be read now: the events' forwarding says why)
            self._losses_failure(f"{type(exc).__name__}: {first_line(str(exc), 160)}")
            return 0
        changed = [r for r in rows if r[1] in REPORTED_LOSSES and self._losses_sent.get((r[0], r[1])) != r[2]]
        if changed:
            body = msgspec.json.encode({"node": self.identity.get("k8s_node_name", ""), "losses": changed})
            try:
                response = await self._client.post(self.losses_url, content=body,
                                                   headers={"Content-Type": "application/json"})  # fmt: skip
            except httpx.HTTPError as exc:
                self._losses_failure(f"{type(exc).__name__}: {first_line(mask_secrets(str(exc), self._secrets), 160)}")
                return 0
            if response.status_code in (404, 405):  # (ebpf-server's aggregator: no such path)
                self.status.losses_note = (
                    "the aggregator does not take this node's loss figures (not netspy-tui's): its counts lack what "
                    "this node shed or lost, and it cannot say so"
                )
                log.warning("forwarding to %s: %s", self.status.url, self.status.losses_note)
                return 0
            if response.status_code >= 300:
                said = first_line(mask_secrets(response.text, self._secrets), 160)
                self._losses_failure(f"HTTP {response.status_code}: {said}")
                return 0
            self._losses_failed = ""
            for second, cause, n in changed:
                self.status.losses_reported += n - self._losses_sent.get((second, cause), 0)
                self._losses_sent[(second, cause)] = n
        # seconds past the slack are final: not read again (a full read: from its last second, which may go on)
        start = rows[-1][0] if len(rows) >= LOSS_ROWS_READ else int(time.time()) - LOSS_SLACK_SECONDS
        if start > self._losses_from:
            self._losses_from = start
            self._losses_sent = {k: v for k, v in self._losses_sent.items() if k[0] >= start}
            with contextlib.suppress(Exception):  # (not kept: a restart reports from the last second kept again)
                await asyncio.to_thread(self.store.set_meta, LOSSES_KEY, str(start))
        return len(changed)

    def _losses_failure(self, error: str) -> None:
        if error != self._losses_failed:
            log.warning("forwarding this node's losses to %s failed (%s); trying again", self.status.url, error)
        self._losses_failed = error

    async def resolve_once(self) -> int:
        """Send again, with their outcome, the connects forwarded in progress whose outcome the store resolved since
        :attr:`resolved_cursor`, in batches as events go; on acceptance move that cursor. Returns how many were
        sent. (Read before the next batch of events: a connect resolved before it is forwarded goes once, with its
        outcome.) Nothing is read while the store has written no resolution since that cursor (a read a round cost
        more than forwarding may)."""
        if not self.store.may_have_resolved(self.resolved_cursor):
            return 0
        items, cursor = await asyncio.to_thread(self.store.resolved_stored, self.cursor, self.resolved_cursor,
                                                self._records)  # fmt: skip
        if items and self.takes_outcomes is None:  # (not known yet this run: asked with an empty batch)
            # (only an accepting answer tells: any other, a 421 or 404 of a misconfigured route too, is retried)
            probe = await self._post(b'{"events":[]}', 0)  # (never None: an empty batch is not halved)
            assert probe is not None
            self._answer(probe, 0)  # (raises when not 2xx; on a 2xx learns whether it says ``updated``)
        if items and not self.takes_outcomes:
            # another aggregator (ebpf-server's own) would take the same id again for a second event: not sent,
            # counted and shown (the connect stays in progress there)
            if not self.status.unsent_outcomes:
                log.warning("forwarding to %s: the aggregator does not take a connect's outcome sent after it "
                            "(not netspy-tui's): connects forwarded in progress stay so there",
                            self.status.url)  # fmt: skip
            self.status.unsent_outcomes += len(items)
            items = []
        sent = 0
        while sent < len(items):
            part = [item for _, item in items[sent : sent + self.batch]]
            body = await asyncio.to_thread(encode_batch, part, self.identity, self.workloads.of_pids())
            response = await self._post(body, len(part))
            if response is None:
                continue
            refused, why = self._answer(response, len(part))
            self.status.resolved += len(part) - refused
            await self._accepted(refused, len(part), why, "outcomes")
            sent += len(part)
        if cursor != self.resolved_cursor:
            self.resolved_cursor = cursor
            await asyncio.to_thread(self.store.set_meta, RESOLVED_KEY, str(cursor))
        return sent

    def _answer(self, response: httpx.Response, n: int) -> tuple[int, str]:
        """How many of the ``n`` events posted an accepting answer says were refused, and why; raises when it did
        not accept the batch (the caller retries it)."""
        if response.status_code >= 300:
            said = first_line(mask_secrets(response.text, self._secrets), 200)
            raise httpx.HTTPStatusError(f"HTTP {response.status_code}: {said}",
                                        request=response.request, response=response)  # fmt: skip
        body = self._learn(response)
        if not isinstance(body, dict) or not ({"success", "events_processed"} & body.keys()):
            # (not the contract's IngestResponse: a proxy's or another server's page; taken as accepted, the batch
            # was gone with no error anywhere)
            said = first_line(mask_secrets(response.text, self._secrets), 120) or "an empty body"
            raise httpx.HTTPStatusError(f"HTTP {response.status_code} but not an aggregator's ingest answer: {said}",
                                        request=response.request, response=response)  # fmt: skip
        return _refused(body, n)

    def _learn(self, response: httpx.Response) -> Any:
        """An ingest answer's JSON (None: not JSON); from it, whether the aggregator takes a connect's outcome sent
        after the connect (:attr:`takes_outcomes`: netspy-tui's answers say ``updated``)."""
        if response.status_code >= 300:  # (not an answer to learn from: the caller retries)
            return None
        try:
            body = response.json()
        except (ValueError, RecursionError):  # (an answer that is not JSON, or absurdly nested)
            body = None
        self.takes_outcomes = isinstance(body, dict) and "updated" in body
        return body

    async def _post(self, body: bytes, n: int) -> httpx.Response | None:
        """POST ``body`` (``n`` events or outcomes) to the aggregator; None when it answered 413 to more than one:
        too many (or too many bytes) for it, so half as many from now on, at once (nothing is lost: no cursor has
        moved; the caller sends fewer)."""
        response = await self._client.post(self.url, content=body, headers={"Content-Type": "application/json"})
        if response.status_code == 413 and n > 1:
            self.batch = n // 2
            self.status.last_error = f"HTTP 413: batches of {n} events refused; sending {self.batch}"
            log.warning("forwarding to %s: %s", self.status.url, self.status.last_error)
            return None
        return response

    async def _accepted(self, refused: int, n: int, why: str, what: str) -> None:
        """A batch of ``n`` events (or outcomes) accepted, ``refused`` of them refused: the forwarding works again
        (the last error cleared, :attr:`ForwardStatus.last_success` now); the refused counted where losses show
        (moved past all the same: sent again, they would be refused again; a refused outcome leaves its connect in
        progress there)."""
        self.status.batches += 1
        self.status.last_error = ""
        if refused:
            self.status.rejected += refused
            said = f" (first: {mask_secrets(why, self._secrets)})" if why else ""
            self.status.last_error = f"the aggregator rejected {refused} of {n} {what}{said}"
            log.warning("forwarding to %s: %s", self.status.url, self.status.last_error)
            await asyncio.to_thread(self.store.note_losses, int(time.time()), {"forward_rejected": refused})
        self.status.last_success = utcnow().isoformat(timespec="seconds")

    async def _forward_batch(self) -> int:
        settled = time_to_ns(utcnow()) - int(SETTLE_SECONDS * 1e9)
        (first, last, n), oldest, newest, body = await asyncio.to_thread(self._read, self.cursor, settled)
        if oldest is not None and oldest > self.cursor + 1 and (not n or first > self.cursor + 1):
            first = first if n else oldest
            self._dropped(first - self.cursor - 1)
            self.cursor = first - 1
        self.status.waiting = max(0, newest - self.cursor)
        if not n:
            return 0
        response = await self._post(body, n)
        if response is None:
            return await self._forward_batch()
        refused, why = self._answer(response, n)
        self.cursor = last
        await asyncio.to_thread(self.store.set_meta, CURSOR_KEY, str(self.cursor))
        self.status.forwarded += n - refused
        await self._accepted(refused, n, why, "events")
        self.status.waiting = max(0, newest - self.cursor)  # (as of the read: the next one counts the rest)
        return n

    def _written(self, first: int, rows: list[tuple[Any, ...]]) -> None:
        """The store's writer wrote ``rows`` as ``first``, ``first + 1``, ...: kept for the next batches."""
        times, bodies = [r[1] for r in rows], [r[6] for r in rows]
        with self._recent_lock:
            self._recent.append((first, times, bodies))
            self._recent_events += len(rows)
            while self._recent_events - len(self._recent[0][1]) >= self._recent_keep:
                self._recent_events -= len(self._recent.popleft()[1])

    def _records_written(self, parts: list[tuple[int, np.ndarray]]) -> None:
        """The store's writer stored these runs of ring records (``(first seq, records)``): kept for the next
        batches."""
        with self._recent_lock:
            for part in parts:
                self._recent_records.append(part)
                self._recent_record_count += len(part[1])
            kept = self._recent_records
            while self._recent_record_count - len(kept[0][1]) >= self._recent_keep:
                self._recent_record_count -= len(kept.popleft()[1])

    def _records_after(self, cursor: int, settled: int) -> tuple[int, np.ndarray] | None:
        """The next batch of ring records after ``cursor`` from what the writer gave, up to the first one not
        settled by ``settled`` or a gap (JSON rows, or what :attr:`_recent_records` let go), as its first ``seq``
        and its records; None when that does not start right after ``cursor``."""
        with self._recent_lock:
            kept = self._recent_records
            gone, follows = _drop_sent(kept, cursor)
            self._recent_record_count -= gone
            if not follows:
                return None
            parts: list[np.ndarray] = []
            seq, held = cursor + 1, 0
            for start, recs in kept:
                if start > seq or held >= self.batch:
                    break
                part = recs[seq - start : seq - start + self.batch - held]
                parts.append(part)
                held += len(part)
                seq += len(part)
                if seq < start + len(recs):
                    break
        recs = C.join(parts) if parts else np.empty(0, P.RECORD)
        late = np.flatnonzero(recs["wall"] > settled)  # (as the store's read: up to the first not settled)
        return cursor + 1, recs[: int(late[0])] if len(late) else recs

    def _recent_after(self, cursor: int, settled: int) -> tuple[int, list[Any]] | None:
        """The next batch after ``cursor`` from what the writer gave (up to a gap: ring records, or what
        :attr:`_recent` let go), as its first ``seq`` and its events, or None when it does not start right
        after ``cursor``."""
        with self._recent_lock:
            recent = self._recent
            gone, follows = _drop_sent(recent, cursor)
            self._recent_events -= gone
            if not follows:
                return None
            out: list[Any] = []
            seq = cursor + 1
            for start, times, bodies in recent:
                if start > seq or len(out) >= self.batch:
                    break
                i = seq - start
                j = min(len(times), i + self.batch - len(out))
                if max(times[i:j], default=settled) > settled:  # (rare: a write not settled yet, in part)
                    j = next(k for k in range(i, j) if times[k] > settled)
                out += bodies[i:j]
                seq = start + j
                if j < len(times):
                    break
            return cursor + 1, out

    def _read(self, cursor: int, settled: int) -> tuple[tuple[int, int, int], int | None, int, bytes]:
        """In a worker thread: the next batch after ``cursor`` (settled by ``settled``) as ``(first seq, last
        seq, events)``, the oldest and newest ``seq`` stored (the oldest None when the batch was taken from
        :attr:`_recent`: it starts right after ``cursor``, nothing was removed before it), and the batch's body."""
        recent = self._recent_after(cursor, settled)
        if recent is not None:
            first, items = recent
            span, oldest = (first, first + len(items) - 1, len(items)), None
        elif (taken := self._records_after(cursor, settled)) is not None:
            first, recs = taken  # (ring records as the writer stored them: their events' JSON made for the lot)
            n = len(recs)
            if not n:
                return (0, 0, 0), None, self.store.newest_seq(), b""
            pieces = self.store.record_pieces(recs, first, self._records)
            return (first, first + n - 1, n), None, self.store.newest_seq(), body_of(pieces)
        elif (joined := self.store.after_pieces(cursor, self.batch, settled, self._records)) is not None:
            (first, last, pieces), oldest = joined  # (ring records alone: their events' JSON made for the lot)
            n = len(pieces) // PIECES
            body = body_of(pieces) if n else b""
            return (first, last, n) if n else (0, 0, 0), oldest, self.store.newest_seq(), body
        else:
            rows, oldest = self.store.after_stored(cursor, self.batch, settled, self._records)
            items = [item for _, item in rows]
            span = (rows[0][0], rows[-1][0], len(rows)) if rows else (0, 0, 0)
        newest = self.store.newest_seq()
        body = encode_batch(items, self.identity, self.workloads.of_pids()) if items else b""
        return span, oldest, newest, body

    def _dropped(self, n: int) -> None:
        if n <= 0:
            return
        self.status.dropped += n
        log.warning("forwarding: %d events were removed by retention before they could be forwarded", n)
        self.store.note_losses(int(time.time()), {"forward_dropped": n})
