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

It is cheap next to collection: a batch goes out once it is full or once a second (not one post per
event that settled), and a batch holds up to :data:`BATCH` events, so at the rates an agent sees one post
a second carries them all (a post costs the agent a millisecond or more of CPU; an aggregator that refuses
a batch as too large, 413, is sent half as many, and so on); what the store's writer just wrote is taken
as it handed it over (:meth:`EventStore.on_rows`, the last :data:`RECENT_EVENTS` events), not read back (so an
outage shorter than that loses nothing to the store's own limits either); and events the store keeps
as JSON rows are re-encoded from that JSON
(:func:`encode_batch`, msgspec) without building a model per event; ring records and the rare
event the fast path does not cover go through :func:`~netspy_tui.serve.app.event_json`, with the
same result.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

import httpx
import msgspec
from pydantic import TypeAdapter

from netspy_tui.models import ConnectionEvent, Event, PacketDropEvent, contract_drop, time_to_ns, utcnow
from netspy_tui.names.workload import k8s_identity
from netspy_tui.serve.app import event_json
from netspy_tui.store import EventStore
from netspy_tui.textsafe import clean

__all__ = ["ForwardStatus", "Forwarder", "encode_batch", "encode_events", "node_identity"]

log = logging.getLogger(__name__)

CURSOR_KEY = "forward_cursor"
#: an event is forwarded once it is this old: a connect's outcome may still change before that
SETTLE_SECONDS = 2.0
#: events in one post at most: the aggregator's own limit per batch (``--ingest-max-events``, 5,000). An event
#: still waits at most a second (:attr:`Forwarder.interval`) once it settled: a full batch goes at once.
BATCH = 5000
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
    return msgspec.defstruct(f"Stored{model.__name__}", fields, kw_only=True, omit_defaults=True,
                             forbid_unknown_fields=True, tag_field="type", tag=tag)  # fmt: skip


_Connection = _stored(ConnectionEvent)
_Drop = _stored(PacketDropEvent, [("kernel_drop_reason", str | None, None),  # (what the contract's JSON adds)
                                  ("kernel_drop_reason_code", int | None, None)])  # fmt: skip
_DECODER = msgspec.json.Decoder(_Connection | _Drop)
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


def _slow(item: AnyEvent | bytes | str, identity: Mapping[str, str]) -> dict[str, Any]:
    event = _EVENT.validate_json(item) if isinstance(item, bytes | str) else item
    data = event_json(event, identity)
    data.update(identity)
    return data


def encode_batch(items: Sequence[AnyEvent | bytes | str], identity: Mapping[str, str]) -> bytes:
    """The ingest body ``{"events": [...]}`` of stored events: :func:`encode_events` in it."""
    return b'{"events":' + encode_events(items, identity) + b"}"


def encode_events(items: Sequence[AnyEvent | bytes | str], identity: Mapping[str, str]) -> bytes:
    """The JSON list of stored events (their stored JSON, or built events): each the contract's JSON
    object with this node's identity over its own (it is where the event was seen), as
    :func:`event_json` and ``update(identity)`` give it. Stored JSON of a plain event is re-encoded
    without a model (decoded into a :func:`_stored` struct, msgspec); anything else (an
    extension field, a time that is not ``…ss.ffffffZ``, no id, a protocol the contract has no
    name for, a short ``raw_ipv6``, a built event) takes the model."""
    fast = identity.keys() <= _IDENTITY_FIELDS
    pairs = list(identity.items())
    events: list[Any] = []
    for item in items:
        event = None
        if fast and isinstance(item, bytes | str):  # (a body SQLite gives back as text: the same JSON)
            try:
                event = _DECODER.decode(item)
            except msgspec.DecodeError:  # (also: a field of the wrong type, an integer beyond 64 bits)
                pass
            else:
                if type(event) is _Drop:
                    event = _contract_drop(event)
                if event is not None:
                    for key, value in pairs:
                        setattr(event, key, value)
        events.append(event if event is not None else _slow(item, identity))
    return _ENCODER.encode(events)


def node_identity() -> dict[str, str]:
    """This node's fields on every forwarded event: the downward API's node/pod/namespace in
    Kubernetes (as ebpf-server sets them), else the host name as ``k8s_node_name``."""
    identity = k8s_identity()
    identity.setdefault("k8s_node_name", socket.gethostname())
    return identity


@dataclass
class ForwardStatus:
    url: str
    forwarded: int = 0  # events the aggregator accepted
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
        interval: float = 1.0,
        timeout: float = 10.0,
        max_backoff: float = 30.0,
        identity: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.store = store
        self.url = url
        self.batch = batch
        self.interval = interval
        self.max_backoff = max_backoff
        self.identity = node_identity() if identity is None else identity
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(headers=headers, verify=verify, timeout=timeout, transport=transport,
                                         follow_redirects=False)  # fmt: skip
        self.status = ForwardStatus(url=url)
        stored = store.get_meta(CURSOR_KEY)
        self.cursor = int(stored) if stored and stored.isdigit() else 0
        self._stop = asyncio.Event()
        #: ``(seq, t, JSON)`` of the events the store wrote while :meth:`run` runs, as its writer gave them
        #: (:meth:`EventStore.on_rows`): what is forwarded next is taken from here, not read back from the
        #: store, while it is there (the store stays the spool: anything not here is read from it)
        self._recent: deque[tuple[int, int, Any]] = deque(maxlen=max(RECENT_EVENTS, batch))
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
                except (httpx.HTTPError, OSError, ValueError) as exc:
                    attempt += 1
                    self.status.failures += 1
                    error = f"{type(exc).__name__}: {clean(str(exc), 200)}"
                    if error != self.status.last_error:
                        log.warning("forwarding to %s failed (%s); retrying with backoff", self.url, error)
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
        """Exponential, capped, with full jitter in its upper half (agents do not retry in step)."""
        ceiling = min(self.max_backoff, self.interval * 2 ** min(attempt, 16))
        return ceiling * (0.5 + random.random() / 2)  # noqa: S311 (jitter, not security)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def forward_once(self) -> int:
        """One batch: read, post, and on acceptance move the cursor. Returns events forwarded."""
        settled = time_to_ns(utcnow()) - int(SETTLE_SECONDS * 1e9)
        rows, oldest, newest, body = await asyncio.to_thread(self._read, self.cursor, settled)
        if oldest is not None and oldest > self.cursor + 1 and (not rows or rows[0][0] > self.cursor + 1):
            first = rows[0][0] if rows else oldest
            self._dropped(first - self.cursor - 1)
            self.cursor = first - 1
        self.status.waiting = max(0, newest - self.cursor)
        if not rows:
            return 0
        response = await self._client.post(self.url, content=body, headers={"Content-Type": "application/json"})
        if response.status_code == 413 and len(rows) > 1:
            # too many events (or bytes) for this aggregator: half as many from now on, at once (nothing is lost:
            # the cursor has not moved)
            self.batch = len(rows) // 2
            self.status.last_error = f"HTTP 413: batches of {len(rows)} events refused; sending {self.batch}"
            log.warning("forwarding to %s: %s", self.url, self.status.last_error)
            return await self.forward_once()
        if response.status_code >= 300:
            raise httpx.HTTPStatusError(f"HTTP {response.status_code}: {clean(response.text, 200)}",
                                        request=response.request, response=response)  # fmt: skip
        self.cursor = rows[-1][0]
        await asyncio.to_thread(self.store.set_meta, CURSOR_KEY, str(self.cursor))
        self.status.forwarded += len(rows)
        self.status.batches += 1
        self.status.last_error = ""
        self.status.last_success = utcnow().isoformat(timespec="seconds")
        self.status.waiting = max(0, newest - self.cursor)  # (as of the read: the next one counts the rest)
        return len(rows)

    def _written(self, first: int, rows: list[tuple[Any, ...]]) -> None:
        """The store's writer wrote ``rows`` as ``first``, ``first + 1``, ...: kept for the next batches."""
        with self._recent_lock:
            self._recent.extend(zip(range(first, first + len(rows)), [r[1] for r in rows], [r[6] for r in rows],
                                    strict=True))  # fmt: skip

    def _recent_after(self, cursor: int, settled: int) -> list[tuple[int, Any]] | None:
        """The next batch after ``cursor`` from what the writer gave (up to a gap: ring records, or what the
        full :attr:`_recent` let go), or None when it does not start right after ``cursor``."""
        with self._recent_lock:
            recent = self._recent
            while recent and recent[0][0] <= cursor:
                recent.popleft()
            if not recent or recent[0][0] != cursor + 1:
                return None
            rows: list[tuple[int, Any]] = []
            for seq, t, body in recent:
                if seq != cursor + 1 + len(rows) or t > settled or len(rows) >= self.batch:
                    break
                rows.append((seq, body))
            return rows

    def _read(self, cursor: int, settled: int) -> tuple[list[tuple[int, Any]], int | None, int, bytes]:
        """In a worker thread: the next batch after ``cursor`` (settled by ``settled``), the oldest and
        newest ``seq`` stored (the oldest None when the batch was taken from :attr:`_recent`: it starts
        right after ``cursor``, nothing was removed before it), and the batch's body."""
        recent = self._recent_after(cursor, settled)
        rows, oldest = (recent, None) if recent is not None else self.store.after_stored(cursor, self.batch, settled)
        newest = self.store.newest_seq()
        return rows, oldest, newest, encode_batch([item for _, item in rows], self.identity) if rows else b""

    def _dropped(self, n: int) -> None:
        if n <= 0:
            return
        self.status.dropped += n
        log.warning("forwarding: %d events were removed by retention before they could be forwarded", n)
        self.store.note_losses(int(time.time()), {"forward_dropped": n})
