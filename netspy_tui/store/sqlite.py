"""The event store: every event the embedded collector sees, in SQLite (standard library).

One row per event. The columns the tools filter and group on are stored pre-computed (wall-clock
time as integer nanoseconds, kind, pid, command, destination, port, protocol, the effective
outcome or drop reason, the failure flag) next to the event's full JSON, so :meth:`EventStore.query`
returns events exactly as they were ingested, extension fields included, and
:meth:`EventStore.stats` computes :class:`~netspy_tui.models.WindowStats` — the same figures as
:func:`netspy_tui.analysis.aggregate.aggregate` over the same events.

Threads: the collector thread writes (:meth:`EventStore.add_events` is the collector sink, one
transaction per batch); readers run on any thread (``asyncio.to_thread``). A file store uses one
write connection and a small pool of read connections (WAL lets reads run while a batch commits);
an in-memory store has a single connection behind a lock.

Costs: a page of events (``query``) reads only the rows it returns, through the index that
matches its filter. ``stats`` and ``count`` keep the tallies of recently asked windows
(:mod:`netspy_tui.store.window`): the first call for a window reads every event in it (about
4 us an event for ``stats``), a repeated one (the dashboard polls every second) reads only the
events that entered or left it since, plus a few index seeks. Ingest pays nothing for this.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter
from pydantic_core import PydanticSerializationError

from netspy_tui.analysis.aggregate import FAILED_OUTCOMES, AnyEvent
from netspy_tui.errors import NetspyError
from netspy_tui.models import (
    ConnectionEvent,
    Event,
    EventKind,
    EventPage,
    PacketDropEvent,
    WindowStats,
    utcnow,
)
from netspy_tui.store.window import KIND_CODE, PRUNE_RECORDS, PruneRecord, Subject, WindowCache
from netspy_tui.telemetry.source import EventQuery

logger = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KIND_CODE = KIND_CODE
_EVENT_JSON: TypeAdapter[ConnectionEvent | PacketDropEvent] = TypeAdapter(Event)

#: Prune (retention) after this many inserted rows or this many seconds, whichever comes first.
PRUNE_EVERY_ROWS = 50_000
PRUNE_EVERY_SECONDS = 10.0
#: Rows deleted per retention transaction.
PRUNE_CHUNK = 20_000
#: Counting a window stops after this many rows, then counts the (fewer) events outside it.
COUNT_PROBE = 50_000
#: Read connections kept open for a file store.
READ_POOL_SIZE = 4
#: An in-memory store's long read pauses this long between chunks so that the writer gets in.
BREATHE_SECONDS = 0.001

SCHEMA_VERSION = "1"

# The small columns live in ``events`` (scanned by window aggregates); each event's JSON lives in
# ``bodies`` under the same ``seq``, read only for the page of events a query returns.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY,   -- insertion order
    kind        INTEGER NOT NULL,      -- 0 connection, 1 packet_drop
    t           INTEGER NOT NULL,      -- wall-clock time, ns since the Unix epoch (UTC)
    ts          INTEGER NOT NULL,      -- the event's own timestamp (ns since boot), orders ties
    pid         INTEGER NOT NULL,
    command     TEXT    NOT NULL,
    destination TEXT    NOT NULL,      -- '' when unknown
    port        INTEGER,               -- destination port (connections only)
    protocol    TEXT    NOT NULL,      -- '' when unknown
    outcome     TEXT    NOT NULL,      -- connections: effective outcome; drops: drop reason or UNKNOWN
    failed      INTEGER NOT NULL       -- 1 when the event counts as a failure
);
CREATE TABLE IF NOT EXISTS bodies (
    seq  INTEGER PRIMARY KEY,
    json BLOB NOT NULL                 -- the whole event as ingested (UTF-8 JSON)
);
CREATE INDEX IF NOT EXISTS events_time ON events (kind, t, ts);
CREATE INDEX IF NOT EXISTS events_pid ON events (kind, pid, t);
CREATE INDEX IF NOT EXISTS events_command ON events (kind, command, t);
CREATE TRIGGER IF NOT EXISTS events_delete_body AFTER DELETE ON events
    BEGIN DELETE FROM bodies WHERE seq = OLD.seq; END;
CREATE TABLE IF NOT EXISTS kind_counts (kind INTEGER PRIMARY KEY, n INTEGER NOT NULL);
INSERT OR IGNORE INTO kind_counts (kind, n) VALUES (0, 0), (1, 0);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- bumped by every prune that deletes rows (window tallies check it: see store/window.py)
INSERT OR IGNORE INTO meta (key, value) VALUES ('prunes', '0');
"""

