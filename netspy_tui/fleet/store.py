"""An aggregator's events: one :class:`~netspy_tui.store.EventStore` per node, fed by agents'
``POST /api/events/ingest`` batches (netspy-tui ``serve --forward`` or the Go agents).

Each node's store keeps its own exact rollups, so a node's figures are its own counts; the fleet's
are their sums. Ingest checks every event on its own: a bad one is refused with its index and
reason and the rest of the batch is kept. A batch an agent sends again (it did not see the answer) is not counted
twice: each node's recent event ids are remembered (the last ``dedupe_window`` of them; ``serve --forward`` retries
within that many events). An id already held is a duplicate, except a connect stored in progress (remembered apart,
however many events came since, up to :data:`PENDING_PER_NODE` a node, and found again in its store after a
restart) sent again with its outcome (``serve --forward`` sends it once the connect ends): the stored event takes
its place (:meth:`EventStore.replace_rows`) and its count moves from ``in_progress`` to that outcome (counted
once), numbered by the fleet's resolution position (:attr:`FleetStore.resolved_position`), so that a reader that
listed it in progress asks for the outcomes that came since (:meth:`FleetStore.replaced_since`).
Node names come from the events' ``k8s_node_name`` (the agents set it), else the ingest's own default.

The fleet has an insertion order of its own (:attr:`FleetStore.seq`, moved by every event stored): a reader
that passes the position of its last read (:meth:`FleetStore.changes`) is told which nodes stored events
since, where each node's store stood then and the oldest event time among them, so it reads each event stored
since once, however old its time (an agent's backlog after an outage) — the single store's ``after`` cursor,
fleet-wide.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from netspy_tui.analysis.aggregate import is_failure, second_of
from netspy_tui.errors import UsageError
from netspy_tui.fleet import wire as W
from netspy_tui.models import (
    OUTCOME_SET,
    ConnectionEvent,
    Event,
    EventQuery,
    PacketDropEvent,
    format_time,
    int_problem,
    is_ip_address,
    ns_to_time,
    parse_event,
    text_problem,
    time_to_ns,
    utcnow,
)
from netspy_tui.safefs import check_directory, create_unique, make_private_dirs, shown, tighten_directory
from netspy_tui.store import EventStore, StoreError
from netspy_tui.store import jsonblocks as J
from netspy_tui.store.listeners import Listeners
from netspy_tui.store.sqlite import LOAD_AHEAD, build_stored, event_row
from netspy_tui.textsafe import clean

__all__ = ["BadBatch", "FleetStore", "IngestResult", "NODE_NAME", "node_of", "parse_batch"]

AnyEvent = ConnectionEvent | PacketDropEvent

#: what a node name may be (a Kubernetes node name or a host name)
NODE_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")
_META_NODE = "fleet_node"
#: the causes of an agent's own losses in its node's store (see :meth:`FleetStore.put_agent_losses`)
AGENT_LOSS = "agent:"
#: when aggregation started (ns since the epoch), kept in each node's store: /api/stats' ``aggregation_start`` is the
#: earliest, so that it and the stored counts it goes with (``total_events``, ``events_by_node``) survive a restart
_META_SINCE = "fleet_since"
NS = 1_000_000_000
#: how far past the aggregator's clock an event's time may be: agents' clocks may run a little ahead; an event from
#: further on is a wrong clock, which pinned the fleet's newest event (one from 2099 stayed first everywhere)
MAX_AHEAD_SECONDS = LOAD_AHEAD
log = logging.getLogger(__name__)

IN_PROGRESS = "in_progress"
#: connects held in progress remembered per node (their outcome taking their place); the oldest beyond it are
#: forgotten, counted (:attr:`FleetStore.pending_forgotten`): an outcome of one then is stored as a new event
PENDING_PER_NODE = 100_000
#: the fields each kind holds as JSON integers and booleans: the model takes "32", 32.0 and true for an integer
#: (lax), an agent sends none of them
_INTS = {kind: frozenset(n for n, f in model.model_fields.items() if f.annotation in (int, int | None))
         | ({"kernel_drop_reason_code"} if kind == "packet_drop" else set())
         for kind, model in (("connection", ConnectionEvent), ("packet_drop", PacketDropEvent))}  # fmt: skip
_BOOLS = {kind: frozenset(n for n, f in model.model_fields.items() if f.annotation in (bool, bool | None))
          for kind, model in (("connection", ConnectionEvent), ("packet_drop", PacketDropEvent))}  # fmt: skip


#: ingest marks kept (one per node per batch stored): a reader's cursor older than the oldest is answered by time
#: alone (its ``since`` again, which it de-duplicates by id). At 100 agents posting every 2 s, 200 s of them.
MAX_MARKS = 10_000


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    updated: int = 0  # connects held in progress given their outcome (not new events: counted once)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (index in the batch, why)
    nodes: dict[str, int] = field(default_factory=dict)  # accepted per node


@dataclass
class _Node:
    store: EventStore
    seen: OrderedDict[str, bool] = field(default_factory=OrderedDict)  # event key -> a connect stored in progress
    #: the keys of its connects stored in progress, however long ago (not only the last ``dedupe_window``): the
    #: outcome of one that lasts minutes on a busy node still finds it (up to :data:`PENDING_PER_NODE`)
    pending: OrderedDict[str, None] = field(default_factory=OrderedDict)
    events: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    last_seen: float = 0.0  # monotonic, of the last batch
    last_event: datetime | None = None
    #: held while a batch of the node is stored: from several threads, batches of different nodes are stored in
    #: parallel, a node's one at a time (a retry sent while its first try is still being stored is then a
    #: duplicate, or stored if the first failed)
    ingesting: threading.Lock = field(default_factory=threading.Lock)


class BadBatch(ValueError):
    """An ingest body that is not ``{"events": [...]}`` JSON (the one-line reason)."""


class _Body(BaseModel):
    events: list[Event]


def parse_batch(raw: bytes) -> list[Any]:
    """An ingest body's events: checked in one pass over the JSON when every one is valid (the usual
    batch: structs in C, :mod:`netspy_tui.fleet.wire`, or, for events only the model takes as they are,
    the events built), else the items as sent, so that ingest refuses each bad one with its reason and
    keeps the rest. Each is ready for :meth:`FleetStore.ingest`. Raises :class:`BadBatch`."""
    fast = W.decode_body(raw)
    if fast is not None:
        return fast
    try:  # (strict: the model's lax conversions, "32" or true for an integer, are refused per event by ingest)
        return list(_Body.model_validate_json(raw, strict=True).events)
    except ValidationError:
        pass  # some event (or the body) is not right: each item is looked at on its own
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadBatch("Invalid JSON: the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadBatch('the body must be a JSON object {"events": [event, ...]}')
    items = body.get("events")
    if items is None:  # ({} or "events": null: an empty batch, as the Go aggregator decodes it)
        return []
    if not isinstance(items, list):
        raise BadBatch('the body must be a JSON object {"events": [event, ...]}')
    return items


def node_of(item: Any) -> Any:
    """An item's ``k8s_node_name`` as sent (None when it has none, or is not an event object)."""
    if isinstance(item, dict):
        return item.get("k8s_node_name")
    if isinstance(item, W.WireConnection | W.WireDrop | ConnectionEvent | PacketDropEvent):
        return item.k8s_node_name
    return None


