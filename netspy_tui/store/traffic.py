"""Traffic rollups: bytes per (second, process, socket addresses, direction), and the window figures.

The kernel sums bytes per (socket, process, second, direction) (collector/ebpf/programs.py,
``sock_bytes``); the store keeps them per second (``traffic``) and per minute (``traffic_minute``,
the same rows summed by minute, written in the same transaction). A window reads its whole minutes
from the minute table and its edges from the second table, so an hour costs 60 minute rows per
socket instead of 3,600. Every figure is a sum of exact kernel counts: nothing is sampled.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from netspy_tui.collector.base import DIR_ACCEPT, DIR_CLOSE, DIR_CONNECT, DIR_RETRANS, DIR_RX
from netspy_tui.models import (
    ConnectionEvent,
    TrafficFlow,
    TrafficProcess,
    TrafficRemote,
    TrafficStats,
    ns_to_time,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS traffic (
    second      INTEGER NOT NULL,   -- wall-clock second since the epoch
    pid         INTEGER NOT NULL,   -- the process that sent or read the bytes (0: not attributed)
    command     TEXT    NOT NULL,
    protocol    TEXT    NOT NULL,   -- TCP, UDP, ...; '' when unknown
    local       TEXT    NOT NULL,   -- the socket's own address ('' when unknown)
    local_port  INTEGER NOT NULL,
    remote      TEXT    NOT NULL,   -- the socket's peer ('' when it has none: unconnected UDP)
    remote_port INTEGER NOT NULL,
    direction   INTEGER NOT NULL,   -- 1 read (rx), 2 sent (tx), 3 TCP retransmits, 4 accepted, 5 connected, 6 closed
    bytes       INTEGER NOT NULL,   -- (3: segments retransmitted; 4, 5: connections; 6: lifetimes in us)
    calls       INTEGER NOT NULL,   -- send/recv calls that moved bytes (3: retransmissions; 4-6: connections)
    first       INTEGER NOT NULL,   -- ns
    last        INTEGER NOT NULL,
    PRIMARY KEY (second, pid, command, protocol, local, local_port, remote, remote_port, direction)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS traffic_minute (
    minute      INTEGER NOT NULL,   -- second // 60
    pid         INTEGER NOT NULL,
    command     TEXT    NOT NULL,
    protocol    TEXT    NOT NULL,
    local       TEXT    NOT NULL,
    local_port  INTEGER NOT NULL,
    remote      TEXT    NOT NULL,
    remote_port INTEGER NOT NULL,
    direction   INTEGER NOT NULL,
    bytes       INTEGER NOT NULL,
    calls       INTEGER NOT NULL,
    first       INTEGER NOT NULL,
    last        INTEGER NOT NULL,
    PRIMARY KEY (minute, pid, command, protocol, local, local_port, remote, remote_port, direction)
) WITHOUT ROWID;
-- inbound connections listed newest first (list_connections direction='inbound'): only accept rows are indexed
CREATE INDEX IF NOT EXISTS traffic_accepted ON traffic (last) WHERE direction = 4;
"""

_COLUMNS = "pid, command, protocol, local, local_port, remote, remote_port, direction, bytes, calls, first, last"
_ON_CONFLICT = (
    "ON CONFLICT DO UPDATE SET bytes = bytes + excluded.bytes, calls = calls + excluded.calls, "
    "first = min(first, excluded.first), last = max(last, excluded.last)"
)
_VALUES = ", ".join("?" * 13)
UPSERT_SECOND = f"INSERT INTO traffic (second, {_COLUMNS}) VALUES ({_VALUES}) {_ON_CONFLICT}"
UPSERT_MINUTE = f"INSERT INTO traffic_minute (minute, {_COLUMNS}) VALUES ({_VALUES}) {_ON_CONFLICT}"

#: One traffic row: (second, pid, command, protocol, local, local_port, remote, remote_port,
#: direction, bytes, calls, first_ns, last_ns)
Row = tuple[int, int, str, str, str, int, str, int, int, int, int, int, int]


