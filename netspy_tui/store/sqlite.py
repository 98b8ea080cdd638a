"""The event store: exact counts per second (rollups) and raw events as a bounded detail stream.

Rows of these kinds, written in one transaction per batch by one writer:

- ``rollup``: per wall-clock second and key (kind, pid, command, destination, port, protocol,
  outcome or drop reason) how many events there were, with the first and last time. Counts come
  from the kernel (eBPF) or are derived from the events stored (procfs, replay): either way every
  figure the tools report — totals, top destinations, outcome mix, processes, rates — is computed
  from these (:mod:`netspy_tui.store.rollups`), never from whether a raw event was kept.
- raw events, for ``list_connections``/``list_packet_drops`` and the tables: eBPF ring records
  as ``chunks`` (one row per batch, the records as the ring gave them: :mod:`netspy_tui.store.chunks`;
  models are built only when a tool asks), other events as ``events`` rows with their JSON, or, for a
  writer that gives their rows itself (the aggregator's ingest, :meth:`EventStore.add_rows`), as
  ``json_blocks`` (a row per write and kind, per 1,024 events: :mod:`netspy_tui.store.jsonblocks`). Under
  load the writer sheds raw events (never counts); what was shed is in ``losses``.
- ``rollup_minute``/``rollup_hour``: the same counts per minute and hour (:mod:`netspy_tui.store.spans`),
  so a day or a week reads few rows.
- ``losses``: per second and cause, what was shed or lost (ring full, queue full, unreadable...).

Threads: one writer (the collector's thread through :meth:`EventStore.add_events`, or the
:class:`~netspy_tui.store.writer.Writer` thread through :meth:`EventStore.ingest`); readers on any
thread. A file store uses WAL and a small pool of read connections; an in-memory store one
connection behind a lock. The last hour of rollups is also kept in memory for fast windows; a
clean close writes that memory next to the file (``<file>-memory``), so the next open answers at
once instead of reading the hour back one row per key (a crash leaves no valid copy: that open
reads the file in the background, as a file of an older netspy-tui is read).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import itertools
import json
import logging
import os
import queue
import sqlite3
import stat
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import numpy as np
from pydantic import TypeAdapter
from pydantic_core import PydanticSerializationError

from netspy_tui import safefs
from netspy_tui.analysis.aggregate import AnyEvent, bucket_layout, outcome_key, second_of, window_seconds
from netspy_tui.collector.base import Batch
from netspy_tui.collector.ebpf import programs as P
from netspy_tui.errors import NetspyError, UsageError
from netspy_tui.memory import fix_mmap_threshold, trim_heap
from netspy_tui.models import (
    Event,
    EventKind,
    EventPage,
    EventQuery,
    LatencyStats,
    Scope,
    TrafficStats,
    WindowStats,
    describe_losses,
    ns_to_time,
    page_token,
    time_to_ns,
    utcnow,
)
from netspy_tui.store import chunks as C
from netspy_tui.store import jsonblocks as J
from netspy_tui.store import latency as L
from netspy_tui.store import rollups as R
from netspy_tui.store import spans as S
from netspy_tui.store import traffic as T
from netspy_tui.store.listeners import Listeners
from netspy_tui.textsafe import clean, valid_utf8

logger = logging.getLogger(__name__)

_EVENT_JSON: TypeAdapter[Any] = TypeAdapter(Event)
#: stored JSON rows built as one list: one call into pydantic for a page, not one per event (several
#: times faster for a page of hundreds)
_EVENTS_JSON: TypeAdapter[list[Any]] = TypeAdapter(list[Event])
_KIND_CODE = R.KIND_CODE
_KIND_NAME: dict[int, EventKind] = {0: "connection", 1: "packet_drop"}
#: Distinct (kind, command, outcome) kept by :meth:`EventStore.counted_since_open`; beyond it,
#: commands count as :data:`OTHER_COMMAND`.
MAX_COUNTED_KEYS = 20_000
OTHER_COMMAND = "(other)"
NS = 1_000_000_000
#: outcome names of a connect still in progress, and of one whose outcome no one will report
IN_PROGRESS, UNRESOLVED = "in_progress", "unknown"
#: loss cause: connects a previous run of the collector left in progress (:meth:`EventStore.settle_in_progress`)
RESTART_UNRESOLVED = "restart_unresolved"
#: meta key: "1" while the store is fed by a collector that follows connects to their outcome (eBPF), "0" by one
#: that does not (a sampler's in_progress is final); absent (a store older than the key): taken as "1"
FOLLOWED = "connects_followed"
#: meta: the second the last run's collector started (what it left in progress started then or after; before it,
#: an earlier run's rows, settled or final already: a sampler's in_progress is what it saw)
FOLLOWED_SINCE = "connects_followed_since"

#: Prune (retention) after this many inserted rows or this many seconds, whichever comes first.
PRUNE_EVERY_ROWS = 50_000
PRUNE_EVERY_SECONDS = 10.0
#: Rows deleted per retention transaction.
PRUNE_CHUNK = 20_000
#: Counting raw rows stops after this many, then counts the (fewer) rows outside the range.
COUNT_PROBE = 50_000
#: Read connections kept open for a file store.
READ_POOL_SIZE = 4
#: Seconds of rollups kept in memory (longer windows read them from SQLite).
MEMORY_HORIZON = 3660
#: Seconds of rollups read from the file at a time when it is opened (newest first).
LOAD_SLICE = 60
#: Seconds past the clock an opened store's memory starts from (rows further on, which a wrong clock wrote, are
#: left to the file: loading from the newest row down walked from 2099 to now a slice at a time, for days).
#: The aggregator refuses events further ahead than this (``fleet/store.py``).
LOAD_AHEAD = 300
#: Seconds a window waits for the rollups being loaded before it reads them from SQLite instead.
LOAD_WAIT = 30.0
#: Whole hours and minutes of sums kept for long windows (:class:`spans.Units`): how many at most
#: of each, and their size in ids at most.
UNITS_KEPT = 2 * 7 * 24
UNITS_BUDGET = 500_000
#: Units of more rows are not summed ahead of a window (:meth:`EventStore._warm_units`).
WARM_ROWS = UNITS_BUDGET // 8
#: A window this many hours long answers at once after the file is opened: the hours before the
#: memory are summed (one more too), and the minutes of the hour where such a window starts.
HOURS_LOADED = 24
#: A clean close keeps the rollups in memory in ``<file>-memory`` (:meth:`EventStore.close`), valid
#: while this ``meta`` key holds the token written into it. Until the next open, any change to the
#: rollups (by a netspy-tui that does not know it, or anyone else) removes the token: triggers.
MEMORY_SUFFIX = "-memory"
MEMORY_TOKEN = "memory_token"
_STALE_TRIGGERS = [
    (f"DROP TRIGGER IF EXISTS memory_stale_{op.lower()}",
     f"CREATE TRIGGER memory_stale_{op.lower()} AFTER {op} ON rollup "
     f"BEGIN DELETE FROM meta WHERE key = '{MEMORY_TOKEN}'; END")
    for op in ("INSERT", "UPDATE", "DELETE")
]  # fmt: skip
#: At most one warning about losses per this many seconds.
WARN_EVERY = 30.0
#: Rows (counts, traffic, latency) a failed write keeps in memory, to write with the next write (the disk may
#: have room again); beyond it, the oldest seconds' counts are given up (a loss: ``store_error``).
MAX_UNWRITTEN_ROWS = 200_000
#: Beside the file while it is open for writing: a few KiB set aside at open, where a close that could not write
#: what it lost (a full disk) leaves it for the next open to record (:meth:`EventStore._leave_losses`).
LOST_SUFFIX = "-lost"
LOST_SIZE = 4096

SCHEMA_VERSION = "4"
#: the versions this netspy-tui reads: 3's files (written before an aggregator's event JSON was kept compressed,
#: which 4 reads as they are) become 4 when opened for writing, so that an older netspy-tui refuses them with its
#: one-line error instead of reading compressed blocks as JSON
READS_SCHEMAS = ("3", SCHEMA_VERSION)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq      INTEGER PRIMARY KEY,   -- insertion order (shared with the records in chunks)
    kind     INTEGER NOT NULL,      -- 0 connection, 1 packet_drop
    t        INTEGER NOT NULL,      -- wall-clock time, ns since the Unix epoch (UTC)
    ts       INTEGER NOT NULL,      -- the event's own timestamp (ns since boot), orders ties
    pid      INTEGER NOT NULL,
    command  TEXT    NOT NULL,
    outcome  TEXT    NOT NULL,      -- connections: outcome; drops: drop reason
    body     BLOB    NOT NULL       -- the event's JSON
);
CREATE INDEX IF NOT EXISTS events_time ON events (kind, t, ts);
CREATE INDEX IF NOT EXISTS events_pid ON events (kind, pid, t);
CREATE INDEX IF NOT EXISTS events_command ON events (kind, command, t);
CREATE TABLE IF NOT EXISTS kind_counts (kind INTEGER PRIMARY KEY, n INTEGER NOT NULL);
INSERT OR IGNORE INTO kind_counts (kind, n) VALUES (0, 0), (1, 0);
CREATE TABLE IF NOT EXISTS rollup (
    second      INTEGER NOT NULL,   -- wall-clock second since the epoch
    kind        INTEGER NOT NULL,
    pid         INTEGER NOT NULL,
    command     TEXT    NOT NULL,
    destination TEXT    NOT NULL,   -- '' when unknown
    port        INTEGER NOT NULL,   -- destination port (0 for drops)
    protocol    TEXT    NOT NULL,   -- '' when unknown
    outcome     TEXT    NOT NULL,   -- connections: outcome; drops: drop reason
    failed      INTEGER NOT NULL,
    n           INTEGER NOT NULL,
    first       INTEGER NOT NULL,   -- ns, first and last event counted
    last        INTEGER NOT NULL,
    PRIMARY KEY (second, kind, pid, command, destination, port, protocol, outcome)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS losses (
    second INTEGER NOT NULL,
    cause  TEXT    NOT NULL,        -- shed, ring_full, sockaddr_fault, store_error, ...
    n      INTEGER NOT NULL,
    PRIMARY KEY (second, cause)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_INSERT_EVENT = "INSERT INTO events (seq, kind, t, ts, pid, command, outcome, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_UPSERT_ROLLUP = (
    "INSERT INTO rollup (second, kind, pid, command, destination, port, protocol, outcome, failed, n, first, last) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT DO UPDATE SET n = n + excluded.n, "
    "first = CASE WHEN excluded.n > 0 AND excluded.first < first THEN excluded.first ELSE first END, "
    "last = CASE WHEN excluded.n > 0 AND excluded.last > last THEN excluded.last ELSE last END"
)
#: rollup rows upserted by one statement (:func:`_upsert_rollups`): 768 parameters, under the 999 SQLite before 3.32
#: allowed a statement
ROLLUP_ROWS_AT_ONCE = 64
_ROLLUP_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_UPSERT_LOSS = "INSERT INTO losses (second, cause, n) VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET n = n + excluded.n"
#: Errors that reject one row (a value SQLite cannot hold), not the whole batch.
_ROW_ERRORS = (OverflowError, ValueError, TypeError, sqlite3.InterfaceError, sqlite3.IntegrityError)


class StoreError(NetspyError):
    """The event store cannot be opened or written. ``lost`` counts events a failed write dropped; ``kept``: their
    counts were kept in memory, to be written with the next write (only their raw detail is lost)."""

    def __init__(self, message: str, hint: str = "", *, lost: int = 0) -> None:
        super().__init__(message, hint)
        self.lost = lost
        self.kept = False


class StoreBusy(StoreError):
    """The store file is open for writing by another process (a usage problem: exit 2, as a bad value)."""

    exit_code = 2


class StorePathRefused(StoreError, UsageError):
    """The store cannot be made or written where it was named (no permission, a read-only file system): a bad
    value, refused at start with exit 2 like any other."""


#: what an open says when the file or its directory may not be written by this process
_REFUSED = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


#: SQLite's primary result codes, and what to do about each when a write fails
_SQLITE_HINTS = {
    13: "free disk space or choose another store file",  # SQLITE_FULL
    11: "the file is damaged: move it away and start with a fresh store file",  # SQLITE_CORRUPT
    26: "the file is damaged: move it away and start with a fresh store file",  # SQLITE_NOTADB
    8: "make the file and its directory writable, or choose another store file",  # SQLITE_READONLY
    10: "check the disk and the kernel log (I/O error), or choose another store file",  # SQLITE_IOERR
}


def _sqlite_code(exc: BaseException) -> int:
    """SQLite's primary result code of ``exc`` (-1: none)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return 13
    return code & 0xFF if isinstance(code, int) else -1


def write_hint(exc: BaseException, path: Path | None = None) -> str:
    """What to do about a failed write, from SQLite's own result code (a full disk, a damaged file, ...); an I/O
    error where ``path``'s file system has no room left is a full disk (SQLite says "disk I/O error" when it cannot
    make its shared-memory file there)."""
    code = _sqlite_code(exc)
    if code == 10 and path is not None and _no_room(path):
        code = 13
    return _SQLITE_HINTS.get(code, "check the file and the disk, or choose another store file")


def _no_room(path: Path) -> bool:
    """``path``'s file system has (next to) no free space left."""
    try:
        st = os.statvfs(path.absolute().parent)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 1 << 20


def _error_text(exc: BaseException, path: Path | None) -> str:
    """SQLite's message, with what an I/O error is when the file system is full."""
    text = _one_line(exc)
    if _sqlite_code(exc) == 10 and path is not None and _no_room(path):
        text += " (no free space left on its file system)"
    return text