def _reason(exc: ValidationError) -> str:
    """One event's first problem: ``field: what is wrong``."""
    error = exc.errors()[0]
    loc = [str(p) for p in error.get("loc", ())]
    if loc[:1] in (["connection"], ["packet_drop"]):  # the union's tag, not a field
        loc = loc[1:]
    where = ".".join(loc) or "event"
    return f"{clean(where, 60)}: {clean(str(error.get('msg', '')), 120)}"


def _json_type(value: Any) -> str:
    return {bool: "a boolean", str: "a string", int: "an integer", float: "a number with a fraction", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)  # fmt: skip


def _type_problem(item: dict[str, Any]) -> str | None:
    """An event object's integer or boolean field sent as another JSON type (the model would convert it)."""
    kind = str(item.get("type"))
    for name in _INTS.get(kind, frozenset()):
        value = item.get(name)
        if value is not None and type(value) is not int:
            return f"{name}: must be an integer, got {_json_type(value)}"
    for name in _BOOLS.get(kind, frozenset()):
        value = item.get(name)
        if value is not None and type(value) is not bool:
            return f"{name}: must be true or false, got {_json_type(value)}"
    raw = item.get("raw_ipv6")
    if isinstance(raw, list) and any(type(b) is not int for b in raw):
        return "raw_ipv6: must be an array of integers"
    when = item.get("time")
    if when is not None and type(when) is not str:  # (the model reads 5 as 1970-01-01T00:00:05Z)
        return f"time: must be an RFC3339 string, got {_json_type(when)}"
    return None


def _time_problem(t: int, latest: int) -> str | None:
    """An event time (ns) before the epoch or more than :data:`MAX_AHEAD_SECONDS` ahead (``latest``)."""
    if t > latest:
        return f"time: {format_time(ns_to_time(t))} is more than {MAX_AHEAD_SECONDS} s ahead of the aggregator's clock"
    if t < 0:
        return "time: before 1970"
    return None


