"""Ring records and kernel counts -> what the store keeps and what the tools show.

Conversions, all in batches with per-key caches (a busy host repeats the same command,
destination and outcome over and over). The store keeps records as they came (one row per
batch: ``store/chunks.py``), so nothing here runs per raw event on the ingest path:

- :meth:`Codec.count_rows`: drained kernel counts -> rollup rows with the names the tools report;
- :meth:`Codec.events`: records -> :class:`ConnectionEvent`/:class:`PacketDropEvent`, built only
  when a tool asks for events (or for a sink that wants models).

What a record means is decided here once (:meth:`Codec.names`), so a stored row, a rollup and
an event always agree.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from netspy_tui.collector.ebpf import programs as P
from netspy_tui.models import FAILED_OUTCOMES, ConnectionEvent, PacketDropEvent, constructor, outcome_for_return_code

Event = ConnectionEvent | PacketDropEvent


CONNECT_PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP", 136: "UDPLite", 262: "MPTCP"}
DROP_PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP", 136: "UDPLite"}
SOCKET_TYPES = {1: "STREAM", 2: "DGRAM", 3: "RAW", 4: "RDM", 5: "SEQPACKET", 6: "DCCP", 10: "PACKET"}
#: destination ports guessed to be UDP when the kernel could not tell (the guess is flagged)
UDP_PORTS = frozenset({53, 67, 68, 69, 123, 137, 138, 161, 162, 500, 514, 1900, 4500, 5353, 51820})

#: the record seen as integer views of its address
_ADDR_VIEW = np.dtype(  # type: ignore[call-overload]  # numpy's stubs: a dict spec with offsets
    {
        "names": ["ipv4", "addr_lo", "addr_hi"],
        "formats": ["<u4", "<u8", "<u8"],
        "offsets": [P.RECORD.fields["addr"][1], P.RECORD.fields["addr"][1], P.RECORD.fields["addr"][1] + 8],  # type: ignore[index]  # fields is set on a structured dtype
        "itemsize": P.RECORD.itemsize,
    }
)
_KEY_ADDR_VIEW = np.dtype(  # type: ignore[call-overload]  # numpy's stubs: a dict spec with offsets
    {
        "names": ["addr_lo", "addr_hi"],
        "formats": ["<u8", "<u8"],
        "offsets": [P.COUNT_KEY.fields["addr"][1], P.COUNT_KEY.fields["addr"][1] + 8],  # type: ignore[index]  # fields is set on a structured dtype
        "itemsize": P.COUNT_KEY.itemsize,
    }
)
#: names kept per cache (:meth:`Codec.names`): a busy host's destinations x ports x outcomes
NAMES_KEPT = 32768
_CONNECTION = constructor(ConnectionEvent)  # (events of a page: model_construct's default lookups were most of it)
_DROP = constructor(PacketDropEvent)
#: what names a connect attempt's latency (``Codec.latency_rows`` groups by it)
_LATENCY_KEY = np.dtype([("second", "<i8"), ("pid", "<u4"), ("comm", "S16"), ("family", "<u2"), ("lo", "<u8"),
                         ("hi", "<u8"), ("port", "<u2"), ("protocol", "<u2"), ("result", "<u4"), ("flags", "<u4"),
                         ("code", "<i4"), ("pad", "<u2")])  # fmt: skip
#: a latency key as 64-bit words (the pad makes it 64 bytes), to hash and compare whole
_KEY_WORDS = _LATENCY_KEY.itemsize // 8
_MIX = np.uint64(0x9E3779B97F4A7C15)
_SAMPLE = np.dtype("<u4")


def outcome_name(result: int) -> str:
    """The outcome of a connect from its result code (0 ok, an errno, or ``RESULT_*``)."""
    if result == P.RESULT_PENDING:
        return "in_progress"
    if result == P.RESULT_ABORTED:
        return "aborted"
    if result == P.RESULT_UNTRACKED:
        return "unknown"
    if result == errno.EINVAL:  # (counted only when a blackhole route refused the call: see connect_exit)
        return "blackholed"
    return outcome_for_return_code(-result)


def protocol_name(raw: int) -> str:
    return CONNECT_PROTOCOLS.get(raw, f"Unknown({raw})")


def socket_type_name(raw: int) -> str:
    return SOCKET_TYPES.get(raw, f"Unknown({raw})")


def _address(family: int, lo: int, hi: int) -> tuple[str, list[int] | None]:
    raw = lo.to_bytes(8, "little") + hi.to_bytes(8, "little")
    if family == P.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4]), None
    if family == P.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw), list(raw)
    return "", None


def destination(family: int, lo: int, hi: int, port: int) -> tuple[str, str]:
    """A record's address as text, and with its port (:func:`with_port`)."""
    ip, _ = _address(family, lo, hi)
    return ip, with_port(family, ip, port)


