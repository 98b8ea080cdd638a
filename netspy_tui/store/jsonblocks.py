"""Raw events as blocks of JSON: one SQLite row per write and kind (per :data:`BLOCK_EVENTS` of them), not one
indexed row per event.

Events a writer stores as their JSON rows (the aggregator's ingest, :meth:`EventStore.add_rows`) are kept
in blocks: per block the events' JSON concatenated (each exactly the body an ``events`` row would hold),
and beside it the columns a list filters and orders by (time, timestamp, pid, the command as an index
into the block's distinct commands, where each body ends), as a little-endian array. Writing a block is
one row and one index entry, whatever the number of events in it; reading decodes the columns with numpy
and slices out only the bodies a page keeps.

The bodies are kept compressed (zstd, in frames of :data:`FRAME_EVENTS` events: reading a few events of a
block decompresses only their frames). An aggregator's ingest wrote ~650 bytes of JSON an event, and
committing them was a third to half of what its storing thread spent in SQLite: compressed, a tenth of the bytes go
through the page cache, the WAL and the checkpoints (measured with the fleet bench's events: 24.6 → 21.7 µs
of the storing thread an event, 90 → 30 MB of store per 100,000 events). Blocks written before (their
bodies the JSON itself) are read as they are.

An event stored in progress (a connect an agent forwarded before its outcome) may be replaced by the same
event with its outcome (:func:`find`, :func:`replace`): its body in its block, numbered in ``json_resolved`` so
that a reader that listed it asks for the ones replaced since (:func:`resolved_since`).

An event keeps its place in the store's insertion order: a block starting at ``seq`` holds the events
``seq .. seq + n - 1`` (the same numbering as ``events`` rows and ``chunks`` records). Lists, counts,
reads in order and retention answer from blocks exactly as from rows: :mod:`netspy_tui.store.sqlite`
merges the three.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import struct
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

try:  # Python 3.14's standard library; before it, its backport (the same module)
    from compression import zstd  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover (Python < 3.14)
    from backports import zstd  # type: ignore[import-not-found,no-redef,unused-ignore]

from netspy_tui.store.chunks import newest_cut

SCHEMA = """
CREATE TABLE IF NOT EXISTS json_blocks (
    seq      INTEGER PRIMARY KEY,   -- insertion order of its first event (the others follow it)
    kind     INTEGER NOT NULL,      -- 0 connection, 1 packet_drop
    n        INTEGER NOT NULL,      -- events in it
    t_lo     INTEGER NOT NULL,      -- wall-clock ns of its oldest and newest event
    t_hi     INTEGER NOT NULL,
    cols     BLOB    NOT NULL,      -- n x COLUMNS: t, ts, pid, command (index into commands), end of body
    commands TEXT    NOT NULL,      -- the distinct commands, a JSON list
    bodies   BLOB    NOT NULL       -- the n events' JSON, concatenated in order
);
CREATE INDEX IF NOT EXISTS json_blocks_time ON json_blocks (kind, t_hi, t_lo, n);
CREATE TABLE IF NOT EXISTS json_resolved (
    seq INTEGER PRIMARY KEY,        -- a stored event replaced by a newer version of itself (a connect's outcome)
    at  INTEGER NOT NULL            -- the writer's number for that write (the aggregator: the fleet's position)
);
CREATE INDEX IF NOT EXISTS json_resolved_at ON json_resolved (at);
"""

#: one event's columns in a block
COLUMNS = np.dtype([("t", "<i8"), ("ts", "<i8"), ("pid", "<i8"), ("cmd", "<i4"), ("end", "<i8")])
#: events per block at most (a write makes several when it has more). A page of the newest events (a dashboard's
#: poll of an aggregator: 1,000 of each node's newest) reads its blocks' bodies whole: at 16,384 a block was a whole
#: ingest batch (~2 MB of JSON for 1,000 events of it), a page over 3 nodes 14 ms of reading; at 1,024, 4.6 ms
BLOCK_EVENTS = 1024
#: the most events a block of any version holds (16,384 before 2026-12-05): how far back a block holding a given
#: event may start
MAX_BLOCK_EVENTS = 16384
#: a block is read whole when at least 1/_WHOLE_BLOCK of its events are wanted, else event by event
_WHOLE_BLOCK = 8
_INSERT = "INSERT INTO json_blocks (seq, kind, n, t_lo, t_hi, cols, commands, bodies) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
#: (seq, kind, n, t_lo, t_hi, cols, commands, bodies)
Row = tuple[int, int, int, int, int, bytes, str, bytes]
_I64 = (-(2**63), 2**63 - 1)
#: events a compressed frame of a block's bodies holds (~40 KB of JSON: ~20-40 µs to decompress one)
FRAME_EVENTS = 64
#: zstd's level 1 (~400-600 MB/s here, ~10 times smaller for this JSON; higher levels cost more for little more)
ZSTD_LEVEL = 1
#: what a block's compressed bodies start with, then the number of frames and where each ends (uint32s,
#: little-endian), then the frames. JSON bodies (blocks written before 2026-12-07) start with an event's ``{``.
PACKED = b"\x00zs1"
_COUNT = struct.Struct("<I")
_compressors = threading.local()  # (a compressor made once a thread: ~10 µs a frame less than zstd.compress)


def _pack(body: bytes, ends: np.ndarray) -> bytes:
    """``body`` (the events' JSON, concatenated; ``ends``: where each ends) in frames of :data:`FRAME_EVENTS`
    events, each compressed on its own (see :data:`PACKED`)."""
    compressor = getattr(_compressors, "zstd", None)
    if compressor is None:
        compressor = _compressors.zstd = zstd.ZstdCompressor(level=ZSTD_LEVEL)
    bounds = [0, *ends[FRAME_EVENTS - 1 : len(ends) - 1 : FRAME_EVENTS].tolist(), len(body)]
    view = memoryview(body)
    frames = [compressor.compress(view[a:b], mode=compressor.FLUSH_FRAME) for a, b in itertools.pairwise(bounds)]
    offsets = np.cumsum([len(f) for f in frames], dtype="<u4")
    return b"".join([PACKED, _COUNT.pack(len(frames)), offsets.tobytes(), *frames])


def _plain(bodies: bytes) -> bytes:
    """A block's bodies as the events' JSON, concatenated (compressed or not)."""
    if not bodies.startswith(PACKED):
        return bodies
    (frames,) = _COUNT.unpack_from(bodies, len(PACKED))
    return zstd.decompress(memoryview(bodies)[len(PACKED) + 4 + 4 * frames :]) if frames else b""


class _Reader:
    """One block's bodies, read an event at a time: from the whole value (``bytes``) or from SQLite's blob handle
    (only the bytes wanted read: a block's bodies are hundreds of KB); a compressed frame is decompressed once."""

    def __init__(self, source: bytes | sqlite3.Blob, ends: list[int]) -> None:
        self.source, self.ends = source, ends
        self.packed = self._read(0, len(PACKED)) == PACKED
        if self.packed:
            (frames,) = _COUNT.unpack(self._read(len(PACKED), 4))
            self.offsets = [0, *np.frombuffer(self._read(len(PACKED) + 4, 4 * frames), "<u4").tolist()]
            self.base = len(PACKED) + 4 + 4 * frames
            self.frames: dict[int, bytes] = {}

    def _read(self, at: int, size: int) -> bytes:
        if isinstance(self.source, bytes):
            return self.source[at : at + size]
        self.source.seek(at)
        return self.source.read(size)

    def event(self, i: int) -> bytes:
        """The ``i``-th event's JSON."""
        ends = self.ends
        start = ends[i - 1] if i else 0
        if not self.packed:
            return self._read(start, ends[i] - start)
        k = i // FRAME_EVENTS
        frame = self.frames.get(k)
        if frame is None:
            at, upto = self.offsets[k], self.offsets[k + 1]
            frame = self.frames[k] = zstd.decompress(self._read(self.base + at, upto - at))
        origin = ends[k * FRAME_EVENTS - 1] if k else 0
        return frame[start - origin : ends[i] - origin]

    def close(self) -> None:
        if not isinstance(self.source, bytes):
            self.source.close()


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body


def _block(seq: int, kind: int, part: Sequence[tuple[Any, ...]]) -> Row:
    _, t, ts, pid, command, _, texts = zip(*part, strict=True)
    bodies = [_as_bytes(b) for b in texts] if not all(type(b) is bytes for b in texts) else texts
    commands: dict[str, int] = {}
    cols = np.empty(len(part), COLUMNS)
    cols["t"] = t  # (OverflowError beyond 64 bits: the caller stores rows instead)
    cols["ts"] = ts
    cols["pid"] = pid
    cols["cmd"] = [commands.setdefault(c, len(commands)) for c in command]
    cols["end"] = np.cumsum(list(map(len, bodies)))
    return (seq, kind, len(part), int(cols["t"].min()), int(cols["t"].max()), cols.tobytes(),
            json.dumps(list(commands)), _pack(b"".join(bodies), cols["end"]))  # fmt: skip


def rows(raw: Sequence[tuple[Any, ...]], first_seq: int) -> list[Row]:
    """Raw event rows ``(kind, t, ts, pid, command, outcome, JSON)`` -> block rows numbered from ``first_seq``
    (connections first, then drops; each in the order given). Raises OverflowError (or TypeError) for a
    value a block cannot hold."""
    out = []
    seq = first_seq
    for kind in (0, 1):
        part = [r for r in raw if r[0] == kind]
        for i in range(0, len(part), BLOCK_EVENTS):
            piece = part[i : i + BLOCK_EVENTS]
            out.append(_block(seq, kind, piece))
            seq += len(piece)
    return out


#: what :func:`rows` raises for a value a block cannot hold
ROW_ERRORS = (OverflowError, TypeError, ValueError)


def renumbered(block_rows: Sequence[Row], first_seq: int) -> list[Row]:
    """Block rows :func:`rows` numbered from 0, numbered from ``first_seq``."""
    return [(first_seq + row[0], *row[1:]) for row in block_rows]


#: where a raw event row ``(kind, t, ts, pid, command, outcome, JSON)`` holds its JSON: a row cut there has none
BODY = 6


def bodiless(raw: Sequence[tuple[Any, ...]]) -> bool:
    """Whether ``raw``'s rows come without their JSON (cut at :data:`BODY`: their blocks hold it)."""
    return bool(raw) and len(raw[0]) == BODY


def with_bodies(raw: Sequence[tuple[Any, ...]], block_rows: Sequence[Row]) -> list[tuple[Any, ...]]:
    """Raw event rows without their JSON (``(kind, t, ts, pid, command, outcome)``), each with it again, from the
    blocks :func:`rows` made of them (in their order)."""
    bodies: dict[int, list[bytes]] = {0: [], 1: []}
    for block in block_rows:
        plain, ends = _plain(block[7]), columns(block[5])["end"].tolist()
        bodies[block[1]].extend(plain[a:b] for a, b in itertools.pairwise([0, *ends]))
    taken = {kind: iter(texts) for kind, texts in bodies.items()}
    return [(*row[:BODY], next(taken[row[0]])) for row in raw]


def write(conn: sqlite3.Connection, block_rows: list[Row]) -> None:
    conn.executemany(_INSERT, block_rows)


def columns(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, COLUMNS)


class Match:
    """Which events a list wants: of ``kind``, ``pid``, ``command``, with ``since < t <= until`` (ns; None
    unbounded), stored after ``after`` (a seq; None: any); and with ``tie`` ``(until, ts, seq)``, of those at
    ``until`` only the ones a list orders after that one (``ts`` smaller, or the same and stored later)."""

    def __init__(self, kind: int, pid: int | None, command: str | None, since: int | None, until: int | None,
                 after: int | None = None, tie: tuple[int, int, int] | None = None) -> None:  # fmt: skip
        self.kind, self.pid, self.command, self.after, self.tie = kind, pid, command, after, tie
        self.since = since if since is not None else _I64[0]
        self.until = until if until is not None else _I64[1]

    @property
    def filtered(self) -> bool:
        return self.pid is not None or self.command is not None

    def mask(self, seq: int, cols: np.ndarray, commands: str, t_lo: int, t_hi: int) -> np.ndarray | None:
        """The events of a block that match (None: all of them)."""
        mask = None
        if t_lo <= self.since or t_hi > self.until:
            t = cols["t"]
            mask = (t > self.since) & (t <= self.until)
        if self.pid is not None:
            m = cols["pid"] == self.pid
            mask = m if mask is None else mask & m
        if self.command is not None:
            names = json.loads(commands)
            index = names.index(self.command) if self.command in names else -1
            m = cols["cmd"] == index
            mask = m if mask is None else mask & m
        if self.after is not None and seq <= self.after:
            m = np.arange(seq, seq + len(cols)) > self.after
            mask = m if mask is None else mask & m
        if self.tie is not None and t_hi >= self.tie[0]:
            at_t, at_ts, at_seq = self.tie
            stamps = cols["ts"]
            m = (cols["t"] < at_t) | (stamps < at_ts) | ((stamps == at_ts) & (np.arange(seq, seq + len(cols)) > at_seq))
            mask = m if mask is None else mask & m
        return mask

    def whole(self, seq: int, t_hi: int) -> bool:
        """Whether neither :attr:`after` nor :attr:`tie` leaves out any event of the block ``seq``."""
        return (self.after is None or seq > self.after) and (self.tie is None or t_hi < self.tie[0])

    def blocks(self, conn: sqlite3.Connection) -> Iterator[tuple[Any, ...]]:
        """``(seq, n, t_lo, t_hi)`` of the blocks that may hold matching events, newest first."""
        after = " AND seq + n - 1 > ?" if self.after is not None else ""
        yield from conn.execute(
            "SELECT seq, n, t_lo, t_hi FROM json_blocks INDEXED BY json_blocks_time "
            f"WHERE kind = ? AND t_hi > ? AND t_lo <= ?{after} ORDER BY t_hi DESC",
            (self.kind, self.since, self.until, *(() if self.after is None else (self.after,))),
        )


def _read(conn: sqlite3.Connection, seq: int, what: str) -> Any:
    return conn.execute(f"SELECT {what} FROM json_blocks WHERE seq = ?", (seq,)).fetchone()  # noqa: S608


def page(conn: sqlite3.Connection, match: Match, limit: int) -> tuple[list[tuple[int, int, int, bytes]], bool]:
    """The ``limit`` newest matching events as ``(t, ts, seq, JSON)`` (newest first; equal times by ``ts``
    descending, then insertion order), and whether more may match beyond them."""
    ts_: list[np.ndarray] = []
    stamps: list[np.ndarray] = []
    seqs: list[np.ndarray] = []
    firsts: list[np.ndarray] = []  # the block each is in
    ends: dict[int, np.ndarray] = {}  # where each event's JSON ends in the bodies, by block
    held = 0
    kth: int | None = None  # the t of the limit-th newest held so far
    more = False
    for seq, n, t_lo, t_hi in match.blocks(conn):
        if limit <= 0:
            more = True
            break
        if kth is not None and t_hi < kth:
            more = True
            break
        blob, commands = _read(conn, seq, "cols, commands")
        cols = columns(blob)
        mask = match.mask(seq, cols, commands, t_lo, t_hi)
        idx = np.arange(n) if mask is None else np.flatnonzero(mask)
        if not len(idx):
            continue
        ts_.append(cols["t"][idx])
        stamps.append(cols["ts"][idx])
        seqs.append(seq + idx)
        firsts.append(np.full(len(idx), seq, np.int64))
        ends[seq] = cols["end"]
        held += len(idx)
        if held > limit:
            t_all = np.concatenate(ts_)
            kth, keep = newest_cut(t_all, limit)
            if not keep.all():
                more = True
            ts_, stamps = [t_all[keep]], [np.concatenate(stamps)[keep]]
            seqs, firsts = [np.concatenate(seqs)[keep]], [np.concatenate(firsts)[keep]]
            held = len(ts_[0])
        elif held == limit:
            kth = int(min(int(t.min()) for t in ts_))
    if not ts_:
        return [], more
    t_all, ts_all, seq_all = np.concatenate(ts_), np.concatenate(stamps), np.concatenate(seqs)
    order = np.lexsort((seq_all, -ts_all, -t_all))[:limit]
    more = more or held > limit
    t_all, ts_all, seq_all = t_all[order].tolist(), ts_all[order].tolist(), seq_all[order].tolist()
    bodies = _bodies(conn, seq_all, np.concatenate(firsts)[order].tolist(), ends)
    return [(t, ts, q, b) for t, ts, q, b in zip(t_all, ts_all, seq_all, bodies, strict=True)], more


def _bodies(
    conn: sqlite3.Connection, seqs: Sequence[int], firsts: Sequence[int], ends: dict[int, np.ndarray]
) -> list[bytes]:
    """The JSON of the events ``seqs`` (in that order) in the blocks starting at ``firsts`` (``ends``: where each
    event's JSON ends in its block's bodies): a block most of whose events are wanted is read once whole; from
    one of which only a few are (a page of the newest events, a dashboard's poll) just their bytes are read (a
    block's bodies are megabytes)."""
    wanted: dict[int, int] = {}
    for first in firsts:
        wanted[first] = wanted.get(first, 0) + 1
    held: dict[int, _Reader] = {}
    out = []
    try:
        for q, first in zip(seqs, firsts, strict=True):
            reader = held.get(first)
            if reader is None:
                block_ends = ends[first].tolist()
                if wanted[first] * _WHOLE_BLOCK >= len(block_ends):
                    reader = _Reader(_read(conn, first, "bodies")[0], block_ends)
                else:
                    reader = _Reader(conn.blobopen("json_blocks", "bodies", first, readonly=True), block_ends)
                held[first] = reader
            out.append(reader.event(q - first))
    finally:
        for reader in held.values():
            reader.close()
    return out


def count(conn: sqlite3.Connection, match: Match) -> int:
    """Matching events stored (whole blocks inside the range are counted without reading them)."""
    total = 0
    for seq, n, t_lo, t_hi in match.blocks(conn):
        if not match.filtered and t_lo > match.since and t_hi <= match.until and match.whole(seq, t_hi):
            total += n
            continue
        blob, commands = _read(conn, seq, "cols, commands")
        mask = match.mask(seq, columns(blob), commands, t_lo, t_hi)
        total += n if mask is None else int(np.count_nonzero(mask))
    return total


def after(conn: sqlite3.Connection, seq: int, limit: int) -> list[tuple[int, int, bytes]]:
    """Up to ``limit`` events stored after ``seq``, in insertion order, as ``(seq, t, JSON)``."""
    out: list[tuple[int, int, bytes]] = []
    for first, n, blob, bodies in conn.execute(
        "SELECT seq, n, cols, bodies FROM json_blocks WHERE seq > ? AND seq + n > ? ORDER BY seq",
        (seq - MAX_BLOCK_EVENTS, seq + 1),
    ):
        if len(out) >= limit:
            break
        cols = columns(blob)
        start = max(0, seq + 1 - first)
        reader = _Reader(bodies, cols["end"].tolist())  # (only the frames read from decompressed)
        t = cols["t"].tolist()
        for i in range(start, min(n, start + limit - len(out))):
            out.append((first + i, t[i], reader.event(i)))
    return out


def prune_age(conn: sqlite3.Connection, cutoff: int, limit: int) -> list[tuple[int, int]]:
    """Delete up to about ``limit`` events' worth of whole blocks all older than ``cutoff`` (ns); returns
    ``(kind, events deleted)`` per block deleted. A block with an event at or after the cutoff stays whole
    until that event is old too."""
    gone = conn.execute("SELECT seq, kind, n FROM json_blocks INDEXED BY json_blocks_time "
                        "WHERE kind IN (0, 1) AND t_hi < ? ORDER BY seq", (cutoff,)).fetchall()  # fmt: skip
    out: list[tuple[int, int]] = []
    held = 0
    for seq, kind, n in gone:
        if held >= limit:
            break
        conn.execute("DELETE FROM json_blocks WHERE seq = ?", (seq,))
        out.append((kind, n))
        held += n
    return out


def prune_oldest(conn: sqlite3.Connection, excess: int) -> list[tuple[int, int]]:
    """Delete the ``excess`` oldest events (insertion order; the last block touched keeps its newer
    events); returns ``(kind, events deleted)`` per block touched."""
    out: list[tuple[int, int]] = []
    if excess <= 0:
        return out
    for seq, kind, n in conn.execute("SELECT seq, kind, n FROM json_blocks ORDER BY seq").fetchall():
        if excess <= 0:
            break
        if n <= excess:
            conn.execute("DELETE FROM json_blocks WHERE seq = ?", (seq,))
            out.append((kind, n))
            excess -= n
            continue
        blob, bodies = _read(conn, seq, "cols, bodies")
        cols = columns(blob)
        cut = int(cols["end"][excess - 1])
        rest = cols[excess:].copy()
        rest["end"] -= cut
        t = rest["t"]
        kept = (seq + excess, len(rest), int(t.min()), int(t.max()), rest.tobytes(),
                _pack(_plain(bodies)[cut:], rest["end"]), seq)  # fmt: skip
        conn.execute("UPDATE json_blocks SET seq = ?, n = ?, t_lo = ?, t_hi = ?, cols = ?, bodies = ? "
                     "WHERE seq = ?", kept)  # fmt: skip
        out.append((kind, excess))
        excess = 0
    return out


def find(conn: sqlite3.Connection, kind: int, t: int, ts: int, pid: int) -> list[tuple[int, int, bytes]]:
    """The events stored in blocks of ``kind`` at time ``t`` (ns) with timestamp ``ts`` and ``pid``, as ``(block
    seq, index in the block, JSON)``."""
    out: list[tuple[int, int, bytes]] = []
    for seq, blob in conn.execute("SELECT seq, cols FROM json_blocks INDEXED BY json_blocks_time "
                                  "WHERE kind = ? AND t_hi >= ? AND t_lo <= ?", (kind, t, t)).fetchall():  # fmt: skip
        cols = columns(blob)
        hits = np.flatnonzero((cols["t"] == t) & (cols["ts"] == ts) & (cols["pid"] == pid)).tolist()
        if hits:
            reader = _Reader(_read(conn, seq, "bodies")[0], cols["end"].tolist())  # (only the hits' frames)
            out.extend((seq, i, reader.event(i)) for i in hits)
    return out


def replace(conn: sqlite3.Connection, seq: int, new: dict[int, bytes]) -> None:
    """Put ``new`` bodies (index in the block -> JSON) in place of the block ``seq``'s (the events' columns but
    where their bodies end stay: the same time, timestamp, pid and command)."""
    blob, bodies = _read(conn, seq, "cols, bodies")
    cols = columns(blob).copy()
    reader = _Reader(bodies, cols["end"].tolist())
    parts = [reader.event(i) for i in range(len(cols))]
    for i, body in new.items():
        parts[i] = body
    cols["end"] = np.cumsum(list(map(len, parts)))
    packed = _pack(b"".join(parts), cols["end"])
    conn.execute("UPDATE json_blocks SET cols = ?, bodies = ? WHERE seq = ?", (cols.tobytes(), packed, seq))


#: replaced events read per call of :func:`resolved_since` at most
RESOLVED_PER_READ = 20_000


def resolved_since(conn: sqlite3.Connection, match: Match, upto: int | None, since_at: int,
                   most: int = RESOLVED_PER_READ) -> tuple[list[tuple[int, int, int, bytes]], int | None]:  # fmt: skip
    """The events stored in blocks at or before seq ``upto`` (None: any) matching ``match`` that were replaced after
    number ``since_at``, as ``(t, ts, seq, JSON)``; and, when more than ``most`` were, the number read up to
    (None: all were read)."""
    rows = conn.execute("SELECT seq, at FROM json_resolved INDEXED BY json_resolved_at WHERE at > ? ORDER BY at "
                        "LIMIT ?", (since_at, most + 1)).fetchall()  # fmt: skip
    read_to = None
    if len(rows) > most:  # (cut before the last number read: it may have more; one number's are read whole)
        last = rows[-1][1]
        kept = [r for r in rows if r[1] != last]
        rows = kept or conn.execute("SELECT seq, at FROM json_resolved WHERE at = ?", (last,)).fetchall()
        read_to = rows[-1][1]
    seqs = sorted(q for q, _ in rows if upto is None or q <= upto)
    out: list[tuple[int, int, int, bytes]] = []
    blocks: dict[int, list[int]] = {}
    for q in seqs:
        found = conn.execute("SELECT seq FROM json_blocks WHERE seq <= ? AND seq > ? AND seq + n > ? "
                             "ORDER BY seq DESC LIMIT 1", (q, q - MAX_BLOCK_EVENTS, q)).fetchone()  # fmt: skip
        if found is not None:
            blocks.setdefault(found[0], []).append(q)
        else:  # (an events row: a value a block could not hold)
            row = conn.execute("SELECT t, ts, seq, body, pid, command FROM events WHERE seq = ? AND kind = ?",
                               (q, match.kind)).fetchone()  # fmt: skip
            if row is not None and match.since < row[0] <= match.until and match.pid in (None, row[4]) \
                    and match.command in (None, row[5]):  # fmt: skip
                out.append((row[0], row[1], row[2], bytes(row[3])))
    for first, wanted in blocks.items():
        seq, n, t_lo, t_hi, blob, commands, kind = conn.execute(
            "SELECT seq, n, t_lo, t_hi, cols, commands, kind FROM json_blocks WHERE seq = ?", (first,)
        ).fetchone()
        if kind != match.kind:
            continue
        cols = columns(blob)
        mask = match.mask(seq, cols, commands, t_lo, t_hi)
        idx = [q - seq for q in wanted if q - seq < n and (mask is None or mask[q - seq])]
        if idx:
            bodies = _bodies(conn, [seq + i for i in idx], [seq] * len(idx), {seq: cols["end"]})
            t, ts = cols["t"].tolist(), cols["ts"].tolist()
            out.extend((t[i], ts[i], seq + i, b) for i, b in zip(idx, bodies, strict=True))
    return out, read_to


def resolution_cursor(conn: sqlite3.Connection) -> int:
    """The newest number of a replacement (0: none)."""
    return int(conn.execute("SELECT max(at) FROM json_resolved").fetchone()[0] or 0)


def prune_resolved(conn: sqlite3.Connection) -> None:
    """Forget the replacements of events no longer stored (retention removed them)."""
    conn.execute(
        "DELETE FROM json_resolved WHERE seq < coalesce((SELECT min(seq) FROM json_blocks), 1 << 62) "
        "AND seq < coalesce((SELECT min(seq) FROM events), 1 << 62)"
    )