def _text_problem(event: Any) -> str | None:
    """:func:`~netspy_tui.models.text_problem`, of a model or a wire struct."""
    return None if type(event) is W.WireDrop else text_problem(event)


def _range_problem(event: AnyEvent, t: int, latest: int) -> str | None:
    """What an event the model took holds beyond what its fields can be: its time, integers or texts (``t`` its
    time in ns)."""
    return _time_problem(t, latest) or int_problem(event) or _text_problem(event)


def _wire_text_problem(event: Any) -> str | None:
    """:func:`_text_problem` of a wire struct, the usual answer (None) found without a call per field."""
    if type(event) is W.WireDrop:
        return None
    ip, peer, outcome = event.destination_ip, event.peer_ip, event.outcome
    if (ip and not is_ip_address(ip)) or (peer and not is_ip_address(peer)) or (outcome and outcome not in OUTCOME_SET):
        return text_problem(event)
    return None


def _wire_problem(event: Any, t: int, latest: int) -> str | None:
    """:func:`_range_problem` of a struct the decoder took: its integer fields' ranges (:data:`wire.BOUNDS`)
    the decoder checked, the rest here (the same reasons, in the same order)."""
    return _time_problem(t, latest) or _text_problem(event)


def _key(event: AnyEvent) -> str:
    """What makes an event the one an agent sent before: its id, else what it is (its time as an instant)."""
    return event.id or f"{event.type}|{event.pid}|{event.timestamp}|{time_to_ns(event.time)}"


def _in_progress(event: AnyEvent) -> bool:
    """Whether ``event`` is a connect stored in progress (its outcome, or its return code's, as ingest reads it)."""
    return isinstance(event, ConnectionEvent) and event.effective_outcome == IN_PROGRESS


def _replaces(stored: bytes, new: W.Prepared) -> list[tuple[Any, ...]] | None:
    """For :meth:`EventStore.replace_rows`: when ``stored`` (a stored event's JSON) is the connect ``new`` resolves
    (the same id, time, timestamp, pid and command, stored in progress; ``new`` not in progress), the rollup rows
    that move its count: -1 where it was counted, +1 where ``new`` is; else None."""
    try:
        event = parse_event(json.loads(stored))
        _, kind, t, row, rollup = _prepare_model(event)
    except Exception:  # noqa: BLE001 (a body that is not such an event: not the one)
        return None
    if kind != 0 or _key(event) != new[0] or row[5] != IN_PROGRESS or new[3][5] == IN_PROGRESS:
        return None
    if (t, row[2], row[3], row[4]) != (new[2], new[3][2], new[3][3], new[3][4]):
        return None
    return [(*rollup[:9], -1, t, t), new[4]]


def _prepare_model(event: AnyEvent) -> W.Prepared:
    """A built event's rows, as :func:`wire.prepare` makes them of a struct (raises when the store
    cannot hold it)."""
    row, kept = event_row(event)
    kind, t, outcome = row[0], row[1], row[5]
    port = kept.destination_port if isinstance(kept, ConnectionEvent) else 0
    rollup = (t // NS, kind, kept.pid, kept.command, kept.destination or "", port, kept.protocol or "", outcome,
              1 if is_failure(kept) else 0, 1, t, t)  # fmt: skip
    return _key(event), kind, t, row, rollup


#: a node's store failure counts in the health this long after its agent last tried (it retries every ≤ 30 s)
FAILURE_SECONDS = 300.0
#: what the aggregator keeps in its store directory: the nodes' stores, their SQLite side files, a write check
_OURS = re.compile(r"^(node-.*\.sqlite3(-wal|-shm|-journal|-memory)?|\.netspy-write-check(-\d+)?)$")


