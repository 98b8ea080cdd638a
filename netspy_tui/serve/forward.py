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
as it handed it over (:meth:`EventStore.on_rows`, the last :data:`RECENT_EVENTS` events), not read back (so an
outage shorter than that loses nothing to the store's own limits either); and events the store keeps
as JSON rows are re-encoded from that JSON (:func:`encode_batch`, msgspec, a batch in one call) without
building a model per event; ring records (an eBPF agent's) from a template per record shape
(:class:`RecordJson`: the same bytes their structs' JSON has); the rare event the fast path does not cover
goes through :func:`~netspy_tui.serve.app.event_json`, with the same result.

Each event goes with its process's workload on this host (:class:`WorkloadJson`: a ring record's from the cgroup
id it carries, resolved once per id; an event stored as JSON from its pid; none added to a recording's events).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import random
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
from netspy_tui.textsafe import clean, first_line, mask_secrets, redact_url, secret_forms, url_secrets

__all__ = ["INTERVAL", "ForwardStatus", "Forwarder", "RecordJson", "encode_batch", "encode_events", "node_identity"]

log = logging.getLogger(__name__)

CURSOR_KEY = "forward_cursor"
#: the store's resolution number up to which the outcomes of connects forwarded in progress were sent
RESOLVED_KEY = "forward_resolved_cursor"
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
    same functions): its destination's fields, then its raw address's."""
    ip, ip_json, raw = _address_json(family, v4, lo, hi)
    where = b'"destination_ip":%s,"destination_port":%d,"destination":%s,"address_family":%d' % (
        ip_json, port, _ENCODER.encode(with_port(family, ip, port)), family)  # fmt: skip
    return where, raw


@functools.lru_cache(maxsize=32768)
def _address_json(family: int, v4: int, lo: int, hi: int) -> tuple[str, bytes, bytes]:
    """A connect's address as text and as JSON, and its raw address's fields as its struct writes them: made once
    per address (a host's destinations come again on other ports: these were most of what a new place cost)."""
    ip, _ = destination(family, lo, hi, 0)
    raw_ipv4, raw_ipv6 = raw_address(family, v4, lo, hi)
    return ip, _ENCODER.encode(ip), _ENCODER.encode({"raw_ipv4": raw_ipv4, "raw_ipv6": raw_ipv6})[1:-1]


#: the fields of a ring record each event fills in its template: zeroed, what is left of the record names its
#: template; those its JSON does not show (a connect's latency, the pending connect's socket, the cgroup) too
_PER_EVENT = ("ts", "wall", "key", "pid", "tid", "comm", "thread", "length", "size", "cgroup_hi", "cgroup_lo",
              "addr", "family")  # fmt: skip
#: what names an event's place: a drop's destination is its address and port when the kernel gave them
_PLACE = np.dtype([("kind", "<u4"), ("l3", "<u4"), ("family", "<u2"), ("port", "<u2"), ("addr", "u1", (16,))])
#: record shapes (templates) and places kept per :class:`RecordJson`: the older half goes out when full
TEMPLATES_KEPT = 32768


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
    if type(count) is not int:
        processed, duplicates = body.get("events_processed"), body.get("duplicates", 0)
        if body.get("success") is not False or type(processed) is not int:
            return 0, ""
        count = n - processed - (duplicates if type(duplicates) is int else 0)
        why = why or clean(body.get("message", ""), 160)
    return max(0, min(n, count)), first_line(why, 160)


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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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

    async def run(self) -> None:
        """Forward until :meth:`stop`; never raises (errors are counted, logged once per kind and
        retried)."""
        attempt = 0
        stop_rows = self.store.on_rows(self._written)
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
        return await self._forward_batch()

    async def resolve_once(self) -> int:
        """Send again, with their outcome, the connects forwarded in progress whose outcome the store resolved since
        :attr:`resolved_cursor`, in batches as events go; on acceptance move that cursor. Returns how many were
        sent. (Read before the next batch of events: a connect resolved before it is forwarded goes once, with its
        outcome.)"""
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
        return _refused(self._learn(response), n)

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

    def _recent_after(self, cursor: int, settled: int) -> tuple[int, list[Any]] | None:
        """The next batch after ``cursor`` from what the writer gave (up to a gap: ring records, or what
        :attr:`_recent` let go), as its first ``seq`` and its events, or None when it does not start right
        after ``cursor``."""
        with self._recent_lock:
            recent = self._recent
            while recent and recent[0][0] + len(recent[0][1]) <= cursor + 1:
                self._recent_events -= len(recent.popleft()[1])
            if not recent or not recent[0][0] <= cursor + 1:
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
