"""Raw eBPF events as chunks: one SQLite row per batch of ring records, not one per event.

The eBPF collector hands the store ring records (``collector/ebpf/programs.RECORD``, 120 bytes
each); they are stored as they came, concatenated, one row per kind and write: no decoding, no
per-event index entries, on the ingest path. Readers decode only what a list asks for, with
numpy (time, pid and command masks over the records), and build models for the page alone.

A record keeps its place in the store's insertion order: a chunk starting at ``seq`` holds the
records ``seq .. seq + n - 1``. A TCP connect still in progress when stored (``F_PENDING``) gets
its outcome from ``resolved`` (the kernel's OUTCOME record for its socket, at or after its start).
Each resolution is numbered (``at``, one number per write): a reader that holds such a connect
asks for the resolutions after the number it last saw (:func:`resolved_since`), not for the
window again.
"""

from __future__ import annotations

import bisect
import errno
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from netspy_tui.collector.ebpf import programs as P
from netspy_tui.models import outcome_for_return_code

SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    seq   INTEGER PRIMARY KEY,   -- insertion order of its first record (the others follow it)
    kind  INTEGER NOT NULL,      -- 0 connection, 1 packet_drop
    n     INTEGER NOT NULL,      -- records in it
    t_lo  INTEGER NOT NULL,      -- wall-clock ns of its oldest and newest record
    t_hi  INTEGER NOT NULL,
    recs  BLOB    NOT NULL       -- n ring records, in ring order
);
CREATE INDEX IF NOT EXISTS chunks_time ON chunks (kind, t_hi, t_lo, n);
CREATE TABLE IF NOT EXISTS resolved (
    key     INTEGER NOT NULL,    -- socket of a connect stored while in progress (signed 64 bits)
    t       INTEGER NOT NULL,    -- wall-clock ns of the connect it resolves
    outcome TEXT    NOT NULL,
    PRIMARY KEY (key, t)
) WITHOUT ROWID;
"""

#: Records per chunk at most (one write makes several when it has more).
CHUNK_RECORDS = 16384
_INSERT = "INSERT INTO chunks (seq, kind, n, t_lo, t_hi, recs) VALUES (?, ?, ?, ?, ?, ?)"
_RESOLVE = "INSERT OR REPLACE INTO resolved (key, t, outcome, at) VALUES (?, ?, ?, ?)"
#: store kind code -> ring record kind
_RECORD_KIND = {0: P.KIND_CONNECT, 1: P.KIND_DROP}
_SIGN = 1 << 63
#: sockets looked up in ``resolved`` per query (well under SQLite's limit on parameters)
_KEYS_PER_QUERY = 500


def upgrade(conn: sqlite3.Connection) -> None:
    """Number the resolutions (``at``: which write stored it) in a file written before they were: its
    resolutions count as written before any reader's cursor (0)."""
    columns = {r[1] for r in conn.execute("PRAGMA table_info(resolved)")}
    if "at" not in columns:
        conn.execute("ALTER TABLE resolved ADD COLUMN at INTEGER NOT NULL DEFAULT 0")
    conn.execute("CREATE INDEX IF NOT EXISTS resolved_at ON resolved (at)")


def resolution_cursor(conn: sqlite3.Connection) -> int:
    """The number of the newest write of resolutions (0: none)."""
    return int(conn.execute("SELECT max(at) FROM resolved").fetchone()[0] or 0)


def signed(key: int) -> int:
    """A u64 socket key as SQLite's signed integer."""
    return key - (1 << 64) if key >= _SIGN else key


def rows(recs: np.ndarray, first_seq: int) -> list[tuple[int, int, int, int, int, memoryview]]:
    """CONNECT and DROP records -> chunk rows ``(seq, kind, n, t_lo, t_hi, blob)``, numbered from
    ``first_seq`` in the order given (connects first, then drops). ``blob``: a view of the records' bytes
    (SQLite copies it when the row is inserted)."""
    out = []
    seq = first_seq
    # each record as one opaque value: split by kind, a record is copied as bytes, not field by field
    whole = np.ascontiguousarray(recs).view(P.RECORD_BYTES)
    kinds = recs["kind"]
    for code, kind in _RECORD_KIND.items():
        part = whole[kinds == kind]
        for i in range(0, len(part), CHUNK_RECORDS):
            piece = part[i : i + CHUNK_RECORDS]
            wall = piece.view(P.RECORD)["wall"].astype(np.int64)
            out.append((seq, code, len(piece), int(wall.min()), int(wall.max()), memoryview(piece.view(np.uint8))))
            seq += len(piece)
    return out