def write(conn: sqlite3.Connection, rows: Sequence[Row]) -> None:
    """Rows into both tables (inside the caller's transaction)."""
    conn.executemany(UPSERT_SECOND, rows)
    conn.executemany(UPSERT_MINUTE, [(r[0] // 60, *r[1:]) for r in rows])


def prune(conn: sqlite3.Connection, second: int) -> None:
    """Forget rows older than ``second`` (a minute row goes when its whole minute is older)."""
    conn.execute("DELETE FROM traffic WHERE second < ?", (second,))
    conn.execute("DELETE FROM traffic_minute WHERE minute < ?", (second // 60,))


def subject_filter(pid: int | None, command: str | None) -> tuple[str, list[Any]]:
    """`` AND pid = ? AND command = ?`` (as given) and their parameters."""
    filters, params = "", list[Any]()
    if pid is not None:
        filters += " AND pid = ?"
        params.append(pid)
    if command is not None:
        filters += " AND command = ?"
        params.append(command)
    return filters, params


def select(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Rows of ``sql``; none from an older store that has not got the table."""
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise


def read(conn: sqlite3.Connection, lo: int, hi: int, pid: int | None, command: str | None) -> list[tuple[Any, ...]]:
    """Seconds lo..hi summed per flow and direction: whole minutes from the minute table, the
    edges from the second table. Rows: ``(pid, command, protocol, local, local_port, remote,
    remote_port, direction, bytes, calls, first, last)``. An older store has no traffic tables: []."""
    first_minute = -(-lo // 60)  # the first minute that starts inside
    end_minute = (hi + 1) // 60  # minutes before this one end inside
    filters, params = subject_filter(pid, command)
    keys = "pid, command, protocol, local, local_port, remote, remote_port, direction"
    if first_minute < end_minute:
        parts = (
            f"SELECT {_COLUMNS} FROM traffic WHERE second >= ? AND second < ?{filters} "
            f"UNION ALL SELECT {_COLUMNS} FROM traffic_minute WHERE minute >= ? AND minute < ?{filters} "
            f"UNION ALL SELECT {_COLUMNS} FROM traffic WHERE second >= ? AND second <= ?{filters}"
        )
        args = [lo, first_minute * 60, *params, first_minute, end_minute, *params, end_minute * 60, hi, *params]
    else:
        parts = f"SELECT {_COLUMNS} FROM traffic WHERE second >= ? AND second <= ?{filters}"
        args = [lo, hi, *params]
    sql = (f"SELECT {keys}, sum(bytes), sum(calls), min(first), max(last) FROM ({parts}) "
           f"GROUP BY {keys}")  # fmt: skip
    return select(conn, sql, args)


def _calls(calls: int, nbytes: int) -> int | None:
    """A flow's send or read calls; None when it moved bytes with none counted (a call that moves data is always
    counted where calls are: bytes without calls came from the kernel's per-socket TCP counters or sock_diag)."""
    return None if nbytes and not calls else calls


def stats(rows: Iterable[tuple[Any, ...]], window: int, pid: int | None, command: str | None, now: datetime,
          limit: int) -> TrafficStats:  # fmt: skip
    """The window's figures from :func:`read`'s rows: totals, per process, per remote address, per
    flow (largest first, ``limit`` of each)."""
    # flow -> [rx, tx, rx_calls, tx_calls, first, last, retransmits, accepted, connected, lifetimes, closed]
    flows: dict[tuple[Any, ...], list[int]] = {}
    opened: dict[tuple[Any, ...], str] = {}  # the socket's addresses -> how the kernel saw it open
    for f_pid, f_cmd, proto, local, lport, remote, rport, direction, nbytes, calls, first, last in rows:
        acc = flows.setdefault((f_pid, f_cmd, proto, local, lport, remote, rport), [0] * 11)
        if direction == DIR_RETRANS:
            acc[6] += nbytes
        elif direction == DIR_CLOSE:
            acc[9] += nbytes
            acc[10] += calls
        elif direction in (DIR_ACCEPT, DIR_CONNECT):
            acc[7 if direction == DIR_ACCEPT else 8] += nbytes
            opened[(proto, local, lport, remote, rport)] = "inbound" if direction == DIR_ACCEPT else "outbound"
        else:
            i = 0 if direction == DIR_RX else 1
            acc[i] += nbytes
            acc[2 + i] += calls
        acc[4] = min(acc[4], first) if acc[4] else first
        acc[5] = max(acc[5], last)
    seconds = max(1, window)
    procs: dict[str, list[Any]] = {}  # command -> [pids, rx, tx, flows, retransmits, inbound, outbound]
    remotes: dict[str, list[Any]] = {}  # remote -> [rx, tx, commands, retransmits]
    rx_total = tx_total = retrans_total = accepted_total = connected_total = closed_total = 0
    for (f_pid, f_cmd, _, _, _, remote, _), (rx, tx, _, _, _, _, retrans, accepted, connected, _, closed) in \
            flows.items():  # fmt: skip
        closed_total += closed
        rx_total += rx
        tx_total += tx
        retrans_total += retrans
        accepted_total += accepted
        connected_total += connected
        p = procs.setdefault(f_cmd, [set(), 0, 0, 0, 0, 0, 0])
        p[0].add(f_pid)
        p[1] += rx
        p[2] += tx
        p[3] += 1
        p[4] += retrans
        p[5] += accepted
        p[6] += connected
        r = remotes.setdefault(remote, [0, 0, set(), 0])
        r[0] += rx
        r[1] += tx
        r[2].add(f_cmd)
        r[3] += retrans
    proc_list = sorted(
        (TrafficProcess(command=c, pids=sorted(v[0]), rx_bytes=v[1], tx_bytes=v[2], rx_rate=round(v[1] / seconds, 3),
                        tx_rate=round(v[2] / seconds, 3), flows=v[3], retransmits=v[4], inbound=v[5], outbound=v[6])
         for c, v in procs.items()),
        key=lambda p: (-(p.rx_bytes + p.tx_bytes), -p.retransmits, p.command),
    )  # fmt: skip
    remote_list = sorted(
        (
            TrafficRemote(remote=r, rx_bytes=v[0], tx_bytes=v[1], commands=sorted(v[2]), retransmits=v[3])
            for r, v in remotes.items()
        ),
        key=lambda r: (-(r.rx_bytes + r.tx_bytes), -r.retransmits, r.remote),
    )
    flow_list = sorted(
        (TrafficFlow(pid=k[0], command=k[1], protocol=k[2], local=k[3], local_port=k[4], remote=k[5], remote_port=k[6],
                     rx_bytes=v[0], tx_bytes=v[1], rx_calls=_calls(v[2], v[0]), tx_calls=_calls(v[3], v[1]),
                     retransmits=v[6],
                     direction=opened.get((k[2], k[3], k[4], k[5], k[6]), ""),
                     lifetime_us=v[9] if v[10] else None,
                     first_seen=ns_to_time(v[4]) if v[4] else None, last_seen=ns_to_time(v[5]) if v[5] else None)
         for k, v in flows.items()),
        key=lambda f: (-(f.rx_bytes + f.tx_bytes), -f.retransmits, f.command, f.pid, f.remote, f.remote_port,
                       f.local_port),
    )  # fmt: skip
    return TrafficStats(
        window_seconds=window, pid=pid, command=command, until=now, rx_bytes=rx_total, tx_bytes=tx_total,
        retransmits=retrans_total, inbound_connections=accepted_total, outbound_connections=connected_total,
        closed_connections=closed_total,
        rx_rate=round(rx_total / seconds, 3), tx_rate=round(tx_total / seconds, 3), processes=proc_list[:limit],
        remotes=remote_list[:limit], flows=flow_list[:limit], total_processes=len(proc_list),
        total_remotes=len(remote_list), total_flows=len(flow_list),
    )  # fmt: skip


_ACCEPTED = "FROM traffic WHERE direction = 4 AND last > ? AND first <= ?"


def accepted(conn: sqlite3.Connection, since_ns: int | None, until_ns: int | None, pid: int | None,
             command: str | None, limit: int) -> tuple[list[ConnectionEvent], int]:  # fmt: skip
    """Inbound connections (the kernel's passive opens, counted per second and socket addresses) that
    were accepted after ``since_ns`` and up to ``until_ns``, newest first, at most ``limit``; and how many
    there are in all. A row that counts n connections (the same addresses accepted twice in one second)
    is n events; the first takes the row's first time, the others its last. An older store has none."""
    filters, params = subject_filter(pid, command)
    bounds = [-1 if since_ns is None else since_ns, 2**63 - 1 if until_ns is None else until_ns]
    columns = "second, pid, command, protocol, local, local_port, remote, remote_port, bytes, first, last"
    rows = select(conn, f"SELECT {columns} {_ACCEPTED}{filters} ORDER BY last DESC LIMIT ?", [*bounds, *params, limit])
    total = select(conn, f"SELECT coalesce(sum(bytes), 0) {_ACCEPTED}{filters}", [*bounds, *params])
    events: list[ConnectionEvent] = []
    for second, r_pid, cmd, proto, local, lport, remote, rport, n, first, last in rows:
        for k in range(max(1, n)):
            t = first if k == 0 else last
            if since_ns is not None and t <= since_ns:
                continue
            if until_ns is not None and t > until_ns:
                continue
            events.append(_inbound_event(second, r_pid, cmd, proto, local, lport, remote, rport, k, t))
    events.sort(key=lambda e: (e.time, e.id), reverse=True)
    return events[:limit], int(total[0][0]) if total else 0


#: the contract's raw_protocol of a protocol's name (IPPROTO_*)
_IPPROTO = {"TCP": 6, "UDP": 17, "MPTCP": 262}


@functools.lru_cache(maxsize=4096)
def _raw_address(text: str) -> tuple[int, tuple[int, ...]]:
    """``raw_ipv4``/``raw_ipv6`` of an address as the collectors write them (0 and () when not one)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return 0, ()
    if address.version == 4:
        return int.from_bytes(address.packed, "little"), (0,) * 16
    return 0, tuple(address.packed)


def _inbound_event(second: int, pid: int, command: str, protocol: str, local: str, local_port: int, remote: str,
                   remote_port: int, k: int, t: int) -> ConnectionEvent:  # fmt: skip
    key = f"{second}|{pid}|{command}|{protocol}|{local}|{local_port}|{remote}|{remote_port}|{k}"
    six = ":" in local
    where = f"[{local}]:{local_port}" if six else f"{local}:{local_port}"
    raw = _raw_address(local)
    return ConnectionEvent(
        id="in-" + hashlib.blake2b(key.encode(), digest_size=8).hexdigest(),
        pid=pid,
        command=command,
        time=ns_to_time(t),
        destination_ip=local,
        destination_port=local_port,
        destination=where,
        address_family=10 if six else 2,
        protocol=protocol,
        socket_type="STREAM" if protocol in ("TCP", "MPTCP") else "",
        raw_ipv4=raw[0],
        raw_ipv6=list(raw[1]),
        raw_protocol=_IPPROTO.get(protocol, 0),
        raw_socktype=1 if protocol in ("TCP", "MPTCP") else 0,
        outcome="ok",
        direction="inbound",
        peer_ip=remote,
        peer_port=remote_port,
    )