_INSERT_EVENT = (
    "INSERT INTO events (seq, kind, t, ts, pid, command, destination, port, protocol, outcome, failed) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_BODY = "INSERT INTO bodies (seq, json) VALUES (?, ?)"
#: Errors that reject one row (a value SQLite cannot hold), not the whole batch.
_ROW_ERRORS = (OverflowError, ValueError, TypeError, sqlite3.InterfaceError, sqlite3.IntegrityError)



class StoreError(NetspyError):
    """The event store cannot be opened or written. ``lost`` counts events a failed write dropped."""

    def __init__(self, message: str, hint: str = "", *, lost: int = 0) -> None:
        super().__init__(message, hint)
        self.lost = lost


def time_to_ns(value: datetime) -> int:
    """Wall-clock datetime -> integer ns since the epoch (naive values are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def ns_to_time(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value // 1000)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _clean_text(value: str) -> str:
    """Text that cannot be UTF-8 made storable: undecodable bytes (``surrogateescape``) become ``\\x80``."""
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # other lone surrogates
        return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _sanitize(value: Any) -> Any:
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, list):
        return [_sanitize(v) for v in value]
    if isinstance(value, dict):
        return {_sanitize(k): _sanitize(v) for k, v in value.items()}
    return value


def _row(event: AnyEvent) -> tuple[Any, ...]:
    """The column values of one event."""
    try:
        text = event.__pydantic_serializer__.to_json(event)  # UTF-8 bytes, without a str round trip
    except PydanticSerializationError:
        # Untrusted text that is not valid Unicode: store it with the bad code points escaped.
        event = type(event).model_construct(**_sanitize(event.model_dump()))
        text = event.__pydantic_serializer__.to_json(event)
    if isinstance(event, ConnectionEvent):
        outcome = event.effective_outcome
        return (
            0,
            time_to_ns(event.time),
            event.timestamp,
            event.pid,
            event.command,
            event.destination or "",
            event.destination_port,
            event.protocol or "",
            outcome,
            1 if outcome in FAILED_OUTCOMES else 0,
            text,
        )
    return (
        1,
        time_to_ns(event.time),
        event.timestamp,
        event.pid,
        event.command,
        event.destination or "",
        None,
        event.protocol or "",
        event.drop_reason or "UNKNOWN",
        1,
        text,
    )


def _where(
    kind: EventKind,
    pid: int | None,
    command: str | None,
    since_ns: int | None,
    until_ns: int | None,
) -> tuple[str, list[Any], str]:
    """WHERE clause, its parameters and the index that serves it best."""
    clauses = ["kind = ?"]
    params: list[Any] = [_KIND_CODE[kind]]
    index = "events_time"
    if pid is not None:
        clauses.append("pid = ?")
        params.append(pid)
        index = "events_pid"
    if command is not None:
        clauses.append("command = ?")
        params.append(command)
        if pid is None:
            index = "events_command"
    if since_ns is not None:
        clauses.append("t > ?")
        params.append(since_ns)
    if until_ns is not None:
        clauses.append("t <= ?")
        params.append(until_ns)
    return " AND ".join(clauses), params, index


class EventStore:
    """Events in SQLite, with retention by age and by row count.

    ``path`` None keeps the store in memory. ``retention_seconds`` / ``max_rows`` None disable
    that limit. Limits are applied every :data:`PRUNE_EVERY_ROWS` rows or
    :data:`PRUNE_EVERY_SECONDS` seconds of ingest, and by :meth:`prune`.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        retention_seconds: float | None = 24 * 3600,
        max_rows: int | None = 2_000_000,
        readonly: bool = False,
    ) -> None:
        self.path = Path(path).expanduser() if path is not None else None
        if readonly and self.path is None:
            raise ValueError("a read-only store needs a file")
        self.readonly = readonly
        self.retention_seconds = retention_seconds
        self.max_rows = max_rows
        self._write_lock = threading.Lock()
        self._closed = False
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._since_prune = 0
        self._last_prune = time.monotonic()
        # What each recent prune deleted, by serial (see store/window.py); written under the write lock.
        self._prune_records: dict[int, PruneRecord] = {}
        self._windows = WindowCache(self._count_subject, self._prune_records)
        self._writer = self._connect(writer=True)
        self._next_seq = 0 if readonly else self._max_seq() + 1

    # --- connections ---------------------------------------------------------------

    @property
    def location(self) -> str:
        return str(self.path) if self.path is not None else ":memory:"

    def _open_error(self, exc: BaseException) -> StoreError:
        return StoreError(
            f"cannot open the event store {self.location}: {_one_line(exc)}",
            "choose a writable file for the store, or run without one to keep events in memory",
        )

    def _connect(self, *, writer: bool) -> sqlite3.Connection:
        try:
            if self.path is None:
                conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            elif self.readonly:
                uri = f"file:{urllib.parse.quote(str(self.path.absolute()))}?mode=ro"
                conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None, timeout=30)
            else:
                if writer:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            try:
                conn.execute("PRAGMA temp_store = MEMORY")
                conn.execute("PRAGMA cache_size = -65536")
                if self.path is not None:
                    conn.execute("PRAGMA mmap_size = 1073741824")
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
            # Checkpoint less often: index pages touched by many batches are then copied once.
            conn.execute("PRAGMA wal_autocheckpoint = 32768")
            conn.execute("PRAGMA journal_size_limit = 67108864")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "meta" not in tables:
            self._check_schema(conn)  # someone else's database: refuse to touch it
        conn.executescript(_SCHEMA)
        if conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() is None:
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
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
        if row[0] != SCHEMA_VERSION:
            raise StoreError(
                f"the event store {self.location} has schema version {row[0]}, this netspy-tui needs {SCHEMA_VERSION}",
                "move the old file away or choose another store file",
            )

    def _max_seq(self) -> int:
        with self._write_lock:
            row = self._writer.execute("SELECT max(seq) FROM events").fetchone()
        return int(row[0] or 0)

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

    def _breathe(self, conn: sqlite3.Connection) -> None:
        """In-memory store, inside :meth:`_snapshot`: end the read, let a writer waiting for the
        lock in, read on in a new transaction (long reads would otherwise hold off the collector)."""
        conn.execute("COMMIT")
        self._write_lock.release()
        try:
            time.sleep(BREATHE_SECONDS)
        finally:
            self._write_lock.acquire()
        if self._closed:
            raise StoreError(f"the event store {self.location} is closed")
        conn.execute("BEGIN")

    # --- writing -------------------------------------------------------------------

    def add_events(self, events: Sequence[AnyEvent]) -> None:
        """Store a batch in one transaction (the collector sink).

        Raises :class:`StoreError` (with ``lost``) when the batch, or some events of it, could
        not be stored; the events that could be stored are kept.
        """
        if not events:
            return
        rows: list[tuple[Any, ...]] = []
        rejected: list[str] = []
        for event in events:
            try:
                rows.append(_row(event))
            except Exception as exc:  # an event we cannot even serialise: count it, keep the rest
                rejected.append(_one_line(exc))
        with self._write_lock:
            if self._closed or self.readonly:
                state = "closed" if self._closed else "open read-only"
                raise StoreError(f"the event store {self.location} is {state}", lost=len(events))
            conn = self._writer
            first = self._next_seq
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(_INSERT_EVENT, [(first + i, *row[:10]) for i, row in enumerate(rows)])
                    conn.executemany(_INSERT_BODY, [(first + i, row[10]) for i, row in enumerate(rows)])
                except _ROW_ERRORS:
                    # Some value cannot be stored (an integer beyond 64 bits, ...): keep the others.
                    conn.execute("ROLLBACK")
                    conn.execute("BEGIN IMMEDIATE")
                    good: list[tuple[Any, ...]] = []
                    for row in rows:
                        seq = first + len(good)
                        try:
                            conn.execute("SAVEPOINT one_row")
                            conn.execute(_INSERT_EVENT, (seq, *row[:10]))
                            conn.execute(_INSERT_BODY, (seq, row[10]))
                            conn.execute("RELEASE one_row")
                            good.append(row)
                        except _ROW_ERRORS as exc:
                            conn.execute("ROLLBACK TO one_row")
                            conn.execute("RELEASE one_row")
                            rejected.append(_one_line(exc))
                    rows = good
                added = [0, 0]
                for row in rows:
                    added[row[0]] += 1
                for kind, n in enumerate(added):
                    if n:
                        conn.execute("UPDATE kind_counts SET n = n + ? WHERE kind = ?", (n, kind))
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        logger.debug("rollback failed", exc_info=True)
                raise StoreError(
                    f"cannot write to the event store {self.location}: {_one_line(exc)}",
                    "free disk space or choose another store file",
                    lost=len(events),
                ) from exc
            self._next_seq = first + len(rows)
            self._since_prune += len(rows)
            due = self._since_prune >= PRUNE_EVERY_ROWS or time.monotonic() - self._last_prune >= PRUNE_EVERY_SECONDS
        if due:
            self.prune()
        if rejected:
            raise StoreError(
                f"{len(rejected)} of {len(events)} events could not be stored in {self.location}: {rejected[0]}",
                "the collector produced malformed events; please report this",
                lost=len(rejected),
            )

    def prune(self, now: datetime | None = None) -> int:
        """Apply retention (age, then row count) now; returns how many events were deleted.

        Deletes in chunks of :data:`PRUNE_CHUNK` rows, one transaction each, so the collector's
        writes are never held up for long.
        """
        cutoff = None
        if self.retention_seconds is not None:
            cutoff = time_to_ns(now or utcnow()) - int(self.retention_seconds * 1e9)
        deleted = 0
        try:
            while True:
                removed = self._prune_chunk(cutoff)
                deleted += removed
                if removed < PRUNE_CHUNK:
                    break
        finally:
            self._since_prune = 0
            self._last_prune = time.monotonic()
        if deleted:
            logger.debug("event store %s: pruned %d events", self.location, deleted)
        return deleted

    def _prune_chunk(self, cutoff: int | None) -> int:
        with self._write_lock:
            if self._closed or self.readonly:
                return 0
            conn = self._writer
            removed = 0
            record: PruneRecord = {}  # kind -> (rows deleted, highest t they can have)

            def note(kind: int, n: int, highest: int) -> None:
                before = record.get(kind, (0, highest))
                record[kind] = (before[0] + n, max(before[1], highest))
                conn.execute("UPDATE kind_counts SET n = n - ? WHERE kind = ?", (n, kind))

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
                            note(kind, n, cutoff - 1)
                            removed += n
                if self.max_rows is not None and removed < PRUNE_CHUNK:
                    total = conn.execute("SELECT coalesce(sum(n), 0) FROM kind_counts").fetchone()[0]
                    excess = min(total - self.max_rows, PRUNE_CHUNK - removed)
                    if excess > 0:
                        # The oldest by insertion order go first (a rowid range: cheap to find and delete).
                        boundary = conn.execute(
                            "SELECT seq FROM events ORDER BY seq LIMIT 1 OFFSET ?", (excess - 1,)
                        ).fetchone()[0]
                        per_kind = conn.execute(
                            "SELECT kind, count(*), max(t) FROM events WHERE seq <= ? GROUP BY kind", (boundary,)
                        ).fetchall()
                        conn.execute("DELETE FROM events WHERE seq <= ?", (boundary,))
                        for kind, n, highest in per_kind:
                            note(kind, n, highest)
                            removed += n
                if removed:
                    # Readers' window tallies learn of the deletion through this serial and the record.
                    bumped = conn.execute(
                        "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'prunes' RETURNING value"
                    ).fetchone()
                    if bumped is not None:
                        serial = int(bumped[0])
                        self._prune_records[serial] = record  # before COMMIT: known before the serial is seen
                        self._prune_records.pop(serial - PRUNE_RECORDS, None)
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StoreError(
                    f"cannot prune the event store {self.location}: {_one_line(exc)}",
                    "free disk space or choose another store file",
                ) from exc
            return removed

    # --- reading -------------------------------------------------------------------

    def query(self, q: EventQuery) -> EventPage:
        """Events matching ``q``, newest first (equal times in insertion order), and how many matched."""
        limit = max(0, q.limit)
        since_ns = time_to_ns(q.since) if q.since is not None else None
        until_ns = time_to_ns(q.until) if q.until is not None else None
        where, params, index = _where(q.kind, q.pid, q.command, since_ns, until_ns)
        with self._snapshot() as conn:
            rows = conn.execute(
                f"SELECT b.json FROM events INDEXED BY {index} CROSS JOIN bodies b ON b.seq = events.seq "
                f"WHERE {where} ORDER BY t DESC, ts DESC, events.seq LIMIT ?",
                (*params, limit),
            ).fetchall()
            if len(rows) < limit:
                total = len(rows)
            elif q.pid is None and q.command is None:
                total = self._count_range(conn, _KIND_CODE[q.kind], since_ns, until_ns)
            else:
                sql = f"SELECT count(*) FROM events INDEXED BY {index} WHERE {where}"
                total = conn.execute(sql, params).fetchone()[0]
        events = [_EVENT_JSON.validate_json(r[0]) for r in rows]
        return EventPage(events=events, total_count=total, truncated=total > len(events))

    def count(
        self,
        kind: EventKind,
        pid: int | None,
        command: str | None,
        window_seconds: float,
        now: datetime | None = None,
    ) -> int:
        """Events of ``kind`` with ``now - window < time <= now``.

        Asked again for the same window, only what changed since is counted (see store/window.py).
        """
        now = now or utcnow()
        since_ns, until_ns = time_to_ns(now - timedelta(seconds=window_seconds)), time_to_ns(now)
        return self._windows.count(self._snapshot, Subject(kind, pid, command), window_seconds, since_ns, until_ns)

    def _count_subject(self, conn: sqlite3.Connection, subject: Subject, since_ns: int, until_ns: int) -> int:
        """Events of ``subject`` with ``since < t <= until``, counted from scratch."""
        if subject.pid is None and subject.command is None:
            return self._count_range(conn, subject.code, since_ns, until_ns)
        where, params, index = _where(subject.kind, subject.pid, subject.command, since_ns, until_ns)
        sql = f"SELECT count(*) FROM events INDEXED BY {index} WHERE {where}"
        return int(conn.execute(sql, params).fetchone()[0])

    @staticmethod
    def _count_range(conn: sqlite3.Connection, kind: int, since_ns: int | None, until_ns: int | None) -> int:
        """Events of ``kind`` with ``since < t <= until`` (None: unbounded), in one snapshot.

        SQLite counts by walking the index, so a window holding most of a big store is counted
        as the kind's total (kept in ``kind_counts``) minus the few events outside it.
        """
        total = conn.execute("SELECT n FROM kind_counts WHERE kind = ?", (kind,)).fetchone()[0]
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

    def stats(
        self,
        kind: EventKind,
        pid: int | None,
        command: str | None,
        window_seconds: int,
        top_n: int = 10,
        buckets: int = 60,
        now: datetime | None = None,
    ) -> WindowStats:
        """The same :class:`WindowStats` as ``analysis.aggregate.aggregate``.

        The first call for a window tallies every event in it; asked again (the dashboard polls),
        only the events that left or entered the window since are read (see store/window.py).
        """
        now = now or utcnow()
        since_ns, until_ns = time_to_ns(now - timedelta(seconds=window_seconds)), time_to_ns(now)
        # An in-memory store's reader holds the write lock: a window tallied from scratch lets the
        # collector in between chunks. A file store's readers never hold off its writer (WAL).
        breathe = self._breathe if self.path is None else None
        return self._windows.stats(
            self._snapshot, Subject(kind, pid, command), window_seconds, now, since_ns, until_ns, top_n, buckets,
            breathe,
        )

    def newest_time(self) -> datetime | None:
        """Wall-clock time of the newest stored event, or None when the store is empty."""
        with self._snapshot() as conn:
            values = [
                row[0]
                for kind in (0, 1)
                if (row := conn.execute("SELECT max(t) FROM events WHERE kind = ?", (kind,)).fetchone())[0] is not None
            ]
        return ns_to_time(max(values)) if values else None

    def row_count(self) -> int:
        """How many events are stored."""
        with self._snapshot() as conn:
            return int(conn.execute("SELECT coalesce(sum(n), 0) FROM kind_counts").fetchone()[0])

    def close(self) -> None:
        """Close every connection (idempotent); later reads and writes raise :class:`StoreError`."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            self._windows.clear()
            # Idle read connections close now; ones in use close when their reader hands them back.
            while True:
                try:
                    conn = self._readers.get_nowait()
                except queue.Empty:
                    break
                conn.close()
            self._writer.close()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