def with_port(family: int, ip: str, port: int) -> str:
    """An address as text with its port: ``address:port``, ``[address]:port`` for IPv6."""
    return f"[{ip}]:{port}" if family == P.AF_INET6 else f"{ip}:{port}"


def raw_address(family: int, v4: int, lo: int, hi: int) -> tuple[int, list[int]]:
    """A connect's ``raw_ipv4`` and ``raw_ipv6`` (zeros where the family is the other one)."""
    if family == P.AF_INET6:
        return 0, list(lo.to_bytes(8, "little") + hi.to_bytes(8, "little"))
    return v4 if family == P.AF_INET else 0, [0] * 16


class Clock:
    """bpf_ktime_get_ns (CLOCK_MONOTONIC) -> wall-clock ns: the offset the programs add."""

    def __init__(self) -> None:
        self.offset_ns = 0
        self.sync()

    def sync(self) -> int:
        best: tuple[int, int] | None = None
        for _ in range(3):  # the tightest of a few samples
            m0 = time.monotonic_ns()
            wall = time.time_ns()
            m1 = time.monotonic_ns()
            if best is None or m1 - m0 < best[0]:
                best = (m1 - m0, wall - (m0 + m1) // 2)
        assert best is not None
        self.offset_ns = best[1]
        return self.offset_ns


def walls(ns: np.ndarray) -> list[datetime]:
    """Wall-clock ns (u8/i8 array) -> UTC datetimes, exact to the microsecond (:func:`~netspy_tui.models.ns_to_time`
    of each, computed faster).

    Whole microseconds are computed in integers; ``fromtimestamp`` gets them as a float of seconds,
    within 0.12 us of the exact value until 2255, and rounds to the nearest microsecond."""
    us = ns.astype(np.int64) // 1000
    fromts, utc = datetime.fromtimestamp, UTC
    return [fromts(s, utc) for s in (us / 1e6).tolist()]


_Name = tuple[str, str, int | None, str, str, bool]


class NameCache:
    """What :meth:`Codec.names` made of record fields, bounded at ``kept``: the older half goes out when full.

    A store's readers run on many threads (the asyncio and anyio worker pools, one codec each): they share
    one cache, so the names a host's destinations take are kept once, not once a thread (the 10-minute soak's
    heap grew ~3.5 MB a minute while each thread's own cache filled). Lookups take no lock; an insert (rare
    once a host's destinations are known) takes one, so nothing changes the dict while it is cut."""

    def __init__(self, kept: int = NAMES_KEPT) -> None:
        self.kept = kept
        self._names: dict[tuple[int, ...], _Name] = {}
        self._lock = threading.Lock()
        self.get = self._names.get

    def put(self, key: tuple[int, ...], name: _Name) -> None:
        with self._lock:
            names = self._names
            if len(names) >= self.kept:
                for old in list(itertools.islice(names, len(names) - self.kept // 2)):
                    del names[old]
            names[key] = name

    def __len__(self) -> int:
        return len(self._names)


class Codec:
    """Names for records and counts, with caches. ``drop_reasons``: the kernel's reason names by
    number (read from the tracepoint format); not needed to read stored rows back (they keep the
    name). One instance per thread; ``names``: a cache shared with other threads' codecs (see :class:`NameCache`)."""

    def __init__(
        self, drop_reasons: dict[int, str] | None = None, source: str = "ebpf", names: NameCache | None = None
    ) -> None:
        self.drop_reasons = dict(drop_reasons or {})
        self.source = source
        self._comm: dict[bytes, str] = {}
        self._names = names if names is not None else NameCache()
        self._outcome: dict[tuple[int, int, int], str] = {}

    # --- names ----------------------------------------------------------------------------
    def command(self, raw: bytes) -> str:
        hit = self._comm.get(raw)
        if hit is None:
            hit = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
            if len(self._comm) > 8192:
                self._comm.clear()
            self._comm[raw] = hit
        return hit

    def drop_reason(self, code: int) -> str:
        return self.drop_reasons.get(code, f"UNKNOWN({code})")

    def names(
        self, kind: int, family: int, lo: int, hi: int, port: int, proto: int, result: int, flags: int, code: int
    ) -> _Name:
        """(destination, ip, port or None, protocol, outcome or drop reason, protocol inferred)."""
        key = (kind, family, lo, hi, port, proto, result, flags & (P.F_L3 | P.F_PORT | P.F_SOCKINFO | P.F_TCP), code)
        hit = self._names.get(key)
        if hit is not None:
            return hit
        if kind == P.KIND_DROP:
            if flags & P.F_L3:
                ip, dest = destination(family, lo, hi, port)
                dest = dest if flags & P.F_PORT else ip
                protocol = DROP_PROTOCOLS.get(proto) or (f"Unknown({proto})" if proto else "")
            else:
                ip, dest, protocol = "", "", ""
            hit = (dest, ip, None, protocol, self.drop_reason(code & 0xFFFFFFFF), False)
        else:
            ip, dest = destination(family, lo, hi, port)
            inferred = False
            if proto:
                protocol = protocol_name(proto)
            else:  # the kernel did not say (no BTF): EINPROGRESS only comes from stream sockets
                inferred = True
                protocol = "TCP" if code == -errno.EINPROGRESS or port not in UDP_PORTS else "UDP"
            hit = (dest, ip, port, protocol, outcome_name(result), inferred)
        self._names.put(key, hit)
        return hit

    # --- ingest ---------------------------------------------------------------------------
    def count_rows(self, keys: np.ndarray, values: np.ndarray) -> list[tuple[Any, ...]]:
        """Drained counts -> rollup rows ``(second, kind, pid, command, destination, port, protocol,
        outcome, failed, n, first, last)`` (``n`` may be negative: in progress moving out)."""
        if not len(keys):
            return []
        alt = keys.view(_KEY_ADDR_VIEW)
        out: list[tuple[Any, ...]] = []
        for second, kind, tgid, comm, family, lo, hi, port, proto, result, n, first, last in zip(
            keys["second"].tolist(), keys["kind"].tolist(), keys["tgid"].tolist(), keys["comm"].tolist(),
            keys["family"].tolist(), alt["addr_lo"].tolist(), alt["addr_hi"].tolist(), keys["port"].tolist(),
            keys["protocol"].tolist(), keys["result"].tolist(), values["n"].tolist(), values["first"].tolist(),
            values["last"].tolist(), strict=True,
        ):  # fmt: skip
            if n == 0:
                continue
            flags = P.F_L3 | (P.F_PORT if port else 0) if family else 0
            dest, _, port_or_none, protocol, outcome, _ = self.names(kind, family, lo, hi, port, proto, result,
                                                                      flags, result)  # fmt: skip
            store_kind = 0 if kind == P.KIND_CONNECT else 1
            failed = 1 if store_kind == 1 or outcome in FAILED_OUTCOMES else 0
            out.append((second, store_kind, tgid, self.command(comm), dest, port_or_none or 0, protocol, outcome,
                        failed, n, first, last))  # fmt: skip
        return out

    def latency_rows(self, recs: np.ndarray) -> list[tuple[Any, ...]]:
        """Records of TCP connects whose handshake ended (a resolved CONNECT, or an OUTCOME) -> the
        store's latency rows ``(second, pid, command, destination, outcome, n, samples)``: one row per
        second the attempts started in and what names them, ``samples`` their latencies (uint32
        microseconds). Grouped with numpy: names are made once per group, not per attempt."""
        if not len(recs):
            return []
        measured = (
            (recs["length"] > 0)
            & (recs["kind"] != P.KIND_DROP)
            & ((recs["flags"] & P.F_TCP) != 0)
            & (((recs["flags"] & P.F_RESOLVED) != 0) | (recs["kind"] == P.KIND_OUTCOME))
        )
        n = int(np.count_nonzero(measured))
        if not n:
            return []
        # the key's fields gathered one by one: indexing whole 120-byte records copied each field over again
        alt = recs.view(_ADDR_VIEW)
        keys = np.zeros(n, _LATENCY_KEY)
        keys["second"] = recs["wall"][measured] // P.NS
        keys["lo"], keys["hi"] = alt["addr_lo"][measured], alt["addr_hi"][measured]
        for name in ("pid", "comm", "family", "port", "protocol", "result", "code"):
            keys[name] = recs[name][measured]
        keys["flags"] = recs["flags"][measured] & (P.F_L3 | P.F_PORT | P.F_SOCKINFO | P.F_TCP)
        # Equal keys made adjacent by one sort of a 64-bit hash of each (sorting the 62-byte keys themselves
        # compared bytes, and a second sort ordered the samples): a group ends where the next key differs in
        # any word, so two keys that share a hash only ever split a group into two rows of the same key.
        words = keys.view("<u8").reshape(n, _KEY_WORDS)
        mixed = words[:, 0].copy()
        for j in range(1, _KEY_WORDS):
            mixed *= _MIX
            mixed ^= words[:, j]
        order = np.argsort(mixed)
        ordered = words[order]
        starts = np.flatnonzero(np.concatenate(([True], (ordered[1:] != ordered[:-1]).any(axis=1))))
        uniq = keys[order[starts]]
        samples = recs["length"][measured][order].astype(_SAMPLE)
        ends = [*starts[1:].tolist(), n]
        out: list[tuple[Any, ...]] = []
        start = 0
        for end, (second, pid, comm, family, lo, hi, port, proto, result, flags, code, _) in zip(
            ends, uniq.tolist(), strict=True
        ):
            dest, _, _, _, outcome, _ = self.names(P.KIND_CONNECT, family, lo, hi, port, proto, result, flags, code)
            out.append((second, pid, self.command(comm), dest, outcome, end - start, samples[start:end].tobytes()))
            start = end
        return out

    def traffic_rows(self, keys: np.ndarray, values: np.ndarray) -> list[tuple[Any, ...]]:
        """Drained traffic -> the store's traffic rows (:func:`traffic_rows`)."""
        return traffic_rows(self, keys, values)

    # --- models ---------------------------------------------------------------------------
    def events(
        self, recs: np.ndarray, ids: Sequence[str], outcomes: Sequence[str | None] | None = None, *,
        connection: Any = _CONNECTION, drop: Any = _DROP, time_of: Any = walls,
    ) -> list[Any]:  # fmt: skip
        """Records -> events, with the given ids; ``outcomes`` (stored rows) override a connect's
        outcome or a drop's reason name. ``connection`` and ``drop`` (called with the model's fields) and
        ``time_of`` (of the wall-clock ns) may make something else of the same fields: ``serve --forward``
        makes its structs of the contract's JSON, with the time as its text, and no model."""
        n = len(recs)
        if not n:
            return []
        alt = recs.view(_ADDR_VIEW)
        times = time_of(recs["wall"])
        overrides = outcomes if outcomes is not None else [None] * n
        out: list[Any] = []
        for i, (kind, ts, when, pid, comm, thread, family, v4, lo, hi, port, proto, socktype, result, flags, code,
                length, size, sockfam, override) in enumerate(zip(
            recs["kind"].tolist(), recs["ts"].tolist(), times, recs["pid"].tolist(), recs["comm"].tolist(),
            recs["thread"].tolist(), recs["family"].tolist(), alt["ipv4"].tolist(), alt["addr_lo"].tolist(),
            alt["addr_hi"].tolist(), recs["port"].tolist(), recs["protocol"].tolist(), recs["socktype"].tolist(),
            recs["result"].tolist(), recs["flags"].tolist(), recs["code"].tolist(), recs["length"].tolist(),
            recs["size"].tolist(), recs["sockfam"].tolist(), overrides, strict=True,
        )):  # fmt: skip
            command = self.command(comm)
            thread_name = self.command(thread) if thread else ""
            dest, ip, _, protocol, name, inferred = self.names(kind, family, lo, hi, port, proto, result, flags, code)
            common: dict[str, Any] = {
                "id": ids[i], "pid": pid, "command": command, "timestamp": ts, "time": when, "source": self.source,
                "thread": thread_name if thread_name and thread_name != command else None,
            }  # fmt: skip
            if kind == P.KIND_DROP:
                out.append(drop(
                    **common, drop_reason_code=code & 0xFFFFFFFF, drop_reason=override or name,
                    skb_length=length, packet_size_bytes=size, protocol=protocol or None, destination=dest or None,
                ))  # fmt: skip
                continue
            raw_type = socktype & 0xF
            if not flags & P.F_SOCKINFO and not flags & P.F_TCP:
                stype, raw_type = "Unknown(0)", 0
            else:
                stype = socket_type_name(raw_type or P.SOCK_STREAM)
                raw_type = raw_type or P.SOCK_STREAM
            raw_ipv4, raw_ipv6 = raw_address(family, v4, lo, hi)
            out.append(connection(
                **common, destination_ip=ip, destination_port=port, destination=dest, address_family=family,
                protocol=protocol, socket_type=stype, return_code=code, raw_ipv4=raw_ipv4, raw_ipv6=raw_ipv6,
                raw_protocol=proto, raw_socktype=raw_type, outcome=override or name, protocol_inferred=inferred,
                socket_family=sockfam if flags & P.F_MAPPED else None,
            ))  # fmt: skip
        return out


def random_ids(n: int) -> list[str]:
    """Random 16-hex-digit ids (as the eBPF server makes them), drawn in bulk."""
    text = os.urandom(8 * n).hex()
    return [text[i : i + 16] for i in range(0, 16 * n, 16)]


#: the traffic value seen as integer views of its addresses
_TRAFFIC_FIELDS: Any = P.TRAFFIC_VALUE.fields  # (numpy's stubs: Optional)
_TRAFFIC_ADDR_VIEW = np.dtype(
    {
        "names": ["l_lo", "l_hi", "r_lo", "r_hi"],
        "formats": ["<u8", "<u8", "<u8", "<u8"],
        "offsets": [_TRAFFIC_FIELDS["laddr"][1], _TRAFFIC_FIELDS["laddr"][1] + 8,
                    _TRAFFIC_FIELDS["raddr"][1], _TRAFFIC_FIELDS["raddr"][1] + 8],
        "itemsize": P.TRAFFIC_VALUE.itemsize,
    }
)  # fmt: skip
_MAPPED_PREFIX = 0xFFFF00000000  # bytes 8..15 of ::ffff:a.b.c.d read little-endian, without the IPv4 part


def socket_address(family: int, lo: int, hi: int) -> str:
    """A socket's address as text: IPv4-mapped IPv6 as IPv4, an unset one (unconnected UDP) as ''."""
    if not lo and not hi:
        return ""
    if family == P.AF_INET6 and lo == 0 and hi & 0xFFFFFFFF == 0xFFFF0000:
        return socket.inet_ntop(socket.AF_INET, (hi >> 32).to_bytes(4, "little"))
    if family == P.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, lo.to_bytes(8, "little") + hi.to_bytes(8, "little"))
    return socket.inet_ntop(socket.AF_INET, (lo & 0xFFFFFFFF).to_bytes(4, "little"))


def traffic_rows(codec: Codec, keys: np.ndarray, values: np.ndarray) -> list[tuple[Any, ...]]:
    """Drained traffic -> ``(second, pid, command, protocol, local, local_port, remote, remote_port,
    direction, bytes, calls, first, last)`` rows (the socket's identity is its addresses: rows of one
    second and key are summed by the store). Bytes that did not fit in the kernel map have no
    process and no addresses."""
    if not len(keys):
        return []
    alt = values.view(_TRAFFIC_ADDR_VIEW)
    cache: dict[tuple[int, ...], tuple[str, str, str]] = {}
    out: list[tuple[Any, ...]] = []
    for second, tgid, direction, nbytes, calls, first, last, comm, family, proto, l_lo, l_hi, r_lo, r_hi, lport, \
            rport in zip(
        keys["second"].tolist(), keys["tgid"].tolist(), keys["direction"].tolist(), values["bytes"].tolist(),
        values["calls"].tolist(), values["first"].tolist(), values["last"].tolist(), values["comm"].tolist(),
        values["family"].tolist(), values["protocol"].tolist(), alt["l_lo"].tolist(), alt["l_hi"].tolist(),
        alt["r_lo"].tolist(), alt["r_hi"].tolist(), values["lport"].tolist(), values["rport"].tolist(), strict=True,
    ):  # fmt: skip
        if not nbytes:
            continue
        ck = (family, proto, l_lo, l_hi, r_lo, r_hi)
        names = cache.get(ck)
        if names is None:
            protocol = protocol_name(proto) if proto else ""
            names = cache[ck] = (protocol, socket_address(family, l_lo, l_hi), socket_address(family, r_lo, r_hi))
        protocol, local, remote = names
        out.append((second, tgid, codec.command(comm), protocol, local, lport, remote, rport, direction, nbytes, calls,
                    first, last))  # fmt: skip
    return out