def write(conn: sqlite3.Connection, chunk_rows: list[tuple[int, int, int, int, int, memoryview]],
          outcomes: np.ndarray | None, name: Callable[[int], str], at: int = 0) -> None:  # fmt: skip
    """Insert chunks and the outcomes of OUTCOME records (``name``: result code -> outcome), numbered ``at``."""
    if chunk_rows:
        conn.executemany(_INSERT, chunk_rows)
    if outcomes is not None and len(outcomes):
        keys, walls, results = outcomes["key"].tolist(), outcomes["wall"].tolist(), outcomes["result"].tolist()
        conn.executemany(_RESOLVE, [(signed(k), w, name(r), at) for k, w, r in zip(keys, walls, results,
                                                                                      strict=True)])  # fmt: skip


def records(blob: bytes) -> np.ndarray:
    """A chunk's records (read-only view)."""
    return np.frombuffer(blob, P.RECORD)


class Match:
    """Which records a list wants: of ``kind``, ``pid``, ``command`` (decoded by ``command_of``),
    with ``since < wall <= until`` (ns; None unbounded), stored after ``after`` (a seq; None: any); and with
    ``tie`` ``(until, ts, seq)``, of those at ``until`` only the ones a list orders after that one (``ts``
    smaller, or the same and stored later)."""

    def __init__(self, kind: int, pid: int | None, command: str | None, since: int | None, until: int | None,
                 command_of: Callable[[bytes], str], after: int | None = None,
                 tie: tuple[int, int, int] | None = None) -> None:  # fmt: skip
        self.kind, self.pid, self.command = kind, pid, command
        self.after, self.tie = after, tie
        self.since = since if since is not None else -(2**63)
        self.until = until if until is not None else 2**63 - 1
        self._command_of = command_of
        raw = command.encode("utf-8", "surrogateescape") if command is not None else None
        self._raw = raw if raw is not None and len(raw) < 16 and b"\0" not in raw and "\ufffd" not in command else None  # type: ignore[operator]

    @property
    def filtered(self) -> bool:
        return self.pid is not None or self.command is not None

    def mask(self, recs: np.ndarray, t_lo: int, t_hi: int) -> np.ndarray | None:
        """The records of a chunk that match (None: all of them)."""
        mask = None
        if t_lo <= self.since or t_hi > self.until:
            wall = recs["wall"].astype(np.int64)
            mask = (wall > self.since) & (wall <= self.until)
        if self.pid is not None:
            m = recs["pid"] == self.pid
            mask = m if mask is None else mask & m
        if self.command is not None:
            comms = recs["comm"]
            if self._raw is not None:  # (the kernel pads comm with zeros: compare the bytes)
                m = comms == self._raw
            else:  # not valid UTF-8 as stored: compare what each distinct comm decodes to
                wanted = [c for c in np.unique(comms).tolist() if self._command_of(c) == self.command]
                m = np.isin(comms, wanted) if wanted else np.zeros(len(recs), bool)
            mask = m if mask is None else mask & m
        return mask

    def after_mask(self, first: int, n: int) -> np.ndarray | None:
        """Which of a chunk's ``n`` records (seqs from ``first``) were stored after :attr:`after` (None: all)."""
        if self.after is None or first > self.after:
            return None
        return np.arange(first, first + n) > self.after

    def whole(self, first: int, t_hi: int) -> bool:
        """Whether neither :attr:`after` nor :attr:`tie` leaves out any record of the chunk ``first``."""
        return (self.after is None or first > self.after) and (self.tie is None or t_hi < self.tie[0])

    def select(self, recs: np.ndarray, first: int, t_lo: int, t_hi: int) -> np.ndarray | None:
        """The records of the chunk ``first`` a list wants: :meth:`mask`, :meth:`after_mask` and :meth:`tie_mask`
        (None: all of them)."""
        return _and(_and(self.mask(recs, t_lo, t_hi), self.after_mask(first, len(recs))),
                    self.tie_mask(recs, first, t_hi))  # fmt: skip

    def tie_mask(self, recs: np.ndarray, first: int, t_hi: int) -> np.ndarray | None:
        """Which of a chunk's records (seqs from ``first``) a list orders after :attr:`tie` (None: all)."""
        if self.tie is None or t_hi < self.tie[0]:
            return None
        t, ts, seq = self.tie
        stamps = recs["ts"].astype(np.int64)
        after: np.ndarray = (stamps == ts) & (np.arange(first, first + len(recs)) > seq)
        return (recs["wall"].astype(np.int64) < t) | (stamps < ts) | after

    def chunks(self, conn: sqlite3.Connection, newest_first: bool = True) -> Iterator[tuple[Any, ...]]:
        """``(seq, n, t_lo, t_hi)`` of the chunks that may hold matching records."""
        order = "DESC" if newest_first else "ASC"
        after = " AND seq + n - 1 > ?" if self.after is not None else ""
        yield from conn.execute(
            "SELECT seq, n, t_lo, t_hi FROM chunks INDEXED BY chunks_time WHERE kind = ? AND t_hi > ? AND t_lo <= ?"
            f"{after} ORDER BY t_hi {order}",
            (self.kind, self.since, self.until, *(() if self.after is None else (self.after,))),
        )