def _prepare_directory(directory: Path) -> None:
    """The nodes' stores' directory, made 0700 if missing, checked and written once: what would refuse
    every node's store later (at each ingest, answered 503 while the server looked healthy) is refused at
    start (:class:`UsageError`: one line, exit 2). One of ours with group or other bits (a Kubernetes volume
    remounted with ``fsGroup`` makes everything on it group-writable) is made 0700 again, as
    ``prepare_db_file`` tightens a store file of ours."""
    what = "the aggregator's store directory"
    hint = "pass --db a directory on a writable disk that no other user can write (it is made if missing)"
    try:
        made = not os.path.lexists(directory)
        # (refused: another user's link or directory on the way)
        make_private_dirs(directory, what, hint, group_parents=True)
        st = os.stat(directory)
        if not stat.S_ISDIR(st.st_mode):
            raise UsageError(f"{what} {shown(directory)} is not a directory", hint)
        # tightened only when it is ours alone: made here, or holding nothing but node stores (what a volume's
        # fsGroup change loosened); never a directory of other things (``--db /tmp``, ``--db ~``): refused below
        ours = made or all(_OURS.match(name) for name in os.listdir(directory))
        if ours and not st.st_mode & (stat.S_ISVTX | 0o002):
            tighten_directory(directory, keep=stat.S_ISGID)  # (never through a link)
        check_directory(directory, what, hint, group_parents=True)
        probe, fd = create_unique(directory, ".netspy-write-check", "")
        os.close(fd)
        probe.unlink()
    except UsageError:
        raise
    except OSError as exc:
        raise UsageError(f"{what} {shown(directory)} cannot be made or written: {exc.strerror or exc}", hint) from None


@dataclass
class Checked:
    """A batch :func:`check_batch` checked: each node's events ready for its store (in batch order), and those
    refused (index in the batch, why). Plain data (strings, numbers, bytes, tuples): a checking process packs it by
    marshal for the storing process (:mod:`netspy_tui.fleet.prep`)."""

    by_node: dict[str, list[W.Prepared]]
    rejected: list[tuple[int, str]]
    blocks: dict[str, list[J.Row]] = field(default_factory=dict)
    """Each node's events as the blocks its store keeps them in (:func:`jsonblocks.rows` numbered from 0), made
    where the batch was checked: when every event of the node is new to its store (no retry, no outcome of a
    connect held in progress), the store writes them as they are, and the storing process neither packs nor
    compresses them (a node whose events a block cannot hold has none: the store says why). From a checking
    process, the rows of a node with blocks come without their JSON (``(kind, t, ts, pid, command, outcome)``):
    the blocks hold it."""


def check_batch(items: Sequence[Any], default_node: str | None = None) -> Checked:
    """Check each event of a batch on its own (its node name, its fields, its time not too far ahead) and make
    the rows its node's store keeps; no store is read (the same answer in any process).

    ``items``: event objects as sent (dicts, each validated here), or what :func:`parse_batch`
    made of a body whose events were all valid (the whole batch checked in one pass)."""
    result = Checked({}, [])
    latest = time.time_ns() + MAX_AHEAD_SECONDS * NS
    by_node = result.by_node
    names: dict[Any, bool] = {}  # node name -> whether it is one (checked once per batch)
    wire = (W.WireConnection, W.WireDrop)
    for index, item in enumerate(items):
        structs = type(item) in wire  # (the usual batch: every event checked in one pass, parse_batch)
        if not structs and not isinstance(item, dict | ConnectionEvent | PacketDropEvent):
            result.rejected.append((index, f"not an event object ({type(item).__name__})"))
            continue
        node: Any = (item.k8s_node_name if structs else node_of(item)) or default_node
        ok = names.get(node) if type(node) is str else False
        if ok is None:
            ok = names[node] = bool(NODE_NAME.match(node))
        if not ok:
            result.rejected.append((index, "k8s_node_name: missing or not a node name"))
            continue
        prepared = W.prepare(item) if structs else None
        if prepared is not None:  # (_wire_problem, inline: a batch's thousands of events)
            t = prepared[2]
            why = _time_problem(t, latest) if t > latest or t < 0 else _wire_text_problem(item)
        else:
            if not isinstance(item, ConnectionEvent | PacketDropEvent):
                raw = W.as_item(item) if structs else item
                try:
                    item = parse_event(raw)
                except ValidationError as exc:
                    result.rejected.append((index, _reason(exc)))
                    continue
                why = _type_problem(raw)
                if why:
                    result.rejected.append((index, why))
                    continue
            try:
                prepared = _prepare_model(item)
            except Exception as exc:  # an event the store cannot hold (an integer beyond 64 bits, ...)
                result.rejected.append((index, f"not stored: {clean(str(exc), 160)}"))
                continue
            why = _range_problem(item, prepared[2], latest)
        if why:
            result.rejected.append((index, why))
            continue
        events = by_node.get(node)
        if events is None:
            events = by_node[node] = []
        events.append(prepared)
    for node, events in by_node.items():
        try:
            result.blocks[node] = J.rows([e[3] for e in events], 0)
        except J.ROW_ERRORS:  # (a value a block cannot hold: the store writes the node's events as rows, and says)
            pass
    return result