class _Unwritten:
    """What failed writes could not store but keeps for the next one: counts (summed per key), losses, traffic,
    latency rows and resolved outcomes. Raw events are not kept (they are the bounded detail)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[Any, ...], list[int]] = {}  # key -> [n, first, last]
        self.losses: dict[tuple[int, str], int] = {}
        self.traffic: list[T.Row] = []
        self.latencies: list[L.Row] = []
        self.outcomes: list[np.ndarray] = []
        self.since: float | None = None  # monotonic time of the first write that failed

    def __bool__(self) -> bool:
        return bool(self.counts or self.losses or self.traffic or self.latencies or self.outcomes)

    def add(self, counts: Sequence[R.Row], losses: dict[tuple[int, str], int], traffic: Sequence[T.Row],
            latencies: Sequence[L.Row], outcomes: np.ndarray | None) -> None:  # fmt: skip
        if self.since is None:
            self.since = time.monotonic()
        for row in counts:
            key, (n, first, last) = row[:9], row[9:]
            got = self.counts.get(key)
            if got is None:
                self.counts[key] = [n, first, last]
            else:  # (as the upsert sums them)
                got[0] += n
                if n > 0:
                    got[1], got[2] = min(got[1], first), max(got[2], last)
        for at, n in losses.items():
            self.losses[at] = self.losses.get(at, 0) + n
        self.traffic.extend(traffic)
        self.latencies.extend(latencies)
        if outcomes is not None and len(outcomes):
            self.outcomes.append(outcomes)

    def count_rows(self) -> list[R.Row]:
        return [(*key, n, first, last) for key, (n, first, last) in self.counts.items()]  # type: ignore[misc]

    def rows(self) -> int:
        return len(self.counts) + len(self.traffic) + len(self.latencies)

    def events_by_kind(self) -> tuple[int, int]:
        """The connects and drops whose counts are held (net of moves between outcomes)."""
        by_kind = [0, 0]
        for key, (n, _, _) in list(self.counts.items()):
            by_kind[key[1]] += n
        return max(0, by_kind[0]), max(0, by_kind[1])

    def give_up_before(self, second: int) -> tuple[int, int]:
        """Forget what is held of the seconds before ``second``; the connects and drops whose counts went."""
        gone = _Unwritten()
        gone.counts = {k: v for k, v in self.counts.items() if k[0] < second}
        self.counts = {k: v for k, v in self.counts.items() if k[0] >= second}
        self.traffic = [r for r in self.traffic if r[0] >= second]
        self.latencies = [r for r in self.latencies if r[0] >= second]
        return gone.events_by_kind()


def _clean_event(event: AnyEvent) -> tuple[AnyEvent, bytes]:
    """The event (made storable) and its JSON."""
    try:
        return event, event.__pydantic_serializer__.to_json(event)
    except PydanticSerializationError:
        # Untrusted text that is not valid Unicode: store it with the bad code points escaped.
        event = type(event).model_construct(**valid_utf8(event.model_dump(), "backslashreplace"))
        return event, event.__pydantic_serializer__.to_json(event)


_INT64 = range(-(2**63), 2**63)


def event_row(event: AnyEvent) -> tuple[tuple[Any, ...], AnyEvent]:
    """``(kind, t, ts, pid, command, outcome, body)`` of a built event, and the event
    (made storable). Raises OverflowError for integers SQLite cannot hold."""
    for name in ("pid", "timestamp", "destination_port"):
        value = getattr(event, name, 0)
        if value not in _INT64:
            raise OverflowError(f"{name} {value} does not fit in 64 bits")
    event, text = _clean_event(event)
    kind = 0 if event.type == "connection" else 1
    return (kind, time_to_ns(event.time), event.timestamp, event.pid, event.command, outcome_key(event), text), event


def _where(
    kind: EventKind, pid: int | None, command: str | None, column: str, after: int | None, upto: int | None
) -> tuple[str, list[Any]]:
    """WHERE clause over rows (raw events or rollups) of ``kind``, of ``pid`` and ``command`` when
    given, with ``after < column <= upto`` (None: unbounded); and its parameters."""
    clauses = ["kind = ?"]
    params: list[Any] = [_KIND_CODE[kind]]
    for clause, value in (("pid = ?", pid), ("command = ?", command), (f"{column} > ?", after),
                          (f"{column} <= ?", upto)):  # fmt: skip
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return " AND ".join(clauses), params


def _events_where(
    kind: EventKind,
    pid: int | None,
    command: str | None,
    since_ns: int | None,
    until_ns: int | None,
    after: int | None = None,
    tie: tuple[int, int, int] | None = None,
) -> tuple[str, list[Any], str]:
    """WHERE clause over raw rows (stored after seq ``after`` when given; with ``tie`` ``(until, ts, seq)``, of
    those at ``until`` the ones a list orders after that one), its parameters and the index that serves it best."""
    index = "events_pid" if pid is not None else "events_command" if command is not None else "events_time"
    where, params = _where(kind, pid, command, "t", since_ns, until_ns)
    if after is not None:
        where, params = f"{where} AND seq > ?", [*params, after]
    if tie is not None:
        t, ts, seq = tie
        where, params = f"{where} AND (t < ? OR ts < ? OR (ts = ? AND seq > ?))", [*params, t, ts, ts, seq]
    return where, params, index


def _joined(parts: list[np.ndarray]) -> np.ndarray | None:
    """Record arrays as one (None: none)."""
    parts = [p for p in parts if len(p)]
    return C.join(parts) if parts else None


def _bytes(body: bytes | str) -> bytes:
    return body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body


def _json_events(bodies: Sequence[bytes | str]) -> list[AnyEvent]:
    """Stored JSON rows built, as one list: one call into pydantic, not one per event."""
    if len(bodies) < 2:
        return [_EVENT_JSON.validate_json(body) for body in bodies]
    # (each body is one JSON object SQLite gives back as it was stored: bytes, or text for an older row)
    return _EVENTS_JSON.validate_json(b"[" + b",".join(_bytes(b) for b in bodies) + b"]")


def build_stored(items: Sequence[AnyEvent | bytes | str]) -> list[AnyEvent]:
    """Events as :meth:`EventStore.query_stored` gives them (built, or their stored JSON), built, in order."""
    built = iter(_json_events([item for item in items if isinstance(item, bytes | str)]))
    return [next(built) if isinstance(item, bytes | str) else item for item in items]


@functools.cache
def _upsert_many(n: int) -> str:
    """:data:`_UPSERT_ROLLUP` of ``n`` rows."""
    head, _, tail = _UPSERT_ROLLUP.partition(f"VALUES {_ROLLUP_VALUES} ")
    return f"{head}VALUES {', '.join([_ROLLUP_VALUES] * n)} {tail}"


def _upsert_rollups(conn: sqlite3.Connection, rows: Sequence[R.Row]) -> None:
    """Upsert rollup rows up to :data:`ROLLUP_ROWS_AT_ONCE` a statement (the rows of one key add up in order, as
    they do a statement each), in statements of three sizes. ``executemany`` ran a statement a row, and Python's
    sqlite3 gives up the interpreter's lock and takes it back around each: beside another busy thread each take
    waited for a switch."""
    at = 0
    flat = itertools.chain.from_iterable  # (a statement's parameters: ~0.19 µs a row, against ~0.33 by a comprehension)
    for step in (ROLLUP_ROWS_AT_ONCE, 16, 1):
        sql = _upsert_many(step)
        while len(rows) - at >= step:
            conn.execute(sql, list(flat(rows[at : at + step])))
            at += step


def _damaged(exc: BaseException) -> bool:
    """SQLite found the file damaged (or not a database at all)."""
    return _sqlite_code(exc) in (11, 26)


def _len(records: np.ndarray | None) -> int:
    return 0 if records is None else len(records)


_ID_MIX = 0x9E3779B97F4A7C15
#: what :meth:`EventStore.after_stored` makes of ring records instead of models: called as ``(codec, records, ids,
#: outcomes)`` (this thread's :class:`Codec`, then :meth:`Codec.events`' arguments), one item per record
RecordsMaker = Callable[[Any, np.ndarray, list[str], list[str | None]], list[Any]]


class EventStore:
    """Rollups and raw events in SQLite, with retention by age (both) and row count (raw).

    ``path`` None keeps the store in memory. ``retention_seconds`` / ``max_rows`` None disable
    that limit. Limits are applied every :data:`PRUNE_EVERY_ROWS` rows or
    :data:`PRUNE_EVERY_SECONDS` seconds of ingest, and by :meth:`prune`. ``keep_memory`` False: a
    file nobody reopens (a scratch store) does not keep its memory at close (:meth:`_keep_memory`).
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        retention_seconds: float | None = 24 * 3600,
        max_rows: int | None = 2_000_000,
        readonly: bool = False,
        max_queued: int = 200_000,
        keep_memory: bool = True,
    ) -> None:
        self.path = Path(path).expanduser() if path is not None else None
        if readonly and self.path is None:
            raise ValueError("a read-only store needs a file")
        self.readonly = readonly
        self.keep_memory = keep_memory
        if not readonly:
            fix_mmap_threshold()  # a writer lives long and frees big batches: keep them off the heap
        self.retention_seconds = retention_seconds
        self.max_rows = max_rows
        self.max_queued = max_queued
        self._write_lock = threading.Lock()
        self._closed = False
        self._changed = Listeners("event store change")
        self._on_rows = Listeners("event store rows")
        self._on_records = Listeners("event store records")
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._since_prune = 0
        self._last_prune = time.monotonic()
        self._read_codec = threading.local()
        self._read_names: tuple[Any, Any] | None = None  # (drop reasons, the NameCache every reader's codec shares)
        self._read_names_lock = threading.Lock()
        self.rollups = R.Rollups(R.Names(), MEMORY_HORIZON)
        #: (hours, minutes) summed: (seconds per unit, the coarse table, what is kept)
        self._units: tuple[tuple[int, str, S.Units[R.Span]], ...] = tuple(
            (size, table, S.Units(UNITS_KEPT, len, UNITS_BUDGET)) for table, _, size in S.SPANS
        )
        self.totals: dict[str, int] = {}
        self._counted: dict[tuple[str, str, str], int] = {}  # (kind, command, outcome) -> events
        self._counted_lock = threading.Lock()
        self._unwarned: dict[str, int] = {}
        self._warned_at = -WARN_EVERY
        """Since this store was opened: ``raw`` rows written, and losses by cause."""
        self._writer_thread: Any = None
        self._memory_differs = False  # the memory holds counts a failed write did not store
        self._unwritten = _Unwritten()  # what failed writes could not store, written with the next one
        self._drop_reasons_unsaved = False  # the kernel's drop reason names are not in ``meta`` yet (a full disk)
        self.last_write_error: StoreError | None = None  # the last write's error (None: it was stored)
        self.written_at = -float("inf")  # (monotonic) when a write last succeeded
        self._loaded = threading.Event()  # set when the last hour of rollups is in memory
        self._loaded.set()
        self._load_progress = threading.Condition()
        self._writer = self._connect(writer=True)
        self._lock_fd: int | None = None
        try:
            if not readonly and self.path is not None:
                self._lock_fd = self._lock_writer()
            try:
                self._open_rest(readonly)
            except sqlite3.Error as exc:  # (the first writes: a full disk, a damaged file say so as a write would)
                what = "read" if readonly or _damaged(exc) else "write to"
                raise StorePathRefused(f"cannot {what} the event store {self.location}: {_error_text(exc, self.path)}",
                                       write_hint(exc, self.path)) from exc  # fmt: skip
        except BaseException:  # (nothing kept open: a later open of the file in this process must not be refused)
            self._writer.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            raise

    def _open_rest(self, readonly: bool) -> None:
        """What opening reads and writes once the writer connection (and the file's lock) is held."""
        self._folded = 0
        """Per-second rollup rows before this second are in the minute and hour tables too (spans.fold)."""
        if not readonly:
            self._check_intact()
            with self._write_lock:
                self._folded = S.folded_from(self._writer)
                self._writer.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                     (S.FOLDED, str(self._folded)))  # fmt: skip
        self._next_seq = 0 if readonly else self._max_seq() + 1
        self._numbered = self._resolutions_numbered()
        """The file numbers its resolutions (``resolved.at``): an older netspy-tui's file opened read-only may not."""
        self._resolutions = self._resolution_cursor() if self._numbered and not readonly else 0
        """The number of the last write of resolutions (``resolved.at``)."""
        self._salt = self._id_salt()
        self._drop_reasons: dict[int, str] = self._stored_drop_reasons()
        if not readonly:
            self._take_left_losses()
            self._load_rollups()

    def _check_intact(self) -> None:
        """Refuse a file with damaged pages before writing to it (every write would fail, every event be lost):
        ``PRAGMA quick_check`` reads every page once (0.2-0.3 s for a 126 MB store of 780,000 events)."""
        if self.path is None:
            return
        with self._write_lock:
            problems = [str(r[0]) for r in self._writer.execute("PRAGMA quick_check(3)").fetchall()]
        if problems and problems != ["ok"]:
            raise StorePathRefused(
                f"cannot read the event store {self.location}: database disk image is malformed "
                f"({clean('; '.join(' '.join(p.split()) for p in problems), 200)})",
                _SQLITE_HINTS[11],
            )

    def _lost_path(self) -> Path:
        return Path(f"{self.path}{LOST_SUFFIX}")

    def _take_left_losses(self) -> None:
        """Record what the last run could not (:meth:`_leave_losses`) in the losses table, then set
        :data:`LOST_SIZE` bytes aside beside the file for this run's close (a full disk has no room for a new file).
        Not for a scratch store (``keep_memory`` False): no run opens it again."""
        if self.path is None or not self.keep_memory:
            return
        path = self._lost_path()
        left = None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = None
        except OSError as exc:
            logger.warning("event store %s: %s not read (%s)", self.location, path, _one_line(exc))
            fd = None
        if fd is not None:
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(f.fileno())
                if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and st.st_nlink == 1:
                    left = f.read(LOST_SIZE).strip(b"\0").strip()
        if left:
            try:
                got = json.loads(left)
                second, losses = int(got["second"]), {str(k): int(v) for k, v in got["losses"].items() if int(v) > 0}
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                logger.warning("event store %s: %s not usable (%s)", self.location, path, _one_line(exc))
                losses = {}
            if losses:
                with self._write_lock, self._transaction():
                    self._writer.executemany(_UPSERT_LOSS, [(second, c, n) for c, n in losses.items()])
                logger.warning("event store %s: the last run could not record %s; recorded now", self.location,
                               describe_losses(losses))  # fmt: skip
        try:
            path.unlink(missing_ok=True)
            fd = safefs.create_exclusive(path, "the store's loss record", "remove it")
            with os.fdopen(fd, "wb") as f:
                f.write(bytes(LOST_SIZE))
        except (OSError, NetspyError) as exc:
            logger.warning("event store %s: no room set aside for a loss record (%s)", self.location, _one_line(exc))

    def _leave_losses(self, losses: dict[str, int]) -> None:
        """At a close whose losses the store cannot take (a full disk): into the room set aside beside it (written in
        place: no new space needed), for the next open to record."""
        text = json.dumps({"second": second_of(utcnow()), "losses": losses}).encode()
        path = self._lost_path()
        if not self.keep_memory:  # (a scratch store, removed at exit)
            return
        try:
            if len(text) > LOST_SIZE:
                raise ValueError(f"{len(text)} bytes, more than the {LOST_SIZE} set aside")
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.pwrite(fd, text + bytes(LOST_SIZE - len(text)), 0)
                os.fsync(fd)
            finally:
                os.close(fd)
        except (OSError, ValueError) as exc:
            logger.error("event store %s: what was lost is not recorded for the next start either (%s)",
                         self.location, _one_line(exc))  # fmt: skip
        else:
            logger.error("event store %s: recorded in %s; the next start adds it to the store's losses",
                         self.location, path)  # fmt: skip

    def _close_unwritten(self) -> None:
        """At close (the write lock held): write what failed writes kept; if the store still refuses, it is lost
        (``store_error``, said on stderr) and left for the next open to record (:meth:`_leave_losses`)."""
        if self.path is None or self.readonly:
            return
        if self._unwritten:
            try:
                self._commit_locked([], None, None, [], {}, [], unwritten=self._unwritten)
                self._wrote_unwritten()
            except StoreError as exc:
                connects, drops = self._unwritten.events_by_kind()
                held = self._unwritten
                held.counts, held.traffic, held.latencies, held.outcomes = {}, [], [], []
                self._lose_counts(connects, drops, f"at close: {_one_line(exc.__cause__ or exc)}")
                losses: dict[str, int] = {}
                for (_, cause), n in held.losses.items():
                    losses[cause] = losses.get(cause, 0) + n
                logger.error("event store %s: not written to its losses table: %s", self.location,
                             describe_losses(losses))  # fmt: skip
                self._leave_losses(losses)
                return
        with contextlib.suppress(OSError):
            self._lost_path().unlink(missing_ok=True)  # (nothing to leave: a clean close leaves no side file)

    # --- connections ---------------------------------------------------------------

    @property
    def names(self) -> R.Names:
        """The ids of the rollups in memory now (replaced when :meth:`prune` compacts them)."""
        return self.rollups.names

    @property
    def location(self) -> str:
        return str(self.path) if self.path is not None else ":memory:"

    def _lock_writer(self) -> int:
        """An exclusive lock on the store file for as long as it is open to be written: a second collector on
        the same file would store every event twice (and settle the first one's connects in progress).
        ``flock``, not SQLite's POSIX locks, which it takes and drops on the same file for its transactions;
        readers (a one-shot ``--tool --db``) take none and read on."""
        assert self.path is not None
        fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreBusy(
                f"the event store {self.location} is being written by another netspy-tui process",
                "read it from there (netspy-tui --server URL of that serve), read its history with a one-shot "
                "--tool --db, or give this command its own --db file",
            ) from None
        except OSError:
            os.close(fd)
            raise
        return fd

    def _open_error(self, exc: BaseException) -> StoreError:
        message = f"cannot open the event store {self.location}: {_error_text(exc, self.path)}"
        if self.readonly:
            return StoreError(message, "check that it is a store netspy-tui wrote and that you can read it")
        refused = isinstance(exc, OSError) and exc.errno in _REFUSED
        if not refused and isinstance(exc, sqlite3.Error) and self.path is not None:
            # (SQLite says only "unable to open database file"; the directory's mode says why)
            folder = self.path.absolute().parent
            refused = not os.access(folder, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids)
        if not refused and _sqlite_code(exc) in _SQLITE_HINTS:
            # (a damaged file, a full disk, ...: what SQLite said, refused at start as a bad value)
            return StorePathRefused(message, write_hint(exc, self.path))
        return (StorePathRefused if refused else StoreError)(
            message,
            "choose a file in a directory you can write, or leave out --db: events then go to a scratch file "
            "removed on exit",
        )

    def _connect(self, *, writer: bool) -> sqlite3.Connection:
        try:
            if self.path is None:
                conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            elif self.readonly:
                if writer:
                    safefs.check_db_path(self.path, creating=False)  # not a link, a device, or in a shared dir
                uri = f"file:{urllib.parse.quote(str(self.path.absolute()))}?mode=ro"
                conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None, timeout=30)
            else:
                # created exclusively 0600 (its -wal/-shm get the same mode), checked again once open
                identity = safefs.prepare_db_file(self.path) if writer else None
                conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
                if identity is not None:
                    try:
                        safefs.verify_same_file(self.path, identity)
                    except BaseException:
                        conn.close()
                        raise
            try:
                conn.execute("PRAGMA temp_store = MEMORY")
                # page cache: 4 MiB for the writer (rows arrive in time order: its inserts touch the
                # right edge of each index), 2 MiB per reader (lists read the newest chunks; windows
                # read rollups from memory): up to six connections, each cache is RSS
                conn.execute(f"PRAGMA cache_size = {-4096 if writer else -2048}")
                # no memory-mapped I/O: every page of the file it touched stayed in the process's
                # RSS (it grew to the size of the file: +250 MB in two minutes of a 5,000/s soak)
                conn.execute("PRAGMA mmap_size = 0")
                if self.readonly:
                    if writer:
                        self._check_schema(conn)
                elif writer:
                    self._init_schema(conn)
                else:
                    conn.execute("PRAGMA query_only = 1")
            except BaseException:
                conn.close()
                raise
        except (sqlite3.Error, OSError) as exc:
            raise self._open_error(exc) from exc
        return conn

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        if self.path is not None:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning("event store %s: journal mode %s, not WAL", self.location, mode)
            conn.execute("PRAGMA synchronous = NORMAL")
            # Checkpoint every 32 MiB of WAL (index pages touched by many batches are copied once), and
            # keep the WAL file itself from staying larger than that.
            conn.execute("PRAGMA wal_autocheckpoint = 8192")
            conn.execute("PRAGMA journal_size_limit = 33554432")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "meta" not in tables:
            self._check_schema(conn)  # someone else's database: refuse to touch it
        if "meta" in tables:
            self._check_schema(conn)  # an older netspy-tui store: refuse before changing anything
        conn.executescript(_SCHEMA + S.SCHEMA + C.SCHEMA + J.SCHEMA + T.SCHEMA + L.SCHEMA)
        L.upgrade(conn)
        C.upgrade(conn)
        if conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() is None:
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema' AND value = ?", (SCHEMA_VERSION, READS_SCHEMAS[0]))
        if conn.execute("SELECT value FROM meta WHERE key = 'id_salt'").fetchone() is None:
            conn.execute("INSERT INTO meta (key, value) VALUES ('id_salt', ?)", (str(int.from_bytes(os.urandom(8))),))
        self._check_schema(conn)

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.OperationalError:  # no meta table: not an event store
            row = None
        if row is None:
            raise StoreError(
                f"{self.location} is not a netspy-tui event store",
                "pass the file netspy-tui wrote with --db, or a new file name",
            )
        if row[0] not in READS_SCHEMAS:
            raise StoreError(
                f"the event store {self.location} has schema version {row[0]}, this netspy-tui reads "
                f"{' and '.join(READS_SCHEMAS)}",
                "move the old file away or choose another store file",
            )

    def _id_salt(self) -> int:
        with self._write_lock:
            row = self._writer.execute("SELECT value FROM meta WHERE key = 'id_salt'").fetchone()
        return int(row[0]) if row is not None else 0

    def _stored_drop_reasons(self) -> dict[int, str]:
        with self._write_lock:
            row = self._writer.execute("SELECT value FROM meta WHERE key = 'drop_reasons'").fetchone()
        try:
            return {int(k): str(v) for k, v in json.loads(row[0]).items()} if row is not None else {}
        except (ValueError, AttributeError):
            return {}

    def _max_seq(self) -> int:
        with self._write_lock:
            return self._newest_seq(self._writer)

    def _resolutions_numbered(self) -> bool:
        with self._write_lock:
            return "at" in {r[1] for r in self._writer.execute("PRAGMA table_info(resolved)")}

    def _resolution_cursor(self) -> int:
        with self._write_lock:
            return C.resolution_cursor(self._writer)

    def _load_rollups(self) -> None:
        """Fill the in-memory rollups with the file's last hour. A new store has nothing to load; a
        file closed cleanly gives back the memory it had (:meth:`_kept_memory`); otherwise memory
        starts with the seconds after the file's newest, and a thread reads the file's seconds
        newest first, a slice at a time, so recent windows answer from memory at once and longer
        ones as soon as their seconds are in."""
        now = second_of(utcnow())
        floor = now - MEMORY_HORIZON
        with self._write_lock:
            newest = self._writer.execute("SELECT max(second) FROM rollup").fetchone()[0]
            if newest is not None:
                newest = min(newest, now + LOAD_AHEAD)
            kept = self._kept_memory()
            empty = R.to_array([], self.names)
            if newest is None or newest < floor:
                self.rollups.load(floor if newest is not None else -(2**62), empty)  # nothing to read
                return
            if kept is not None:
                try:
                    self.rollups.restore(kept)  # (all or nothing)
                except (KeyError, IndexError, TypeError, ValueError) as exc:
                    logger.warning("event store %s: kept memory not usable (%s); loading from the file",
                                   self.location, _one_line(exc))  # fmt: skip
                    kept = None
            if kept is not None:
                self.rollups.prune(now)
            else:
                self.rollups.load(newest + 1, empty)
            self._loaded = threading.Event()
        threading.Thread(target=self._load_in_background, args=(floor,), name="netspy-store-load", daemon=True).start()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction on the writer's connection (its lock held), rolled back on error."""
        self._writer.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._writer.execute("ROLLBACK")
            raise
        self._writer.execute("COMMIT")

    def _memory_path(self) -> Path:
        return Path(f"{self.path}{MEMORY_SUFFIX}")

    def _keep_memory(self) -> None:
        """At a clean close (the write lock held): the rollups in memory into ``<file>-memory``
        (created exclusively, 0600), then a token in ``meta`` that says they are this file's as it
        is now, and the triggers that remove it on any change. Not when the memory holds counts the
        file refused (a failed write)."""
        if self.path is None or self.readonly or not self.keep_memory or self._memory_differs:
            return
        arrays = self.rollups.dump()
        if arrays is None:
            return
        path = self._memory_path()
        token = os.urandom(16).hex()
        try:
            path.unlink(missing_ok=True)  # (a leftover, or a link someone planted: removed, not followed)
            fd = safefs.create_exclusive(path, "the store's memory", "remove it; the store reads its file instead")
            with os.fdopen(fd, "wb") as f:
                np.save(f, np.frombuffer(token.encode(), np.uint8))
                np.save(f, np.frombuffer("\n".join(arrays).encode(), np.uint8))
                for array in arrays.values():
                    np.save(f, array, allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
            with self._transaction():
                self._writer.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (MEMORY_TOKEN, token))
                for drop, create in _STALE_TRIGGERS:
                    self._writer.execute(drop)
                    self._writer.execute(create)
        except (OSError, ValueError, sqlite3.Error) as exc:
            logger.warning("event store %s: memory not kept for the next open (%s)", self.location, _one_line(exc))

    def _kept_memory(self) -> dict[str, np.ndarray] | None:
        """The memory :meth:`_keep_memory` kept, if its token is still in ``meta`` (nothing changed the
        rollups since: :data:`_STALE_TRIGGERS`) and in the file (the writer's connection, its lock
        held). Token, triggers and file go first, whatever follows: from now on this process writes,
        and a crash must not leave them looking valid."""
        conn = self._writer
        path = self._memory_path()
        try:
            with self._transaction():
                row = conn.execute("SELECT value FROM meta WHERE key = ?", (MEMORY_TOKEN,)).fetchone()
                conn.execute("DELETE FROM meta WHERE key = ?", (MEMORY_TOKEN,))
                for drop, _ in _STALE_TRIGGERS:
                    conn.execute(drop)
            if row is None:
                return None
            token = str(row[0])
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_nlink != 1:
                    return None
                if bytes(np.load(f, allow_pickle=False)) != token.encode():
                    return None
                keys = bytes(np.load(f, allow_pickle=False)).decode().split("\n")
                return {key: np.load(f, allow_pickle=False) for key in keys}
        except (OSError, ValueError, EOFError, sqlite3.Error) as exc:
            logger.warning("event store %s: kept memory not read (%s); loading from the file", self.location,
                           _one_line(exc))  # fmt: skip
            return None
        finally:
            path.unlink(missing_ok=True)

    def _load_in_background(self, floor: int) -> None:
        try:
            conn = self._connect(writer=False)
            try:
                while (hi := self.rollups.since) is not None and hi > floor:
                    lo = max(floor, hi - LOAD_SLICE)
                    with self._write_lock:  # no commit between reading a slice and holding it
                        if self._closed:
                            return
                        rows = conn.execute(f"SELECT {_ROLLUP_COLUMNS} FROM rollup WHERE second >= ? AND second < ?",
                                            (lo, hi)).fetchall()  # fmt: skip
                        self.rollups.extend(lo, R.to_array(rows, self.names))
                    with self._load_progress:
                        self._load_progress.notify_all()
                since = self.rollups.since
                if since is not None and self._folded >= -(-since // 3600) * 3600:  # the day before the memory
                    end = -(-since // 3600)
                    for code in _KIND_CODE.values():
                        self._warm_units(conn, code, 0, end - HOURS_LOADED - 1, end)
                        self._warm_units(conn, code, 1, (end - HOURS_LOADED) * 60, (end - HOURS_LOADED + 1) * 60)
            finally:
                conn.close()
        except (sqlite3.Error, StoreError) as exc:
            logger.warning("event store %s: rollups not loaded into memory (%s); windows read the file",
                           self.location, exc)  # fmt: skip
        finally:
            self._loaded.set()
            with self._load_progress:
                self._load_progress.notify_all()
            trim_heap()  # (the slices read while loading)

    def _warm_units(self, conn: sqlite3.Connection, code: int, level: int, first: int, end: int) -> None:
        """Keep the sums of the units first..end-1 (``level`` of :data:`spans.SPANS`) for the first long
        window, but not a unit of more than :data:`WARM_ROWS` rows: reading it here would hold the
        interpreter for seconds while the first windows of a reopened store want it (a window that
        needs it reads it then)."""
        _, table, _ = self._units[level]
        unit = S.SPANS[level][1]
        for u in range(first, end):
            rows = conn.execute(f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {unit} = ? AND kind = ? LIMIT ?)",
                                (u, code, WARM_ROWS + 1)).fetchone()[0]  # fmt: skip
            if 0 < rows <= WARM_ROWS:
                self._unit_sums(conn, code, u, u + 1, self.names, level)

    def _remember(self, counts: np.ndarray | None, since_open: bool = True) -> None:
        """The writer's rollup rows into memory (or aside while the memory is being loaded). Under
        the write lock, right after the transaction that wrote them ended, whether or not it
        committed: in-process figures stay exact while the disk refuses writes. ``since_open``: False for rows
        that correct counts made before the store was opened (not in :meth:`counted_since_open`)."""
        if counts is None or not len(counts):
            return
        self.rollups.add(counts)
        if since_open:
            self._count_since_open(counts)

    def _count_since_open(self, counts: np.ndarray) -> None:
        """Add a round's counts to :meth:`counted_since_open` (one entry per kind, command and
        outcome; past :data:`MAX_COUNTED_KEYS` commands fold into ``(other)``)."""
        keys = (counts["command"].astype(np.int64) << 33) | (counts["outcome"].astype(np.int64) << 1) | counts["kind"]
        uniq, inverse = np.unique(keys, return_inverse=True)
        sums = np.rint(np.bincount(inverse.ravel(), weights=counts["n"].astype(np.float64), minlength=len(uniq)))
        values = self.rollups.names.values
        kinds = {code: kind for kind, code in _KIND_CODE.items()}
        with self._counted_lock:
            for packed, n in zip(uniq.tolist(), sums.astype(np.int64).tolist(), strict=True):
                if not n:
                    continue
                key = (kinds[packed & 1], values[packed >> 33], values[(packed >> 1) & 0xFFFFFFFF])
                if key not in self._counted and len(self._counted) >= MAX_COUNTED_KEYS:
                    key = (key[0], OTHER_COMMAND, key[2])
                self._counted[key] = self._counted.get(key, 0) + n

    def counted_since_open(self) -> dict[tuple[str, str, str], int]:
        """Events counted since this store was opened, by (kind, command, outcome): exact (the
        kernel's counts), never decreasing except ``in_progress``, which nets out as connects
        resolve. For monotonic exports such as Prometheus counters."""
        with self._counted_lock:
            return dict(self._counted)

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """A connection to read with: pooled for a file store, the locked single one in memory."""
        if self._closed:
            raise StoreError(f"the event store {self.location} is closed")
        if self.path is None:
            with self._write_lock:
                yield self._writer
            return
        try:
            conn = self._readers.get_nowait()
        except queue.Empty:
            conn = self._connect(writer=False)
        try:
            yield conn
        finally:
            if self._closed or self._readers.qsize() >= READ_POOL_SIZE:
                conn.close()
            else:
                self._readers.put(conn)

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every statement inside sees the same data."""
        try:
            with self._reader() as conn:
                conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    if not self._closed and conn.in_transaction:
                        conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot read the event store {self.location}: {_one_line(exc)}",
                "check the file is intact and readable, or start with a fresh store",
            ) from exc

    # --- writing -------------------------------------------------------------------

    def add_events(self, events: Sequence[AnyEvent]) -> None:
        """Store built events and their counts, now, in the caller's thread (one transaction).

        Raises :class:`StoreError` (with ``lost``) when the batch, or some events of it, could
        not be stored; the events that could be stored are kept.
        """
        if events:
            self.write([Batch(events=events)])

    def ingest(self, batch: Batch) -> None:
        """Queue a batch for the writer thread (the collectors' sink; never blocks on SQLite).

        Raw eBPF records beyond :attr:`max_queued` waiting are shed (their counts are kept);
        built events wait for room instead (their counts are derived from them)."""
        writer = self._writer_thread
        if writer is None:
            from netspy_tui.store.writer import Writer  # noqa: PLC0415

            with self._write_lock:
                if self._writer_thread is None:
                    self._writer_thread = Writer(self, self.max_queued)
                writer = self._writer_thread
        writer.put(batch)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued batch is written; False on timeout."""
        writer = self._writer_thread
        return writer.flush(timeout) if writer is not None else True

    def write(self, batches: Sequence[Batch]) -> None:
        """Decode and write batches in one transaction (the writer thread, or :meth:`add_events`)."""
        raw: list[tuple[Any, ...]] = []
        records: list[np.ndarray] = []
        outcomes: list[np.ndarray] = []
        counts: list[R.Row] = []
        traffic: list[T.Row] = []
        latencies: list[L.Row] = []
        losses: dict[tuple[int, str], int] = {}
        rejected: list[str] = []
        offered = 0
        for batch in batches:
            if batch.events:
                offered += len(batch.events)
                kept: list[AnyEvent] = []
                for event in batch.events:
                    try:
                        row, clean = event_row(event)
                    except Exception as exc:  # an event we cannot even serialise: count it, keep the rest
                        rejected.append(_one_line(exc))
                        continue
                    raw.append(row)
                    kept.append(clean)
                counts.extend(R.rows_from_events(kept))
            if batch.records is not None and len(batch.records):
                codec = batch.codec
                recs = batch.records
                latencies.extend(codec.latency_rows(recs))
                is_outcome = recs["kind"] == P.KIND_OUTCOME
                if is_outcome.any():
                    outcomes.append(P.pick(recs, is_outcome))
                    recs = P.pick(recs, ~is_outcome)
                records.append(recs)
                self._learn_drop_reasons(codec)
            if batch.counts is not None:
                counts.extend(batch.codec.count_rows(*batch.counts))
            if batch.traffic is not None:
                traffic.extend(batch.codec.traffic_rows(*batch.traffic))
            traffic.extend(batch.traffic_rows)
            for cause, n in batch.lost.items():
                if n:
                    key = (batch.second, cause)
                    losses[key] = losses.get(key, 0) + n
        for (_, cause), n in losses.items():
            self._count(cause, n)
        if losses:
            self._warn_losses(losses)
        self._write_rows(raw, counts, rejected, offered, _joined(records), _joined(outcomes), losses, traffic,
                         latencies)  # fmt: skip

    def add_rows(self, rows: Sequence[tuple[Any, ...]], counts: Sequence[R.Row],
                 blocks: Sequence[J.Row] | None = None) -> None:  # fmt: skip
        """Store events given as their raw rows ``(kind, t, ts, pid, command, outcome, JSON)`` (kind 0
        connection, 1 packet drop; ``t`` ns since the epoch; the JSON one that validates as the event)
        and their rollup rows, in one transaction in the caller's thread: for a writer that checked the
        events and derived their rows itself, without a model each (the aggregator's ingest). The events
        are kept as blocks (:mod:`netspy_tui.store.jsonblocks`: one row per kind, not an indexed row each);
        ``blocks``: those of ``rows`` already made (:func:`jsonblocks.rows` numbered from 0: where they were checked).

        Raises :class:`StoreError` (with ``lost``) as :meth:`add_events` does."""
        if rows or counts:
            self._write_rows(list(rows), list(counts), [], len(rows), as_blocks=True, blocks=blocks)

    def replace_rows(self, replacements: Sequence[tuple[tuple[Any, ...], Any]],
                     check: Callable[[bytes, Any], Sequence[R.Row] | None], at: int) -> list[bool]:  # fmt: skip
        """Put newer versions of stored JSON events in their place (an aggregator given a connect's outcome after
        the connect in progress), in one transaction in the caller's thread. Each replacement is the new version's
        raw row ``(kind, t, ts, pid, command, outcome, JSON)`` (its time, timestamp, pid and command those of
        the stored one) and a token for ``check``; the stored event it replaces is the one of that kind, time,
        timestamp and pid for which ``check(stored JSON, token)`` gives rollup rows (those that move its count:
        e.g. -1 in progress, +1 its outcome; None: not that one, or not to be replaced). Each replaced event is
        numbered ``at`` for :meth:`replaced_since`. Returns whether each was replaced (False: no such event is
        stored, retention removed it, or ``check`` refused it). Raises :class:`StoreError` (nothing replaced)."""
        done = [False] * len(replacements)

        def edit(conn: sqlite3.Connection) -> list[R.Row]:
            moved: list[R.Row] = []
            blocks: dict[int, dict[int, bytes]] = {}
            taken: set[tuple[int, int]] = set()
            for n, (row, token) in enumerate(replacements):
                kind, t, ts, pid, command, outcome, body = row
                found = [(seq, i, stored) for seq, i, stored in J.find(conn, kind, t, ts, pid)
                         if (seq, i) not in taken]  # fmt: skip
                found += [(-seq, 0, bytes(stored)) for seq, stored in conn.execute(
                    "SELECT seq, body FROM events INDEXED BY events_time WHERE kind = ? AND t = ? AND ts = ? "
                    "AND pid = ? AND command = ?", (kind, t, ts, pid, command))]  # fmt: skip
                for seq, i, stored in found:
                    rows = check(stored, token)
                    if rows is None:
                        continue
                    body = _bytes(body)
                    if seq >= 0:
                        blocks.setdefault(seq, {})[i] = body
                        taken.add((seq, i))
                        at_seq = seq + i
                    else:
                        conn.execute("UPDATE events SET outcome = ?, body = ? WHERE seq = ?", (outcome, body, -seq))
                        at_seq = -seq
                    conn.execute("INSERT OR REPLACE INTO json_resolved (seq, at) VALUES (?, ?)", (at_seq, at))
                    moved.extend(rows)
                    done[n] = True
                    break
            for seq, new in blocks.items():
                J.replace(conn, seq, new)
            return moved

        if replacements:
            try:
                self._commit([], None, None, [], {}, [], edit=edit)
            except BaseException:
                done[:] = [False] * len(done)
                raise
            if any(done):
                self._changed()
        return done

    def replaced_since(self, kind: EventKind, pid: int | None, command: str | None, since_ns: int | None,
                       until_ns: int | None, upto: int | None, since_at: int) -> tuple[list[tuple[int, int, bytes]],
                                                                                        int | None]:  # fmt: skip
        """The JSON events stored at or before seq ``upto`` (None: any) of ``kind``, ``pid``, ``command`` with
        ``since < t <= until`` that :meth:`replace_rows` replaced after number ``since_at``, as ``(t, ts, JSON)``
        newest first; and, when there were more than one read takes, the number read up to (None: all read)."""
        match = self._block_match(kind, pid, command, since_ns, until_ns)
        with self._snapshot() as conn:
            found, read_to = J.resolved_since(conn, match, upto, since_at)
        found.sort(key=lambda r: (-r[0], -r[1], r[2]))
        return [(t, ts, body) for t, ts, _, body in found], read_to

    def replaced_cursor(self) -> int:
        """The newest number :meth:`replace_rows` was given (0: none)."""
        with self._snapshot() as conn:
            return J.resolution_cursor(conn)

    def resolved_stored(self, upto: int, since_at: int,
                        records: RecordsMaker | None = None) -> tuple[list[tuple[int, Any]], int]:  # fmt: skip
        """The connects stored in progress at or before seq ``upto`` whose outcome was resolved after resolution
        number ``since_at`` (with it), in insertion order, each with its ``seq`` (ring records as ``records`` makes
        them, as :meth:`after_stored` gives them); and the number to ask after next time. For a reader that
        followed the store in order and wants the outcomes that came since (``serve --forward``)."""
        if not self._numbered:
            return [], since_at
        match = self._match("connection", None, None, None, None)
        with self._snapshot() as conn:
            recs, seqs, cursor = C.resolved_since(conn, match, upto, since_at)
            order = np.argsort(seqs, kind="stable")
            recs, seqs = recs[order], seqs[order]
            made = self._record_events(conn, recs, seqs, records)
        return list(zip(seqs.tolist(), made, strict=True)), cursor

    def may_have_resolved(self, since_at: int) -> bool:
        """Whether resolutions may have been written after number ``since_at`` (False: :meth:`resolved_stored` has
        nothing after it). Known without a query: this store's writer numbers its writes of resolutions in memory
        (a read-only store cannot tell: True)."""
        return self.readonly or (self._numbered and self._resolutions > since_at)

    def resolution_cursor(self) -> int:
        """The number of the newest write of resolutions (0: none)."""
        if not self._numbered:
            return 0
        with self._snapshot() as conn:
            return C.resolution_cursor(conn)

    def _write_rows(
        self,
        raw: list[tuple[Any, ...]],
        counts: list[R.Row],
        rejected: list[str],
        offered: int,
        records: np.ndarray | None = None,
        outcomes: np.ndarray | None = None,
        losses: dict[tuple[int, str], int] | None = None,
        traffic: Sequence[T.Row] = (),
        latencies: Sequence[L.Row] = (),
        *,
        as_blocks: bool = False,
        blocks: Sequence[J.Row] | None = None,
    ) -> None:
        losses = losses or {}
        try:
            written = self._commit(raw, records, outcomes, counts, losses, rejected, traffic, latencies,
                                   as_blocks=as_blocks, keep=not as_blocks, blocks=blocks)  # fmt: skip
        except StoreError as exc:
            # (kept: only the raw detail is lost, the counts go with the next write that succeeds)
            self._count("unstored" if exc.kept else "store_error", exc.lost)
            raise
        self._count("raw", written)
        if written or counts or outcomes is not None or losses:
            self._changed()
        if rejected:
            self._count("rejected", len(rejected))
            raise StoreError(
                f"{len(rejected)} of {offered or len(rejected)} events could not be stored in {self.location}: "
                f"{rejected[0]}",
                "the collector produced malformed events; please report this",
                lost=len(rejected),
            )

    def on_change(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` (on the writing thread: it must be quick) after every write that added events or
        counts; returns the call that stops it. The MCP server turns it into change notifications."""
        return self._changed.add(listener)

    def on_rows(self, listener: Callable[[int, list[tuple[Any, ...]]], None]) -> Callable[[], None]:
        """Call ``listener(first, rows)`` (on the writing thread, under the write lock: it must be quick) after
        every committed write of raw event rows ``(kind, t, ts, pid, command, outcome, JSON)``, the ``i``-th of
        them stored as ``seq`` ``first + i``; returns the call that stops it. A reader that follows the store in
        order (``serve --forward``) takes what was just written from there instead of reading it back. Rows kept
        as blocks (:meth:`add_rows`) and ring records are not given."""
        return self._on_rows.add(listener)

    def on_records(self, listener: Callable[[list[tuple[int, np.ndarray]]], None]) -> Callable[[], None]:
        """Call ``listener(parts)`` (on the writing thread, under the write lock: it must be quick) after every
        committed write of ring records, ``parts`` the ``(first seq, records)`` of each run of them as stored (in
        ``seq`` order; read-only views); returns the call that stops it. A reader that follows the store in order
        (``serve --forward``) takes what was just written from there instead of reading it back (then
        :meth:`record_pieces` makes its events)."""
        return self._on_records.add(listener)

    def record_pieces(self, recs: np.ndarray, first: int, records: Any) -> list[bytes]:
        """:meth:`after_pieces`' pieces of ring records this store stored as ``first``, ``first + 1``, ... (given
        by :meth:`on_records`): ``records.pieces`` of them with their ids and the outcomes resolved since."""
        seqs = np.arange(first, first + len(recs), dtype=np.int64)
        with self._snapshot() as conn:
            outcomes = C.outcomes_of(conn, recs)
        return records.pieces(self._codec(), recs, self._event_numbers(seqs), outcomes)  # type: ignore[no-any-return]

    def _warn_losses(self, losses: dict[tuple[int, str], int]) -> None:
        """A warning (stderr for ``serve`` and one-shot commands, the log file for the dashboard) at
        most every :data:`WARN_EVERY` seconds, with what was lost since the last one."""
        for (_, cause), n in losses.items():
            self._unwarned[cause] = self._unwarned.get(cause, 0) + n
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            logger.warning("event store %s: %s", self.location, describe_losses(self._unwarned, "recently"))
            self._unwarned = {}

    def _count(self, what: str, n: int) -> None:
        if n:
            self.totals[what] = self.totals.get(what, 0) + n

    def in_progress_seconds(self, limit: int) -> list[tuple[int, int]]:
        """The ``(second, pid)`` of the connects counted in progress still (their outcome not come), newest first, up
        to ``limit``: where to look for the events an aggregator holds in progress (as retention keeps them)."""
        with self._reader() as conn:
            rows = conn.execute(
                "SELECT second, pid FROM rollup WHERE kind = 0 AND outcome = ? GROUP BY second, pid "
                "HAVING SUM(n) > 0 ORDER BY second DESC LIMIT ?", (IN_PROGRESS, limit)
            ).fetchall()  # fmt: skip
        return [(int(second), int(pid)) for second, pid in rows]

    def settle_in_progress(self, cause: str = RESTART_UNRESOLVED) -> int:
        """Settle the connects a previous run of the collector left in progress: nothing will ever report their
        outcome (the kernel maps that followed them went with that run). Call before this run's collector starts
        (it settles every connect stored in progress). Their counts move from ``in_progress`` to ``unknown`` in
        the seconds they started; their raw events stored in progress resolve to ``unknown``; how many is counted
        as ``cause`` now (a loss: counts exact, outcomes unknown), so /health and server_status say so. Returns
        how many; 0 for a store in memory or read-only, or whose last run's collector followed no connect's
        outcome (:data:`FOLLOWED` "0": a sampler's in_progress is what it saw, not a connect left behind)."""
        if self.path is None or self.readonly or self._closed or self.get_meta(FOLLOWED) == "0":
            return 0
        since = int(self.get_meta(FOLLOWED_SINCE) or 0)  # (a store of an older netspy-tui: all of it)
        with self._write_lock:
            conn = self._writer
            left = conn.execute(
                "SELECT second, pid, command, destination, port, protocol, n, first, last FROM rollup "
                "WHERE kind = 0 AND outcome = ? AND n > 0 AND second >= ?", (IN_PROGRESS, since)
            ).fetchall()  # fmt: skip
            outcomes = self._unresolved_records(conn, {(second, pid) for second, pid, *_ in left})
        if not left:
            return 0
        counts: list[R.Row] = []
        for second, pid, command, destination, port, protocol, n, first, last in left:
            counts.append((second, 0, pid, command, destination, port, protocol, IN_PROGRESS, 0, -n, first, last))
            counts.append((second, 0, pid, command, destination, port, protocol, UNRESOLVED, 0, n, first, last))
        total = sum(row[6] for row in left)
        now = second_of(utcnow())
        self._count(cause, total)
        self._commit([], None, outcomes, counts, {(now, cause): total}, [], since_open=False)
        self._changed()
        logger.warning("event store %s: %d connects left in progress by the collector's previous run: outcome "
                       "unknown", self.location, total)  # fmt: skip
        return total

    def _unresolved_records(self, conn: sqlite3.Connection, started: set[tuple[int, int]]) -> np.ndarray | None:
        """OUTCOME records (result unknown) for the raw events stored in progress, not resolved since, that
        started in one of the ``started`` (second, pid)."""
        if not started:
            return None
        found: list[np.ndarray] = []
        seen: set[int] = set()
        for second in sorted({s for s, _ in started}):
            lo, hi = second * NS, (second + 1) * NS - 1
            for seq, blob in conn.execute(
                "SELECT seq, recs FROM chunks INDEXED BY chunks_time WHERE kind = 0 AND t_hi >= ? AND t_lo <= ?",
                (lo, hi),
            ):
                if seq in seen:
                    continue
                seen.add(seq)
                recs = C.records(blob)
                pending = P.pick(recs, (recs["flags"] & P.F_PENDING) != 0)
                if not len(pending):
                    continue
                keep = [
                    outcome is None and (int(wall) // NS, int(pid)) in started
                    for outcome, wall, pid in zip(C.outcomes_of(conn, pending), pending["wall"].tolist(),
                                                  pending["pid"].tolist(), strict=True)
                ]  # fmt: skip
                if any(keep):
                    found.append(P.pick(pending, np.array(keep)))
        if not found:
            return None
        out = np.concatenate(found)
        out["kind"] = P.KIND_OUTCOME
        out["result"] = P.RESULT_UNTRACKED
        return out

    def _wrote_unwritten(self) -> None:
        """After a write that succeeded (the write lock held): what earlier ones kept is stored now."""
        self.last_write_error = None
        self.written_at = time.monotonic()
        if self._unwritten.since is not None:
            held = time.monotonic() - self._unwritten.since
            logger.warning("event store %s: written again; the counts held in memory for %.0f s are stored",
                           self.location, held)  # fmt: skip
            self._unwritten = _Unwritten()

    def _bound_unwritten(self) -> None:
        """Past :data:`MAX_UNWRITTEN_ROWS` held, the oldest seconds' counts are given up: a loss (``store_error``)."""
        held = self._unwritten
        if held.rows() <= MAX_UNWRITTEN_ROWS:
            return
        seconds = sorted({k[0] for k in held.counts} | {r[0] for r in held.traffic} | {r[0] for r in held.latencies})
        cut = seconds[len(seconds) // 2]
        connects, drops = held.give_up_before(cut)
        self._lose_counts(connects, drops, "held in memory longer than the store refused writes")

    def _lose_counts(self, connects: int, drops: int, why: str) -> None:
        """Counts given up: ``store_error`` (in the totals now, in the losses table with the next write that
        succeeds, or at the next open: :meth:`_leave_losses`), and said once on stderr."""
        lost = connects + drops
        if not lost:
            return
        self._memory_differs = True
        self._count("store_error", lost)
        self._unwritten.add([], {(second_of(utcnow()), "store_error"): lost}, [], [], None)
        logger.error("event store %s: the counts of %s connects and %s drops could not be written (%s): lost",
                     self.location, f"{connects:,}", f"{drops:,}", why)  # fmt: skip

    def unwritten_losses(self, lo: int = -(2**62), hi: int = 2**62) -> dict[str, int]:
        """Losses held in memory (not yet in the losses table) of the seconds lo..hi, by cause."""
        out: dict[str, int] = {}
        # (not under the write lock, which a long write holds: a copy of the items is taken at once, GIL held)
        for (second, cause), n in list(self._unwritten.losses.items()):
            if lo <= second <= hi and n:
                out[cause] = out.get(cause, 0) + n
        return out

    def unwritten_events(self) -> tuple[int, int]:
        """The connects and drops counted but not yet in the file (a failed write holds them in memory)."""
        return self._unwritten.events_by_kind()  # (as unwritten_losses: no wait for a write)

    def note_losses(self, second: int, losses: dict[str, int]) -> None:
        """Record losses noticed outside a batch (the writer's shedding), in the next transaction."""
        if losses:
            self.write([Batch(lost=losses, second=second)])

    def _commit(
        self,
        raw: list[tuple[Any, ...]],
        records: np.ndarray | None,
        outcomes: np.ndarray | None,
        counts: list[R.Row],
        losses: dict[tuple[int, str], int],
        rejected: list[str],
        traffic: Sequence[T.Row] = (),
        latencies: Sequence[L.Row] = (),
        *,
        as_blocks: bool = False,
        since_open: bool = True,
        edit: Callable[[sqlite3.Connection], list[R.Row]] | None = None,
        keep: bool = False,
        blocks: Sequence[J.Row] | None = None,
    ) -> int:
        """:meth:`_commit_locked` under the write lock, the counts into memory. ``keep``: what a failed write could
        not store but counts (counts, losses, traffic, latency, outcomes) is kept and written with the next write
        (which writes what earlier ones kept first); only the raw events are lost (:class:`StoreError` ``kept``)."""
        with self._write_lock:
            committed = False
            try:
                written, due = self._commit_locked(raw, records, outcomes, counts, losses, rejected, traffic,
                                                   latencies, as_blocks=as_blocks, edit=edit,
                                                   unwritten=self._unwritten if keep else None,
                                                   blocks=blocks)  # fmt: skip
                committed = True
                if keep:
                    self._wrote_unwritten()
            except StoreError as exc:
                self.last_write_error = exc
                if keep and not self._closed and not self.readonly:
                    self._unwritten.add(counts, losses, traffic, latencies, outcomes)
                    if exc.lost:
                        self._unwritten.add([], {(second_of(utcnow()), "unstored"): exc.lost}, [], [], None)
                    exc.kept = True
                    self._bound_unwritten()
                else:
                    self._memory_differs = self._memory_differs or bool(counts)
                raise
            finally:
                # (made here, under the lock compaction takes: the names are the memory's; and from the rows SQLite
                # took: what it refused is gone from ``counts``; an edit's counts are known once it ran, and only
                # what it did if it was kept)
                if counts and (edit is None or committed):
                    self._remember(R.to_array(counts, self.rollups.names), since_open)
        if due:
            self.prune()
        return written

    def _commit_locked(
        self,
        raw: list[tuple[Any, ...]],
        records: np.ndarray | None,
        outcomes: np.ndarray | None,
        counts: list[R.Row],
        losses: dict[tuple[int, str], int],
        rejected: list[str],
        traffic: Sequence[T.Row] = (),
        latencies: Sequence[L.Row] = (),
        *,
        as_blocks: bool = False,
        edit: Callable[[sqlite3.Connection], list[R.Row]] | None = None,
        unwritten: _Unwritten | None = None,
        blocks: Sequence[J.Row] | None = None,
    ) -> tuple[int, bool]:
        """One transaction (the write lock held): (raw rows written, whether retention is due). ``as_blocks``:
        the raw rows are kept as blocks (:mod:`netspy_tui.store.jsonblocks`); ``blocks``: those blocks, made
        already (numbered from 0). ``edit``: changes made in the
        transaction first, whose rollup rows are added to ``counts`` (the list given). ``unwritten``: what earlier
        failed writes kept, written first in the same transaction."""
        if self._closed or self.readonly:
            state = "closed" if self._closed else "open read-only"
            raise StoreError(f"the event store {self.location} is {state}", lost=len(raw) + _len(records))
        given = counts  # (the caller's: what SQLite refuses goes from it too)
        if unwritten:  # (new lists: the caller's are theirs)
            counts = [*unwritten.count_rows(), *counts]
            merged = dict(unwritten.losses)
            for key, n in losses.items():
                merged[key] = merged.get(key, 0) + n
            losses = merged
            traffic = [*unwritten.traffic, *traffic]
            latencies = [*unwritten.latencies, *latencies]
            outcomes = _joined([*unwritten.outcomes, *([outcomes] if outcomes is not None else [])])
        conn = self._writer
        first = self._next_seq
        try:
            conn.execute("BEGIN IMMEDIATE")
            if edit is not None:
                counts.extend(edit(conn))
            block_rows = None
            prebuilt: Sequence[J.Row] | None = None
            if as_blocks and raw:
                if blocks is not None and sum(b[2] for b in blocks) == len(raw):
                    block_rows = J.renumbered(blocks, first)
                    prebuilt = blocks
                else:
                    try:
                        block_rows = J.rows(raw, first)
                    except _ROW_ERRORS:  # some value a block cannot hold: as rows, which say which
                        block_rows = None
            try:
                if block_rows is not None:
                    J.write(conn, block_rows)
                else:
                    conn.executemany(_INSERT_EVENT, [(first + i, *row) for i, row in enumerate(raw)])
            except _ROW_ERRORS:
                # Some value cannot be stored (an integer beyond 64 bits, ...): keep the others.
                conn.execute("ROLLBACK")
                if prebuilt is not None and J.bodiless(raw):  # (rows whose JSON is in their blocks only)
                    raw = J.with_bodies(raw, prebuilt)
                conn.execute("BEGIN IMMEDIATE")
                good: list[tuple[Any, ...]] = []
                for row in raw:
                    try:
                        conn.execute(_INSERT_EVENT, (first + len(good), *row))
                        good.append(row)
                    except _ROW_ERRORS as exc:
                        rejected.append(_one_line(exc))
                raw = good
            chunk_rows = C.rows(records, first + len(raw)) if records is not None else []
            if chunk_rows or outcomes is not None:
                from netspy_tui.collector.ebpf.decode import outcome_name  # noqa: PLC0415

                C.write(conn, chunk_rows, outcomes, outcome_name, self._resolutions + 1)
            if counts:
                conn.execute("SAVEPOINT counts")
                try:
                    _upsert_rollups(conn, counts)
                except _ROW_ERRORS:
                    # (undone first: the rows upserted before the one SQLite refused would count twice)
                    conn.execute("ROLLBACK TO counts")
                    good_counts = []
                    for row in counts:
                        try:
                            conn.execute(_UPSERT_ROLLUP, row)
                            good_counts.append(row)
                        except _ROW_ERRORS as exc:
                            rejected.append(_one_line(exc))
                    kept_ids = {id(row) for row in good_counts}
                    given[:] = [row for row in given if id(row) in kept_ids]  # (the memory takes these)
                    counts = good_counts
                conn.execute("RELEASE counts")
                folded = self._folded
                if late_rows := [r for r in counts if r[0] < folded]:
                    S.write(conn, late_rows)
                upto = (max(r[0] for r in counts) - S.GRACE) // 60 * 60
                if upto > folded:
                    S.fold(conn, folded, upto)
                    conn.execute("UPDATE meta SET value = ? WHERE key = ?", (str(upto), S.FOLDED))
                    folded = upto
                if (since := self.rollups.since) is not None and (late := min(r[0] for r in counts)) < since:
                    for size, _, units in self._units:  # (a late row changed a unit kept summed)
                        units.forget(late // size, None)
            if losses:
                conn.executemany(_UPSERT_LOSS, [(s, c, n) for (s, c), n in losses.items()])
            if traffic:
                T.write(conn, traffic)
            if latencies:
                L.write(conn, latencies)
            added = [0, 0]
            for row in raw:
                added[row[0]] += 1
            for chunk in chunk_rows:
                added[chunk[1]] += chunk[2]
            for kind, n in enumerate(added):
                if n:
                    conn.execute("UPDATE kind_counts SET n = n + ? WHERE kind = ?", (n, kind))
            conn.execute("COMMIT")
            if outcomes is not None and len(outcomes):
                self._resolutions += 1
            if counts:
                self._folded = folded
            if raw and block_rows is None:
                self._on_rows(first, raw)
            if chunk_rows and self._on_records:
                self._on_records([(chunk[0], C.records(chunk[5])) for chunk in chunk_rows])
        except sqlite3.Error as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    logger.debug("rollback failed", exc_info=True)
            raise StoreError(
                f"cannot write to the event store {self.location}: {_error_text(exc, self.path)}",
                write_hint(exc, self.path),
                lost=len(raw) + _len(records),
            ) from exc
        stored = len(raw) + _len(records)
        self._next_seq = first + stored
        self._since_prune += stored
        due = self._since_prune >= PRUNE_EVERY_ROWS or time.monotonic() - self._last_prune >= PRUNE_EVERY_SECONDS
        return stored, due

    def prune(self, now: datetime | None = None) -> int:
        """Apply retention (age, then row count) now; returns how many raw events were deleted.

        Rollups and losses are kept by age only (counts stay exact however many raw events are
        kept). Deletes in chunks of :data:`PRUNE_CHUNK` rows, one transaction each, so the
        collector's writes are never held up for long.
        """
        now = now or utcnow()
        cutoff = None
        if self.retention_seconds is not None:
            cutoff = time_to_ns(now) - int(self.retention_seconds * 1e9)
        deleted = 0
        try:
            while True:
                removed, more = self._prune_chunk(cutoff)
                deleted += removed
                if not more:
                    break
        finally:
            self._since_prune = 0
            self._last_prune = time.monotonic()
        self.rollups.prune(second_of(now), cutoff // NS if cutoff is not None else None)
        with self._write_lock:
            if self.rollups.compact():
                for _, _, units in self._units:
                    units.forget()  # (their ids are those of the names before)
        trim_heap()  # (the writer freed the rows of every batch since the last pass)
        if deleted:
            logger.debug("event store %s: pruned %d events", self.location, deleted)
        return deleted

    def _prune_chunk(self, cutoff: int | None) -> tuple[int, bool]:
        """(raw rows deleted, whether more may be due)."""
        with self._write_lock:
            if self._closed or self.readonly:
                return 0, False
            conn = self._writer
            removed = 0
            more = False
            try:
                conn.execute("BEGIN IMMEDIATE")
                if cutoff is not None:
                    for kind in (0, 1):
                        n = conn.execute(
                            "DELETE FROM events WHERE seq IN (SELECT seq FROM events INDEXED BY events_time "
                            "WHERE kind = ? AND t < ? LIMIT ?)",
                            (kind, cutoff, PRUNE_CHUNK - removed),
                        ).rowcount
                        if n > 0:
                            conn.execute("UPDATE kind_counts SET n = n - ? WHERE kind = ?", (n, kind))
                            removed += n
                    for kind, n in [*J.prune_age(conn, cutoff, PRUNE_CHUNK - removed),
                                    *C.prune_age(conn, cutoff, PRUNE_CHUNK - removed)]:  # fmt: skip
                        conn.execute("UPDATE kind_counts SET n = n - ? WHERE kind = ?", (n, kind))
                        removed += n
                    second = cutoff // NS
                    oldest = conn.execute("SELECT min(second) FROM rollup").fetchone()[0]
                    if oldest is not None and oldest < second:
                        upto = min(second, oldest + 300)  # a few minutes of rollups per transaction
                        conn.execute("DELETE FROM rollup WHERE second < ?", (upto,))
                        S.prune(conn, upto)  # (the minutes and hours those seconds were part of)
                        for size, _, units in self._units:
                            units.forget(None, -(-upto // size) - 1)
                        more = upto < second
                    conn.execute("DELETE FROM losses WHERE second < ?", (second,))
                    if removed:
                        J.prune_resolved(conn)
                    T.prune(conn, second)
                    L.prune(conn, second)
                if self.max_rows is not None and removed < PRUNE_CHUNK:
                    total = conn.execute("SELECT coalesce(sum(n), 0) FROM kind_counts").fetchone()[0]
                    excess = min(total - self.max_rows, PRUNE_CHUNK - removed)
                    if excess > 0:
                        # The oldest by insertion order go first: rows (a rowid range: cheap to find
                        # and delete), then blocks and records (whole ones; the last one touched is cut).
                        boundary = conn.execute(
                            "SELECT seq FROM events ORDER BY seq LIMIT 1 OFFSET ?", (excess - 1,)
                        ).fetchone()
                        if boundary is None:
                            boundary = conn.execute("SELECT max(seq) FROM events").fetchone()
                        per_kind = conn.execute(
                            "SELECT kind, count(*) FROM events WHERE seq <= ? GROUP BY kind", (boundary[0] or -1,)
                        ).fetchall()
                        conn.execute("DELETE FROM events WHERE seq <= ?", (boundary[0] or -1,))
                        per_kind += J.prune_oldest(conn, excess - sum(n for _, n in per_kind))
                        rows_gone = sum(n for _, n in per_kind)
                        for kind, n in [*per_kind, *C.prune_oldest(conn, excess - rows_gone)]:
                            conn.execute("UPDATE kind_counts SET n = n - ? WHERE kind = ?", (n, kind))
                            removed += n
                        J.prune_resolved(conn)
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StoreError(
                    f"cannot prune the event store {self.location}: {_error_text(exc, self.path)}",
                    write_hint(exc, self.path),
                ) from exc
            return removed, more or removed >= PRUNE_CHUNK

    # --- reading: events -----------------------------------------------------------

    def _codec(self) -> Any:
        """This thread's codec for stored records, with the kernel's drop reason names."""
        codec = getattr(self._read_codec, "codec", None)
        if codec is None or codec.drop_reasons is not self._drop_reasons:
            from netspy_tui.collector.ebpf.decode import Codec, NameCache  # noqa: PLC0415

            reasons = self._drop_reasons
            with self._read_names_lock:  # (a drop's name holds its reason's: new reason names, new names)
                if self._read_names is None or self._read_names[0] is not reasons:
                    self._read_names = (reasons, NameCache())
                names = self._read_names[1]
            codec = self._read_codec.codec = Codec(source="ebpf", names=names)
            codec.drop_reasons = reasons
        return codec

    def _learn_drop_reasons(self, codec: Any) -> None:
        """Keep the kernel's drop reason names the collector read (in ``meta``, for a reopened file)."""
        reasons = codec.drop_reasons
        if reasons and (reasons != self._drop_reasons or self._drop_reasons_unsaved):
            merged = {**self._drop_reasons, **reasons}
            self._drop_reasons = merged
            try:
                self.set_meta("drop_reasons", json.dumps(merged))
                self._drop_reasons_unsaved = False
            except sqlite3.Error:  # (a full disk: the batch's counts are kept all the same; saved with a later one)
                self._drop_reasons_unsaved = True

    def _event_ids(self, seqs: np.ndarray) -> list[str]:
        """The ids of the events stored as ``seqs``: ``(seq * _ID_MIX) ^ salt`` (mod 2**64) as 16 hex digits, made
        by numpy for the lot (its unsigned 64-bit product wraps as the mask does)."""
        text = self._event_numbers(seqs).astype(">u8").tobytes().hex()
        return [text[i : i + 16] for i in range(0, len(text), 16)]

    def _event_numbers(self, seqs: np.ndarray) -> np.ndarray:
        """The ids of the events stored as ``seqs`` as numbers (:meth:`_event_ids` writes them in hex)."""
        return (seqs.astype(np.uint64) * np.uint64(_ID_MIX)) ^ np.uint64(self._salt)  # type: ignore[no-any-return]

    def _json_events(self, bodies: Sequence[bytes]) -> list[AnyEvent]:
        return _json_events(bodies)

    def _record_events(
        self, conn: sqlite3.Connection, recs: np.ndarray, seqs: np.ndarray, make: RecordsMaker | None = None
    ) -> list[Any]:
        """Stored ring records -> events (ids from their seqs, resolved outcomes applied); ``make``: what
        is made of them instead of models (called as :meth:`Codec.events` is, with this thread's codec first)."""
        if not len(recs):
            return []
        codec = self._codec()
        ids, outcomes = self._event_ids(seqs), C.outcomes_of(conn, recs)
        return codec.events(recs, ids, outcomes) if make is None else make(codec, recs, ids, outcomes)

    def after(self, seq: int, limit: int, settled_ns: int) -> tuple[list[tuple[int, AnyEvent]], int | None]:
        """Raw events stored after ``seq`` in insertion order, up to ``limit``, stopping at the first
        one newer than ``settled_ns`` (its outcome may still change), each with its ``seq``; and the
        oldest ``seq`` still stored (None: none), so a reader can tell what retention removed
        before it read it. For a reader that follows the store in order (``serve --forward``)."""
        out, oldest = self._after(seq, limit, settled_ns, build_json=True)
        return cast(list[tuple[int, AnyEvent]], out), oldest  # (build_json: every item is an event)

    def after_stored(
        self, seq: int, limit: int, settled_ns: int, records: RecordsMaker | None = None
    ) -> tuple[list[tuple[int, Any]], int | None]:
        """:meth:`after`, with events stored as JSON rows given as their stored JSON (the model's
        ``to_json``), not built: a reader that re-encodes them (``serve --forward``) skips the models; and
        ring records as what ``records(codec, recs, ids, outcomes)`` makes of them (None: models)."""
        return self._after(seq, limit, settled_ns, build_json=False, records=records)

    def after_pieces(
        self, seq: int, limit: int, settled_ns: int, records: Any
    ) -> tuple[tuple[int, int, list[bytes]], int | None] | None:
        """:meth:`after_stored` for a store of ring records alone (an eBPF agent's), the batch's events as one list of
        JSON pieces, not an item each: ``records.pieces(codec, recs, ids, outcomes)`` of them (ids as numbers), with
        the first and last ``seq`` (0, 0 and no pieces: none); and the oldest ``seq`` still stored. None when events
        stored as JSON rows are among them (then :meth:`after_stored` reads them)."""
        limit = max(0, limit)
        with self._snapshot() as conn:
            if conn.execute("SELECT 1 FROM events WHERE seq > ? LIMIT 1", (seq,)).fetchone() is not None:
                return None
            if J.after(conn, seq, 1):
                return None
            recs, rec_seqs = C.after(conn, seq, limit)
            firsts = [conn.execute(f"SELECT min(seq) FROM {table}").fetchone()[0]  # noqa: S608 (fixed names)
                      for table in ("events", "chunks", "json_blocks")]  # fmt: skip
            oldest = min((v for v in firsts if v is not None), default=None)
            late = np.flatnonzero(recs["wall"] > settled_ns)
            n = int(late[0]) if len(late) else len(recs)
            if not n:
                return (0, 0, []), oldest
            recs, rec_seqs = recs[:n], rec_seqs[:n]
            made = records.pieces(self._codec(), recs, self._event_numbers(rec_seqs), C.outcomes_of(conn, recs))
            return (int(rec_seqs[0]), int(rec_seqs[-1]), made), oldest

    def _after(
        self, seq: int, limit: int, settled_ns: int, *, build_json: bool, records: RecordsMaker | None = None
    ) -> tuple[list[tuple[int, Any]], int | None]:
        limit = max(0, limit)
        with self._snapshot() as conn:
            rows = conn.execute("SELECT seq, t, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                                (seq, limit)).fetchall()  # fmt: skip
            rows = sorted(rows + J.after(conn, seq, limit))[:limit]
            recs, rec_seqs = C.after(conn, seq, limit)
            firsts = [conn.execute(f"SELECT min(seq) FROM {table}").fetchone()[0]
                      for table in ("events", "chunks", "json_blocks")]  # fmt: skip
            oldest = [v for v in firsts if v is not None]
            if not rows:  # ring records only (an eBPF agent's store): in insertion order already
                late = np.flatnonzero(recs["wall"] > settled_ns)
                n = int(late[0]) if len(late) else len(recs)
                made = self._record_events(conn, recs[:n], rec_seqs[:n], records)
                return list(zip(rec_seqs[:n].tolist(), made, strict=True)), min(oldest) if oldest else None
            # (seq, t, JSON row index or -1 - record index), in insertion order
            walls = recs["wall"].tolist()
            merged = sorted([(r[0], r[1], i) for i, r in enumerate(rows)]
                            + [(q, walls[i], -1 - i) for i, q in enumerate(rec_seqs.tolist())])[:limit]  # fmt: skip
            settled = []
            for item in merged:
                if item[1] > settled_ns:
                    break
                settled.append(item)
            json_idx = [i for _, _, i in settled if i >= 0]
            rec_idx = [-1 - i for _, _, i in settled if i < 0]
            bodies = [rows[i][2] for i in json_idx]
            built_json: Iterator[AnyEvent | bytes] = iter(self._json_events(bodies) if build_json else bodies)
            built_recs = iter(self._record_events(conn, recs[rec_idx], rec_seqs[rec_idx], records))
        out = [(q, next(built_json) if i >= 0 else next(built_recs)) for q, _, i in settled]
        return out, min(oldest) if oldest else None

    @property
    def written_seq(self) -> int:
        """The ``seq`` of the last raw event this store wrote (at open: the newest it held), without a query: events
        written after it is read have greater seqs (a writer's mark of where its batch begins)."""
        return self._next_seq - 1

    def newest_seq(self) -> int:
        """The ``seq`` of the newest raw event stored (0: none yet)."""
        with self._snapshot() as conn:
            return self._newest_seq(conn)

    def get_meta(self, key: str) -> str | None:
        with self._snapshot() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def loss_rows(self, since_second: int, limit: int = 3600) -> list[tuple[int, str, int]]:
        """Losses recorded from ``since_second`` on, as ``(second, cause, n)`` in order (at most ``limit``)."""
        with self._snapshot() as conn:
            rows = conn.execute("SELECT second, cause, n FROM losses WHERE second >= ? ORDER BY second, cause LIMIT ?",
                                (since_second, limit)).fetchall()  # fmt: skip
        return [(int(second), str(cause), int(n)) for second, cause, n in rows]

    def loss_sums(self, prefix: str, since_second: int) -> tuple[int, int]:
        """Losses whose cause starts with ``prefix``: all kept, and those from ``since_second`` on (one read)."""
        with self._snapshot() as conn:
            total, recent = conn.execute(
                "SELECT coalesce(sum(n), 0), coalesce(sum(CASE WHEN second >= ? THEN n END), 0) FROM losses "
                "WHERE substr(cause, 1, ?) = ?",
                (since_second, len(prefix), prefix),
            ).fetchone()
        return int(total), int(recent)

    def put_losses(self, rows: Sequence[tuple[int, str, int]]) -> None:
        """Losses reported from elsewhere (an agent's, by second and cause), each replacing what was recorded for its
        second and cause: a report sent again, or updated, is not added twice."""
        if rows:
            with self._write_lock:
                self._writer.executemany("INSERT OR REPLACE INTO losses (second, cause, n) VALUES (?, ?, ?)", rows)

    def set_meta(self, key: str, value: str) -> None:
        """A small persistent setting of this store (e.g. how far a forwarder got)."""
        with self._write_lock:
            self._writer.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def query(self, q: EventQuery) -> EventPage:
        """Events matching ``q``, newest first (equal times by timestamp descending, then in insertion order), and
        how many matched; with the page token of its last event (:attr:`EventPage.before`).

        When the events of the page's seconds were counted but not all kept (shed under load),
        the page says how many are missing there."""
        page, items = self.query_stored(q)
        return page.model_copy(update={"events": build_stored([item for _, _, item in items])})

    def query_stored(self, q: EventQuery) -> tuple[EventPage, list[tuple[int, int, AnyEvent | bytes]]]:
        """:meth:`query`'s page without its events, and its events newest first as ``(t, timestamp,
        event)`` with ``t`` in ns and each event stored as JSON given as that JSON (:func:`build_stored`
        builds them): a reader that keeps only some of them (the aggregator merging its nodes' pages)
        builds only those."""
        limit = max(0, q.limit)
        since_ns = time_to_ns(q.since) if q.since is not None else None
        until_ns = time_to_ns(q.until) if q.until is not None else None
        tie = None
        if q.before is not None:  # (the events after it: none newer than it, and of its time only those after it)
            until_ns = q.before[0] if until_ns is None else min(until_ns, q.before[0])
            tie = q.before if until_ns == q.before[0] else None
        where, params, index = _events_where(q.kind, q.pid, q.command, since_ns, until_ns, q.after, tie)
        match = self._match(q.kind, q.pid, q.command, since_ns, until_ns, q.after, tie)
        with self._snapshot() as conn:
            cursor = self._newest_seq(conn)
            rows = conn.execute(
                f"SELECT t, ts, seq, body FROM events INDEXED BY {index} "
                f"WHERE {where} ORDER BY t DESC, ts DESC, seq LIMIT ?",
                (*params, limit),
            ).fetchall()
            block_match = self._block_match(q.kind, q.pid, q.command, since_ns, until_ns, q.after, tie)
            in_blocks, more_blocks = J.page(conn, block_match, limit)
            if in_blocks:  # (each newest first already)
                rows = sorted(rows + in_blocks, key=lambda r: (-r[0], -r[1], r[2]))[:limit] if rows else in_blocks
            more_rows = len(rows) >= limit or more_blocks
            recs, seqs, more = C.page(conn, match, limit)
            # newest first: (-t, -ts, seq) over both, then the page
            walls, stamps = recs["wall"].tolist(), recs["ts"].tolist()
            keyed = [(-r[0], -r[1], r[2], i) for i, r in enumerate(rows)]
            keyed += [(-walls[i], -stamps[i], q_, -1 - i) for i, q_ in enumerate(seqs.tolist())]
            keyed = sorted(keyed)[:limit]
            if not more_rows and not more:
                total = len(rows) + len(recs)
            else:
                total = self._kept_rows(conn, q.kind, q.pid, q.command, since_ns, until_ns, q.after, tie)
            rec_idx = [-1 - k[3] for k in keyed if k[3] < 0]
            built_recs = iter(self._record_events(conn, recs[rec_idx], seqs[rec_idx]))
            items: list[tuple[int, int, AnyEvent | bytes]] = [
                (-k[0], -k[1], rows[k[3]][3] if k[3] >= 0 else next(built_recs)) for k in keyed
            ]
            updates: list[AnyEvent] = []
            resolved: int | None = None
            if q.kind == "connection" and self._numbered:
                if q.resolved_after is not None and q.after is not None:
                    plain = self._match(q.kind, q.pid, q.command, since_ns, until_ns)
                    up_recs, up_seqs, resolved = C.resolved_since(conn, plain, q.after, q.resolved_after)
                    updates = self._record_events(conn, up_recs, up_seqs)
                else:  # (None while none is numbered: a reader asks after 0, every resolution since)
                    resolved = C.resolution_cursor(conn) or None
        not_kept, span = self._not_kept(q, items[-1][0] // NS, items[0][0] // NS) if items else (0, (None, None))
        page = EventPage(
            events=[],
            total_count=total,
            truncated=total > len(items),
            not_kept=not_kept,
            not_kept_since=span[0] if not_kept else None,
            not_kept_until=span[1] if not_kept else None,
            cursor=cursor,
            updates=updates,
            resolved_cursor=resolved,
            before=page_token(-keyed[-1][0], -keyed[-1][1], keyed[-1][2]) if keyed else None,
        )
        return page, items

    @staticmethod
    def _newest_seq(conn: sqlite3.Connection) -> int:
        """The seq of the newest raw event (row or record) in this snapshot (0: none)."""
        row = conn.execute("SELECT max(seq) FROM events").fetchone()
        last = conn.execute("SELECT seq + n - 1 FROM chunks ORDER BY seq DESC LIMIT 1").fetchone()
        block = conn.execute("SELECT seq + n - 1 FROM json_blocks ORDER BY seq DESC LIMIT 1").fetchone()
        return max([int(row[0] or 0), *(int(r[0]) for r in (last, block) if r is not None)])

    def _match(self, kind: EventKind, pid: int | None, command: str | None, since_ns: int | None,
               until_ns: int | None, after: int | None = None, tie: tuple[int, int, int] | None = None
               ) -> C.Match:  # fmt: skip
        return C.Match(_KIND_CODE[kind], pid, command, since_ns, until_ns, self._codec().command, after, tie)

    @staticmethod
    def _block_match(kind: EventKind, pid: int | None, command: str | None, since_ns: int | None,
                     until_ns: int | None, after: int | None = None, tie: tuple[int, int, int] | None = None
                     ) -> J.Match:  # fmt: skip
        return J.Match(_KIND_CODE[kind], pid, command, since_ns, until_ns, after, tie)

    def _kept_rows(self, conn: sqlite3.Connection, kind: EventKind, pid: int | None, command: str | None,
                   since_ns: int | None, until_ns: int | None, after: int | None = None,
                   tie: tuple[int, int, int] | None = None) -> int:  # fmt: skip
        """Raw events kept (rows and records) of ``kind``, ``pid``, ``command`` with
        ``since < t <= until`` (stored after seq ``after`` when given; with ``tie``, of those at ``until`` the
        ones a list orders after it), in one snapshot."""
        chunked = C.count(conn, self._match(kind, pid, command, since_ns, until_ns, after, tie))
        chunked += J.count(conn, self._block_match(kind, pid, command, since_ns, until_ns, after, tie))
        if pid is None and command is None and after is None:
            if tie is None:
                return chunked + self._count_range(conn, _KIND_CODE[kind], since_ns, until_ns)
            # (those older than the tie's time counted as a range; of its time, those after it one by one)
            older = self._count_range(conn, _KIND_CODE[kind], since_ns, tie[0] - 1)
            if since_ns is not None and since_ns >= tie[0]:
                return chunked + older
            same = conn.execute("SELECT count(*) FROM events INDEXED BY events_time WHERE kind = ? AND t = ? "
                                "AND (ts < ? OR (ts = ? AND seq > ?))",
                                (_KIND_CODE[kind], tie[0], tie[1], tie[1], tie[2])).fetchone()[0]  # fmt: skip
            return chunked + older + int(same)
        where, params, index = _events_where(kind, pid, command, since_ns, until_ns, after, tie)
        return chunked + int(conn.execute(f"SELECT count(*) FROM events INDEXED BY {index} WHERE {where}",
                                          params).fetchone()[0])  # fmt: skip

    def _not_kept(self, q: EventQuery, lo: int, hi: int) -> tuple[int, tuple[datetime | None, datetime | None]]:
        """Events counted but not kept in the seconds lo..hi a page spans."""
        missing = self._rollup_total(q.kind, q.pid, q.command, lo, hi) - self._kept_between(
            q.kind, q.pid, q.command, lo, hi
        )
        return (missing, (ns_to_time(lo * NS), ns_to_time((hi + 1) * NS))) if missing > 0 else (0, (None, None))

    @staticmethod
    def _count_range(conn: sqlite3.Connection, kind: int, since_ns: int | None, until_ns: int | None) -> int:
        """Raw event rows (not records in chunks) of ``kind`` with ``since < t <= until`` (None:
        unbounded), in one snapshot.

        SQLite counts by walking the index, so a range holding most of a big store is counted as
        the kind's total (kept in ``kind_counts``) minus the few events outside it.
        """
        total = conn.execute("SELECT n FROM kind_counts WHERE kind = ?", (kind,)).fetchone()[0]
        total -= conn.execute("SELECT coalesce(sum(n), 0) FROM chunks INDEXED BY chunks_time WHERE kind = ?",
                              (kind,)).fetchone()[0]  # fmt: skip
        total -= conn.execute("SELECT coalesce(sum(n), 0) FROM json_blocks INDEXED BY json_blocks_time WHERE kind = ?",
                              (kind,)).fetchone()[0]  # fmt: skip
        if since_ns is None and until_ns is None:
            return int(total)

        def bounded(clause: str, params: tuple[int, ...]) -> int:
            sql = f"SELECT count(*) FROM (SELECT 1 FROM events INDEXED BY events_time WHERE {clause} LIMIT ?)"
            return int(conn.execute(sql, (*params, COUNT_PROBE)).fetchone()[0])

        lo, hi = since_ns if since_ns is not None else -(2**63), until_ns if until_ns is not None else 2**63 - 1
        inside = bounded("kind = ? AND t > ? AND t <= ?", (kind, lo, hi))
        if inside < COUNT_PROBE:
            return inside
        before = bounded("kind = ? AND t <= ?", (kind, lo))
        after = bounded("kind = ? AND t > ?", (kind, hi))
        if before < COUNT_PROBE and after < COUNT_PROBE:
            return int(total) - before - after
        sql = "SELECT count(*) FROM events INDEXED BY events_time WHERE kind = ? AND t > ? AND t <= ?"
        return int(conn.execute(sql, (kind, lo, hi)).fetchone()[0])

    # --- reading: figures ------------------------------------------------------------

    def _rollup_seconds(
        self, kind: EventKind, pid: int | None, command: str | None, lo: int, hi: int, bucket: int = 0
    ) -> tuple[Sequence[R.Second | R.Block], R.Names]:
        """Rollups of seconds lo..hi (per-minute blocks inside a window without a pid or command
        filter), from memory when it holds them, else from SQLite; with the names of their ids.
        ``bucket``: the rate buckets' size in seconds (a long window's rows are summed per key and
        bucket in SQLite; 0: one bucket)."""
        code = _KIND_CODE[kind]
        if self._in_memory(lo):
            return self.rollups.snapshot(code, lo, hi, blocks=pid is None and command is None)
        if pid is None and command is None and (got := self._long_window(code, lo, hi, bucket)) is not None:
            return got
        if hi - lo < MEMORY_HORIZON:  # per second: the rate buckets stay exact too
            where, params = _where(kind, pid, command, "second", lo - 1, hi)
            sql, args = f"SELECT {_ROLLUP_COLUMNS} FROM rollup WHERE {where}", params
        else:  # a long window: whole hours and minutes from the coarse tables (see store/spans.py)
            sql = ""
        with self._snapshot() as conn:
            folded = self._fold_boundary(conn)
            if not sql:
                where, params = _where(kind, pid, command, "second", None, None)
                sql, args = S.select(where, params, lo, hi, S.oldest(conn), folded)
                sql, args = S.summed(sql, args, hi, bucket or hi - lo + 1)
            rows = conn.execute(sql, args).fetchall()
        names = self.names
        return R.seconds_of(R.to_array(rows, names), code, names), names

    def _fold_boundary(self, conn: sqlite3.Connection) -> int:
        """:attr:`_folded` as of ``conn``'s snapshot (call it first in the snapshot: the writer's
        value is read before the snapshot's first statement; a read-only store reads its file's)."""
        return S.folded_from(conn) if self.readonly else self._folded

    def _in_memory(self, lo: int) -> bool:
        """Whether memory holds the seconds from ``lo`` on (waiting for them while they load; a count
        does not wait: see :meth:`_rollup_total`)."""
        if self.rollups.covers(lo) or self._loaded.is_set():
            return self.rollups.covers(lo)
        with self._load_progress:
            self._load_progress.wait_for(lambda: self.rollups.covers(lo) or self._loaded.is_set(), LOAD_WAIT)
        return self.rollups.covers(lo)

    def _long_window(self, code: int, lo: int, hi: int, bucket: int) -> tuple[list[Any], R.Names] | None:
        """A window without a pid or command filter that starts before the memory: the memory from
        its first whole hour on, the whole hours and then minutes before from their sums
        (:class:`spans.Units`), the seconds before the first whole minute summed per key in SQLite.
        None: the memory is not loaded (the caller reads everything from SQLite)."""
        since = self.rollups.since
        if since is None:
            return None
        end = -(-since // 3600)  # the memory's first whole hour
        if end * 3600 > hi or not self._in_memory(end * 3600):
            return None
        generations = [units.generation for _, _, units in self._units]
        parts, names = self.rollups.snapshot(code, end * 3600, hi, blocks=True)
        out: list[Any] = list(parts)
        with self._snapshot() as conn:
            if self._fold_boundary(conn) < end * 3600:  # (the units before the memory are not all folded)
                return None
            floor = S.oldest(conn)
            lo = max(lo, floor) if floor is not None else lo
            upto = end * 3600  # what is summed ends here; each coarser unit takes the whole ones before it
            for level, (size, _, _) in enumerate(self._units):
                first = min(-(-lo // size), upto // size)
                out.extend(self._unit_sums(conn, code, first, upto // size, names, level, generations[level]))
                upto = first * size
            if lo < upto:  # the seconds before the first whole minute
                where, params = _where(_KIND_NAME[code], None, None, "second", lo - 1, upto - 1)
                sql = f"SELECT {_ROLLUP_COLUMNS} FROM rollup WHERE {where}"
                sql, args = S.summed(sql, params, hi, bucket or hi - lo + 1)
                edge = R.Span(R.to_array(conn.execute(sql, args).fetchall(), names), names)
                if edge.total or len(edge):
                    out.append(edge)
        return out, names

    def _unit_sums(
        self,
        conn: sqlite3.Connection,
        code: int,
        first: int,
        end: int,
        names: R.Names,
        level: int,
        generation: int | None = None,
    ) -> list[R.Span]:
        """The sums of the units first..end-1 (hour or minute numbers: ``level`` of
        :data:`spans.SPANS`), kept or read from their coarse table."""
        size, table, units = self._units[level]
        generation = units.generation if generation is None else generation
        got = {u: units.get(u, code, names) for u in range(first, end)}
        missing = [u for u, v in got.items() if v is None]
        if missing:
            unit = S.SPANS[level][1]
            rows = conn.execute(
                f"SELECT {unit} * {size}, {S.KEY}, failed, n, first, last FROM {table} WHERE {unit} >= ? "
                f"AND {unit} <= ? AND kind = ?",
                (missing[0], missing[-1], code),
            ).fetchall()
            arr = R.to_array(rows, names)
            at = arr["second"] // size
            for u in missing:
                span = got[u] = R.Span(arr[at == u], names)
                units.put(u, code, names, span, generation)
        return [v for v in got.values() if v is not None and (v.total or len(v))]

    def _rollup_total(self, kind: EventKind, pid: int | None, command: str | None, lo: int, hi: int) -> int:
        # A count never waits for the memory to load: SQLite sums the window from the coarse tables at
        # once (the long-window path would read every unit's coarse rows into Python first, which only
        # pays once the memory is loaded and the units are kept).
        if self.rollups.covers(lo):
            secs, names = self.rollups.snapshot(_KIND_CODE[kind], lo, hi, blocks=False)
            return R.total(secs, names, pid, command)  # type: ignore[arg-type]
        code = _KIND_CODE[kind]
        loaded = self._loaded.is_set()
        if pid is None and command is None and loaded and (got := self._long_window(code, lo, hi, 0)) is not None:
            return sum(part.total for part in got[0])
        where, params = _where(kind, pid, command, "second", None, None)
        with self._snapshot() as conn:
            folded = self._fold_boundary(conn)
            sql, args = S.select(where, params, lo, hi, S.oldest(conn), folded)
            return int(conn.execute(f"SELECT coalesce(sum(n), 0) FROM ({sql})", args).fetchone()[0])

    def count(self, scope: Scope, now: datetime | None = None) -> int:
        """Events in ``scope`` (its last ``window`` whole seconds at ``now``), exact."""
        lo, hi = window_seconds_of(now or utcnow(), scope.window)
        return self._rollup_total(scope.kind, scope.pid, scope.command, lo, hi)

    def stats(self, scope: Scope, top_n: int = 10, buckets: int = 60, now: datetime | None = None) -> WindowStats:
        """The same :class:`WindowStats` as ``analysis.aggregate.aggregate``, from the rollups."""
        now = now or utcnow()
        lo, hi = window_seconds_of(now, scope.window)
        size, _ = bucket_layout(scope.window, buckets)
        secs, names = self._rollup_seconds(scope.kind, scope.pid, scope.command, lo, hi, size)
        return R.window_stats(secs, names, scope, now, top_n, buckets)

    def traffic(
        self, pid: int | None, command: str | None, window_seconds: int, limit: int = 20, now: datetime | None = None
    ) -> TrafficStats:
        """Bytes sent and read in the last ``window_seconds`` whole seconds at ``now`` (exact), per
        process, remote address and flow, ``limit`` of each."""
        now = now or utcnow()
        lo, hi = window_seconds_of(now, window_seconds)
        with self._snapshot() as conn:
            rows = T.read(conn, lo, hi, pid, command)
        return T.stats(rows, int(window_seconds), pid, command, now, limit)

    def inbound(self, q: EventQuery) -> EventPage:
        """Connections local processes accepted (``q``'s pid or command, ``since`` exclusive, ``until``
        inclusive), newest first: read from the traffic rows the kernel counted them in, so they are kept as
        long as those (the store's retention) and never shed."""
        since = time_to_ns(q.since) if q.since is not None else None
        until = time_to_ns(q.until) if q.until is not None else None
        with self._snapshot() as conn:
            events, total = T.accepted(conn, since, until, q.pid, q.command, q.limit)
        return EventPage(events=list(events), total_count=total, truncated=total > len(events))

    def connect_latency(
        self, pid: int | None, command: str | None, window_seconds: int, limit: int = 20, now: datetime | None = None
    ) -> LatencyStats:
        """TCP connect latency of the attempts that started in the last ``window_seconds`` whole
        seconds at ``now``: per process and per (process, destination), ``limit`` of each."""
        now = now or utcnow()
        lo, hi = window_seconds_of(now, window_seconds)
        with self._snapshot() as conn:
            rows = L.read(conn, lo, hi, pid, command)
        return L.stats(rows, int(window_seconds), pid, command, now, limit)

    def kept(self, scope: Scope, now: datetime | None = None) -> int:
        """Raw events kept in ``scope``'s last ``window`` whole seconds (compare with :meth:`count`)."""
        lo, hi = window_seconds_of(now or utcnow(), scope.window)
        return self._kept_between(scope.kind, scope.pid, scope.command, lo, hi)

    def _kept_between(self, kind: EventKind, pid: int | None, command: str | None, lo: int, hi: int) -> int:
        """Raw events kept in the seconds lo..hi."""
        with self._snapshot() as conn:
            return self._kept_rows(conn, kind, pid, command, lo * NS - 1, (hi + 1) * NS - 1)

    def losses(self, since: datetime | None = None, until: datetime | None = None) -> dict[str, int]:
        """Losses recorded between ``since`` and ``until`` (whole seconds; None: unbounded), by cause."""
        lo = second_of(since) if since is not None else -(2**62)
        hi = second_of(until) if until is not None else 2**62
        with self._snapshot() as conn:
            rows = conn.execute(
                "SELECT cause, sum(n) FROM losses WHERE second >= ? AND second <= ? GROUP BY cause", (lo, hi)
            ).fetchall()
        out = {cause: int(n) for cause, n in rows if n}
        for cause, n in self.unwritten_losses(lo, hi).items():  # (what a failed write holds in memory)
            out[cause] = out.get(cause, 0) + n
        return out

    def newest_time(self) -> datetime | None:
        """Wall-clock time of the newest stored event, or None when the store is empty."""
        with self._snapshot() as conn:
            values = [
                row[0]
                for kind in (0, 1)
                for sql in (
                    "SELECT max(t) FROM events WHERE kind = ?",
                    "SELECT max(t_hi) FROM chunks WHERE kind = ?",
                    "SELECT max(t_hi) FROM json_blocks WHERE kind = ?",
                )
                if (row := conn.execute(sql, (kind,)).fetchone())[0] is not None
            ]
        return ns_to_time(max(values)) if values else None

    def stored_by_kind(self) -> dict[str, int]:
        """How many raw events of each kind are stored (kinds with none left out)."""
        names = {code: kind for kind, code in _KIND_CODE.items()}
        with self._snapshot() as conn:
            rows = conn.execute("SELECT kind, n FROM kind_counts").fetchall()
        return {names[kind]: int(n) for kind, n in rows if n and kind in names}

    def row_count(self) -> int:
        """How many raw events are stored."""
        with self._snapshot() as conn:
            return int(conn.execute("SELECT coalesce(sum(n), 0) FROM kind_counts").fetchone()[0])

    def close(self) -> None:
        """Write what is queued, keep the rollups in memory for the next open (:meth:`_keep_memory`),
        then close every connection (idempotent); later reads and writes raise :class:`StoreError`."""
        writer = self._writer_thread
        if writer is not None:
            writer.close()
        with self._write_lock:
            if self._closed:
                return
            self._close_unwritten()
            self._closed = True
            self._keep_memory()
            # Idle read connections close now; ones in use close when their reader hands them back.
            while True:
                try:
                    conn = self._readers.get_nowait()
                except queue.Empty:
                    break
                conn.close()
            self._writer.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # (the lock goes with it: another process may write the file now)
                self._lock_fd = None

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_ROLLUP_COLUMNS = "second, kind, pid, command, destination, port, protocol, outcome, failed, n, first, last"


def window_seconds_of(now: datetime, window: float) -> tuple[int, int]:
    return window_seconds(now, int(window))


__all__ = ["EventStore", "StoreError", "ns_to_time", "time_to_ns", "timedelta"]