def join(parts: list[np.ndarray]) -> np.ndarray:
    """Record arrays joined as raw bytes (numpy's structured concatenation drops the padding)."""
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p.view(f"V{P.RECORD_SIZE}") for p in parts]).view(P.RECORD)


def _and(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    return b if a is None else a if b is None else a & b


def _blob(conn: sqlite3.Connection, seq: int) -> bytes:
    return conn.execute("SELECT recs FROM chunks WHERE seq = ?", (seq,)).fetchone()[0]


def newest_cut(times: np.ndarray, limit: int) -> tuple[int, np.ndarray]:
    """For a page of the ``limit`` newest of more than ``limit`` held: the time of the ``limit``-th newest
    (a block or chunk all older than it holds none of the page) and which of ``times`` are kept (ties too)."""
    kth = int(np.partition(times, len(times) - limit)[len(times) - limit])
    return kth, times >= kth


def page(conn: sqlite3.Connection, match: Match, limit: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """The ``limit`` newest matching records (newest first; equal times by ``ts`` descending, then
    insertion order), their seqs, and whether more may match beyond them."""
    got: list[np.ndarray] = []
    seqs: list[np.ndarray] = []
    held = 0
    kth: int | None = None  # the wall of the limit-th newest held so far
    more = False
    for seq, _, t_lo, t_hi in match.chunks(conn):
        if limit <= 0:
            more = True
            break
        if kth is not None and t_hi < kth:
            more = True
            break
        recs = records(_blob(conn, seq))
        mask = match.select(recs, seq, t_lo, t_hi)
        idx = np.arange(len(recs)) if mask is None else np.flatnonzero(mask)
        if not len(idx):
            continue
        got.append(P.pick(recs, idx))
        seqs.append(seq + idx)
        held += len(idx)
        if held > limit:
            kth, keep = newest_cut(np.concatenate([g["wall"] for g in got]).astype(np.int64), limit)
            if not keep.all():
                more = True
            allr, alls = join(got)[keep], np.concatenate(seqs)[keep]
            got, seqs, held = [allr], [alls], len(allr)
        elif held == limit:
            kth = int(min(g["wall"].min() for g in got))
    if not got:
        return np.empty(0, P.RECORD), np.empty(0, np.int64), more
    recs, seq_all = join(got), np.concatenate(seqs)
    order = np.lexsort((seq_all, -recs["ts"].astype(np.int64), -recs["wall"].astype(np.int64)))[:limit]
    return P.pick(recs, order), seq_all[order], more or held > limit


def count(conn: sqlite3.Connection, match: Match) -> int:
    """Matching records stored (whole chunks inside the range are counted without reading them)."""
    total = 0
    for seq, n, t_lo, t_hi in match.chunks(conn):
        if not match.filtered and t_lo > match.since and t_hi <= match.until and match.whole(seq, t_hi):
            total += n
            continue
        recs = records(_blob(conn, seq))
        mask = match.select(recs, seq, t_lo, t_hi)
        total += len(recs) if mask is None else int(np.count_nonzero(mask))
    return total


def outcomes_of(conn: sqlite3.Connection, recs: np.ndarray) -> list[str | None]:
    """The resolved outcome of each record stored while its connect was in progress (None: not
    pending, or not resolved yet): the first resolved at or after its start for its socket. One query
    per :data:`_KEYS_PER_QUERY` sockets, not one per record (a host's connects are mostly non-blocking:
    in progress when stored)."""
    out: list[str | None] = [None] * len(recs)
    pending = np.flatnonzero((recs["flags"] & P.F_PENDING) != 0)
    keys = [signed(k) for k in recs["key"][pending].tolist()]
    unique = sorted(set(keys))
    found: dict[int, list[tuple[int, str]]] = {}
    for i in range(0, len(unique), _KEYS_PER_QUERY):
        part = unique[i : i + _KEYS_PER_QUERY]
        sql = f"SELECT key, t, outcome FROM resolved WHERE key IN ({','.join('?' * len(part))}) ORDER BY key, t"  # noqa: S608 - placeholders only
        for key, t, outcome in conn.execute(sql, part):
            found.setdefault(key, []).append((t, outcome))
    codes = recs["code"][pending].tolist()
    for i, key, wall, code in zip(pending.tolist(), keys, recs["wall"][pending].tolist(), codes, strict=True):
        resolved = found.get(key)
        if resolved and (j := bisect.bisect_left(resolved, (wall,))) < len(resolved):  # (the first at t >= wall)
            out[i] = _settled(resolved[j][1], code)
    return out


#: connect() return codes that say the call did not end the handshake (it goes on, or was interrupted)
#: (and the kernel's restart codes, 512-516, that a call interrupted by a signal can return at its exit tracepoint)
_UNSETTLED_CODES = frozenset({0, -errno.EINPROGRESS, -errno.EALREADY, -errno.EINTR, -errno.EAGAIN, -512, -513, -514,
                              -516})  # fmt: skip


def _settled(outcome: str, code: int) -> str:
    """A resolved outcome the kernel could not tell (``unknown``: the socket was freed with its error already taken,
    or ``aborted``) of a connect whose own call returned the handshake's error (a blocking connect that returned
    ETIMEDOUT, ECONNREFUSED ...): that error's outcome, as the call saw it."""
    if outcome in ("unknown", "aborted") and code < 0 and code not in _UNSETTLED_CODES:
        return outcome_for_return_code(code)
    return outcome


#: resolutions read per call of :func:`resolved_since` at most (a write's are read whole)
RESOLVED_PER_READ = 20_000


def resolved_since(conn: sqlite3.Connection, match: Match, upto: int, since_at: int,
                   most: int = RESOLVED_PER_READ) -> tuple[np.ndarray, np.ndarray, int]:  # fmt: skip
    """The connects stored in progress at or before seq ``upto`` (and matching ``match``: its kind, pid, command
    and times) whose outcome was resolved after write number ``since_at``; their seqs; and the number to ask
    after next time. Reads the resolutions after ``since_at`` (up to about ``most``, whole writes) through their
    index, then only the chunks that hold one of their connects (by time), not the window."""
    rows = conn.execute("SELECT key, t, at FROM resolved INDEXED BY resolved_at WHERE at > ? ORDER BY at LIMIT ?",
                        (since_at, most + 1)).fetchall()  # fmt: skip
    empty = np.empty(0, P.RECORD), np.empty(0, np.int64)
    if not rows:
        return *empty, since_at
    if len(rows) > most:  # (cut before the last write read: it may have more; one write is read whole)
        last = rows[-1][2]
        kept = [r for r in rows if r[2] != last]
        rows = kept or conn.execute("SELECT key, t, at FROM resolved WHERE at = ?", (last,)).fetchall()
    cursor = rows[-1][2]
    wanted = {(k, t) for k, t, _ in rows if match.since < t <= match.until}
    if not wanted:
        return *empty, cursor
    times = sorted({t for _, t in wanted})
    lo, hi = times[0], times[-1]
    got: list[np.ndarray] = []
    seqs: list[np.ndarray] = []
    for seq, n, t_lo, t_hi in conn.execute(
        "SELECT seq, n, t_lo, t_hi FROM chunks INDEXED BY chunks_time WHERE kind = ? AND t_hi >= ? AND t_lo <= ? "
        "AND seq <= ?",
        (match.kind, lo, hi, upto),
    ).fetchall():
        i = bisect.bisect_left(times, t_lo)
        if i >= len(times) or times[i] > t_hi:
            continue  # (no resolved connect started in this chunk's span)
        recs = records(_blob(conn, seq))
        pending: np.ndarray = (recs["flags"] & P.F_PENDING) != 0
        wanted_mask = match.mask(recs, t_lo, t_hi)
        mask = pending if wanted_mask is None else wanted_mask & pending
        mask = mask & np.isin(recs["wall"].astype(np.int64), times) & (np.arange(seq, seq + n) <= upto)
        idx = [
            i for i in np.flatnonzero(mask).tolist() if (signed(int(recs["key"][i])), int(recs["wall"][i])) in wanted
        ]
        if idx:
            got.append(P.pick(recs, np.array(idx)))
            seqs.append(seq + np.array(idx, np.int64))
    if not got:
        return *empty, cursor
    return join(got), np.concatenate(seqs), cursor


def after(conn: sqlite3.Connection, seq: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``limit`` records stored after ``seq``, in insertion order, with their seqs."""
    got: list[np.ndarray] = []
    seqs: list[np.ndarray] = []
    held = 0
    for first, _, blob in conn.execute(
        "SELECT seq, n, recs FROM chunks WHERE seq > ? AND seq + n > ? ORDER BY seq", (seq - CHUNK_RECORDS, seq + 1)
    ):
        if held >= limit:
            break
        start = max(0, seq + 1 - first)
        recs = records(blob)[start : start + limit - held]
        got.append(recs)
        seqs.append(first + start + np.arange(len(recs)))
        held += len(recs)
    if not got:
        return np.empty(0, P.RECORD), np.empty(0, np.int64)
    return join(got), np.concatenate(seqs)


def prune_age(conn: sqlite3.Connection, cutoff: int, limit: int) -> list[tuple[int, int]]:
    """Delete up to about ``limit`` records' worth of whole chunks all older than ``cutoff`` (ns);
    returns ``(kind, records deleted)`` per chunk deleted. A chunk with a record at or after the
    cutoff stays whole until that record is old too."""
    gone = conn.execute("SELECT seq, kind, n FROM chunks INDEXED BY chunks_time WHERE kind IN (0, 1) AND t_hi < ? "
                        "ORDER BY seq", (cutoff,)).fetchall()  # fmt: skip
    out: list[tuple[int, int]] = []
    held = 0
    for seq, kind, n in gone:
        if held >= limit:
            break
        conn.execute("DELETE FROM chunks WHERE seq = ?", (seq,))
        out.append((kind, n))
        held += n
    if out:
        conn.execute("DELETE FROM resolved WHERE t < ?", (cutoff - 600 * 1_000_000_000,))
    return out


def prune_oldest(conn: sqlite3.Connection, excess: int) -> list[tuple[int, int]]:
    """Delete the ``excess`` oldest records (insertion order; the last chunk touched keeps its
    newer records); returns ``(kind, records deleted)`` per chunk touched."""
    out: list[tuple[int, int]] = []
    for seq, kind, n in conn.execute("SELECT seq, kind, n FROM chunks ORDER BY seq").fetchall():
        if excess <= 0:
            break
        if n <= excess:
            conn.execute("DELETE FROM chunks WHERE seq = ?", (seq,))
            out.append((kind, n))
            excess -= n
            continue
        recs = records(_blob(conn, seq))[excess:]
        wall = recs["wall"].astype(np.int64)
        conn.execute("UPDATE chunks SET seq = ?, n = ?, t_lo = ?, t_hi = ?, recs = ? WHERE seq = ?",
                     (seq + excess, len(recs), int(wall.min()), int(wall.max()), recs.tobytes(), seq))  # fmt: skip
        out.append((kind, excess))
        excess = 0
    return out