class FleetStore:
    """Per-node stores under ``directory`` (None: in memory, for tests)."""

    def __init__(self, directory: Path | None, *, retention_seconds: float | None = 24 * 3600,
                 dedupe_window: int = 200_000, max_nodes: int = 1024) -> None:  # fmt: skip
        self.directory = directory
        self.retention_seconds = retention_seconds
        self.dedupe_window = dedupe_window
        self.max_nodes = max_nodes
        self.started = utcnow()
        """When aggregation started: this start, or the earliest its nodes' stores say (a restart keeps it)."""
        self._nodes: dict[str, _Node] = {}
        self._lock = threading.Lock()
        self._changed = Listeners("fleet change")
        self._failures: dict[str, tuple[float, str]] = {}  # node -> (monotonic, why) of its last write, if it failed
        # The fleet's insertion order: moved by each event stored. It starts at the clock's microseconds, so a cursor
        # of an earlier run (smaller unless it stored more than an event a microsecond) is not taken for one of this.
        self._seq = time.time_ns() // 1000
        self._floor = self._seq
        """The oldest position :meth:`changes` can answer for (the marks after it are all kept)."""
        self._marks: deque[tuple[int, str, int, int]] = deque()
        """(fleet position after the batch, node, where the node's store stood before it, its oldest event ns)."""
        self.store_failures = 0
        self.pending_forgotten = 0
        """Connects held in progress forgotten (more than :data:`PENDING_PER_NODE` of a node at once): the outcome
        of one is stored as another event, and the connect counted in progress and with its outcome."""
        """Batches (one node's part of an ingest) a store could not write: the agent was answered 503 and retries."""
        self._resolved = time.time_ns() // 1000
        """The fleet's resolution position: moved by each batch of a node that gave connects held in progress their
        outcome (their number in the node's store). From the clock, as :attr:`_seq`, and past what the stores hold."""
        self._resolving = threading.Lock()
        """Held while a batch's outcomes are numbered and written: a reader is told a position all of whose
        outcomes are written."""
        if directory is not None:
            _prepare_directory(directory)
            for path in sorted(directory.glob("node-*.sqlite3")):
                store = EventStore(path, retention_seconds=retention_seconds)
                name = store.get_meta(_META_NODE)
                if name and NODE_NAME.match(name):
                    # a restart: the node's figures are what it stored, not zero
                    by_type = store.stored_by_kind()
                    self._nodes[name] = state = _Node(store, events=sum(by_type.values()), by_type=by_type,
                                                      last_event=store.newest_time())  # fmt: skip
                    self._aggregating_since(store)
                    self._remember_stored(state)
                    self._resolved = max(self._resolved, store.replaced_cursor())
                else:
                    store.close()

    # --- ingest -------------------------------------------------------------------------------

    def ingest(self, items: Sequence[Any], default_node: str | None = None) -> IngestResult:
        """Check, de-duplicate and store one batch; returns what happened to each event.

        ``items``: event objects as sent (dicts, each validated here), or what :func:`parse_batch`
        made of a body whose events were all valid (the whole batch checked in one pass)."""
        return self.store_checked(check_batch(items, default_node))

    def store_checked(self, checked: Checked) -> IngestResult:
        """De-duplicate and store a batch :func:`check_batch` checked (in this process or another); returns what
        happened to each event."""
        result = IngestResult(rejected=list(checked.rejected))
        by_node = checked.by_node
        for node, events in by_node.items():
            try:
                state = self._node(node)
            except OverflowError as exc:
                result.rejected.extend((-1, str(exc)) for _ in events)
                continue
            except Exception as exc:  # its store cannot be opened (a directory others can write, a full disk, ...)
                self._failed(node, exc)
                raise
            with state.ingesting:  # (a node's batches one at a time: an agent's retry waits for its first try)
                self._ingest_node(node, state, events, result, checked.blocks.get(node))
        if result.accepted or result.updated:
            self._changed()
        return result

    def _ingest_node(self, node: str, state: _Node, events: list[W.Prepared], result: IngestResult,
                     checked_blocks: list[J.Row] | None = None) -> None:  # fmt: skip
        """(``state.ingesting`` held) Store a batch's checked events of ``node``, what happened to them in
        ``result``; ``checked_blocks``: :attr:`Checked.blocks`' of the node."""
        fresh, resolving = self._fresh(state, events)
        if checked_blocks is not None and len(fresh) != len(events) and J.bodiless([e[3] for e in events[:1]]):
            # (rows without their JSON, the blocks holding it, and not all of them new: each row with it again)
            whole = dict(zip(map(id, events), J.with_bodies([e[3] for e in events], checked_blocks), strict=True))
            fresh = [(e[0], e[1], e[2], whole[id(e)], e[4]) for e in fresh]
            resolving = [(e[0], e[1], e[2], whole[id(e)], e[4]) for e in resolving]
        result.duplicates += len(events) - len(fresh) - len(resolving)
        lost = 0
        if fresh:
            before = state.store.written_seq
            try:
                # (every event new, in the batch's order: the blocks made where it was checked hold them as they are)
                blocks = checked_blocks if len(fresh) == len(events) else None
                state.store.add_rows([e[3] for e in fresh], [e[4] for e in fresh], blocks)
            except StoreError as exc:
                self._failed(node, exc)
                if exc.lost < len(fresh):  # the rest was kept: sending it again would count it twice
                    lost = exc.lost
                    result.rejected.extend((-1, f"not stored: {clean(str(exc), 160)}") for _ in range(lost))
                else:
                    self._forget(state, fresh)
                    raise
            except BaseException as exc:
                self._forget(state, fresh)
                if isinstance(exc, Exception):
                    self._failed(node, exc)
                raise
            # (by type: a few events a store error lost may be counted here)
            drops = sum(e[1] for e in fresh)
            by_type = {"connection": len(fresh) - drops, "packet_drop": drops}
            newest = ns_to_time(max(e[2] for e in fresh))
        with self._lock:
            state.events += len(fresh) - lost
            if fresh:
                self._mark(node, before, len(fresh) - lost, min(e[2] for e in fresh))
                for kind, n in by_type.items():
                    if n:
                        state.by_type[kind] = state.by_type.get(kind, 0) + n
                if state.last_event is None or newest > state.last_event:
                    state.last_event = newest
            state.last_seen = time.monotonic()
            if not lost:
                self._failures.pop(node, None)  # its store writes again
        result.accepted += len(fresh) - lost
        result.nodes[node] = result.nodes.get(node, 0) + len(fresh) - lost
        if resolving:  # (after the batch's new events: one may be the connect it resolves)
            updated = self._resolve(node, state, resolving)
            result.updated += updated
            result.duplicates += len(resolving) - updated

    def _mark(self, node: str, before: int, stored: int, oldest_ns: int) -> None:
        """(The lock held) ``stored`` events of ``node`` were stored after its store's ``before``, the oldest of
        them at ``oldest_ns``: the fleet's position moves past them."""
        self._seq += stored
        self._marks.append((self._seq, node, before, oldest_ns))
        while len(self._marks) > MAX_MARKS:
            self._floor = self._marks.popleft()[0]

    @property
    def seq(self) -> int:
        """The fleet's insertion position: pass it to :meth:`changes` to learn what was stored after it."""
        with self._lock:
            return self._seq

    def changes(self, after: int | None) -> tuple[int, dict[str, tuple[int, int]] | None]:
        """The fleet's position now, and what was stored after position ``after``: each node that stored events
        since, with where its store stood then (its events after that ``seq``) and the oldest event time among
        them (ns). None when ``after`` is None or a position this run cannot answer for (older than the marks
        kept, or of another run): read by time alone."""
        with self._lock:
            now = self._seq
            if after is None or not self._floor <= after <= now:
                return now, None
            changed: dict[str, tuple[int, int]] = {}
            for position, node, before, oldest in reversed(self._marks):
                if position <= after:
                    break
                seen = changed.get(node)
                # (the lowest start among the node's marks since ``after``)
                changed[node] = (before, oldest) if seen is None else (min(before, seen[0]), min(oldest, seen[1]))
            return now, changed

    def _failed(self, node: str, exc: BaseException) -> None:
        with self._lock:
            self._failures[node] = (time.monotonic(), clean(str(exc), 300))
            self.store_failures += 1

    def health(self, recent_seconds: float = 60.0) -> tuple[str, str]:
        """``healthy``, ``degraded`` (some node's store cannot be written) or ``unhealthy`` (no node stored
        anything in the last ``recent_seconds`` while one fails: every ingest fails), and why (the newest failure).
        A node's failure lasts until one of its batches is stored (its agent retries it), or until its agent has
        not tried again for :data:`FAILURE_SECONDS` (a node drained, its agent gone: nothing is failing now)."""
        now = time.monotonic()
        with self._lock:
            failures = {node: f for node, f in self._failures.items() if now - f[0] <= FAILURE_SECONDS}
            storing = any(name not in failures and s.last_seen and now - s.last_seen <= recent_seconds
                          for name, s in self._nodes.items())  # fmt: skip
        if not failures:
            return "healthy", ""
        node, (_, why) = max(failures.items(), key=lambda kv: kv[1][0])
        n = len(failures)
        detail = f"the store of {n} node{'' if n == 1 else 's'} cannot be written (node {clean(node, 80)}: {why})"
        return ("degraded" if storing else "unhealthy"), detail

    def on_change(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` (on the ingesting thread: it must be quick) after every batch that stored events;
        returns the call that stops it. ``/api/changes`` and the MCP server's notifications follow it."""
        return self._changed.add(listener)

    def _remember_stored(self, state: _Node) -> None:
        """After a restart: the ids of the node's newest stored events, so that a batch an agent
        sends again (its answer was lost in the restart) is still recognised."""
        newest = state.store.newest_seq()
        start = max(0, newest - self.dedupe_window)
        while start < newest:
            rows, _ = state.store.after(start, 10_000, 2**62)
            if not rows:
                break
            for _, event in rows:
                state.seen[_key(event)] = _in_progress(event)
            start = rows[-1][0]
        # the connects held in progress from before the window too (those whose outcome has not come: counted in
        # progress in the rollups), as retention keeps them: the newest PENDING_PER_NODE
        keys: list[str] = []
        for second, pid in state.store.in_progress_seconds(PENDING_PER_NODE):
            since = datetime.fromtimestamp(second, UTC)
            query = EventQuery(kind="connection", pid=pid, since=since, until=since + timedelta(seconds=1),
                               limit=PENDING_PER_NODE)  # fmt: skip
            _, items = state.store.query_stored(query)
            keys += [_key(event) for event in build_stored([item for _, _, item in items])
                     if _in_progress(event) and time_to_ns(event.time) // 1_000_000_000 == second]  # fmt: skip
            if len(keys) >= PENDING_PER_NODE:
                break
        for key in reversed(keys[:PENDING_PER_NODE]):  # (oldest first: forgotten first)
            state.pending[key] = None

    def _fresh(self, state: _Node, events: list[W.Prepared]) -> tuple[list[W.Prepared], list[W.Prepared]]:
        """The events not held yet, and those that give a connect held in progress its outcome."""
        fresh = []
        resolving = []
        seen = state.seen
        with self._lock:
            for event in events:
                key = event[0]
                held = seen.get(key)
                if held is None and key in state.pending:  # (held in progress since before the window)
                    held = True
                if held is None:
                    seen[key] = in_progress = event[1] == 0 and event[3][5] == IN_PROGRESS
                    if in_progress:
                        self._hold(state, key)
                    fresh.append(event)
                elif held and event[1] == 0 and event[3][5] != IN_PROGRESS:
                    seen[key] = False  # (its outcome sent again is a duplicate)
                    state.pending.pop(key, None)
                    resolving.append(event)
            while len(seen) > self.dedupe_window:
                seen.popitem(last=False)
        return fresh, resolving

    def _hold(self, state: _Node, key: str) -> None:
        """Remember ``key`` as a connect held in progress (the oldest beyond :data:`PENDING_PER_NODE` forgotten,
        counted)."""
        pending = state.pending
        pending[key] = None
        if len(pending) > PENDING_PER_NODE:
            pending.popitem(last=False)
            if not self.pending_forgotten:
                log.warning("aggregator: more than %d connects of a node held in progress at once: the outcome of "
                            "the oldest will be stored as another event", PENDING_PER_NODE)  # fmt: skip
            self.pending_forgotten += 1

    def _forget(self, state: _Node, events: list[W.Prepared]) -> None:
        """Nothing of ``events`` was stored: the agent's retry must not be taken for a duplicate."""
        with self._lock:
            for event in events:
                state.seen.pop(event[0], None)
                state.pending.pop(event[0], None)

    def _resolve(self, node: str, state: _Node, events: list[W.Prepared]) -> int:
        """Give the connects ``events`` resolve (held in progress) their outcome; how many were (the others: no
        longer stored, or not the same connect, are duplicates). Raises what the store raises, the events then
        held in progress again (the agent's retry resolves them)."""
        try:
            with self._resolving:
                at = self.resolved_position + 1
                done = state.store.replace_rows([(e[3], e) for e in events], _replaces, at)
                if any(done):
                    with self._lock:
                        self._resolved = at
        except BaseException as exc:
            with self._lock:
                for event in events:
                    if event[0] in state.seen:
                        state.seen[event[0]] = True
                    state.pending[event[0]] = None  # (held in progress again, wherever it was remembered)
            if isinstance(exc, Exception):
                self._failed(node, exc)
            raise
        return sum(done)

    @property
    def resolved_position(self) -> int:
        """The fleet's resolution position: the outcomes numbered up to it are written (:meth:`replaced_since`)."""
        with self._lock:
            return self._resolved

    def replaced_since(self, stores: dict[str, EventStore], kind: Any, pid: int | None, command: str | None,
                       since_ns: int | None, until_ns: int | None, upto: dict[str, int] | None,
                       since: int) -> tuple[list[tuple[int, int, bytes]], int]:  # fmt: skip
        """The connects of ``stores`` (node -> store) given their outcome after resolution position ``since``
        (``kind``, ``pid``, ``command``, ``since_ns < t <= until_ns`` as a list filters; each node's stored at or
        before its ``upto`` store position, when it has one there), as ``(t, ns, JSON)`` newest first; and the
        position to ask after next time."""
        position = self.resolved_position  # (first: every outcome numbered up to it is written)
        found: list[tuple[int, int, bytes]] = []
        for node, store in stores.items():
            got, read_to = store.replaced_since(kind, pid, command, since_ns, until_ns,
                                                None if upto is None else upto.get(node), since)  # fmt: skip
            found += got
            if read_to is not None:
                position = min(position, read_to)
        found.sort(key=lambda r: (-r[0], -r[1]))
        return found, position

    def _node(self, node: str) -> _Node:
        with self._lock:
            state = self._nodes.get(node)
            if state is not None:
                return state
            if len(self._nodes) >= self.max_nodes:
                raise OverflowError(f"more than {self.max_nodes} nodes: events of node {clean(node, 80)} refused")
            path = None
            if self.directory is not None:
                digest = hashlib.sha256(node.encode()).hexdigest()[:20]
                path = self.directory / f"node-{digest}.sqlite3"
            store = EventStore(path, retention_seconds=self.retention_seconds)
            try:
                store.set_meta(_META_NODE, node)
                self._aggregating_since(store)
            except BaseException:  # (a full disk: closed, its file free for the agent's retry)
                store.close()
                raise
            state = self._nodes[node] = _Node(store)
            return state

    def _aggregating_since(self, store: EventStore) -> None:
        """:attr:`started` from the earliest a node's store says; a store that says none (new, or made before it
        was kept) is told this start's."""
        since = store.get_meta(_META_SINCE)
        if since is not None and since.isdigit():
            self.started = min(self.started, ns_to_time(int(since)))
        else:
            try:
                store.set_meta(_META_SINCE, str(time_to_ns(self.started)))
            except Exception:  # noqa: BLE001 (a store that cannot be written now, a full disk: the next start says it)
                pass

    def put_agent_losses(self, node: str, rows: Sequence[tuple[int, str, int]]) -> None:
        """An agent's own losses (``(second, cause, n)``, each replacing what it said before for that second and
        cause): the events it saw and could not forward, which the fleet's counts lack."""
        store = self._node(node).store
        store.put_losses([(second, AGENT_LOSS + cause, n) for second, cause, n in rows])

    def agent_losses(self, since: datetime | None = None) -> dict[str, int]:
        """The events each node's agent said it could not forward since ``since`` (None: all kept), by node."""
        return {node: n for node, (_, n) in self.agent_loss_figures(since).items() if n}

    def agent_loss_figures(self, recent: datetime | None = None) -> dict[str, tuple[int, int]]:
        """Each node's agent's unforwarded events: all kept, and since ``recent`` (None: all), in one read a node;
        the nodes that said none left out."""
        since = -(2**62) if recent is None else second_of(recent)
        out: dict[str, tuple[int, int]] = {}
        for node, store in self.nodes().items():
            total, n = store.loss_sums(AGENT_LOSS, since)
            if total:
                out[node] = (total, n)
        return out

    # --- reading ------------------------------------------------------------------------------

    def nodes(self) -> dict[str, EventStore]:
        with self._lock:
            return {name: state.store for name, state in self._nodes.items()}

    def stats(self, active_seconds: float = 60.0) -> dict[str, Any]:
        """The contract's ``AggregationStatsResponse`` fields (plus ``total_events``)."""
        now = time.monotonic()
        with self._lock:
            by_node = {name: s.events for name, s in self._nodes.items()}
            by_type: dict[str, int] = {}
            for s in self._nodes.values():
                for kind, n in s.by_type.items():
                    by_type[kind] = by_type.get(kind, 0) + n
            last = max((s.last_event for s in self._nodes.values() if s.last_event is not None), default=None)
            connected = sum(1 for s in self._nodes.values() if s.last_seen and now - s.last_seen <= active_seconds)
        return {
            "aggregation_start": self.started,
            "connected_agents": connected,
            "events_by_node": by_node,
            "events_by_type": by_type,
            "last_event_time": last,
            "total_events": sum(by_node.values()),
        }

    def close(self) -> None:
        with self._lock:
            for state in self._nodes.values():
                state.store.close()
            self._nodes.clear()
