"""Prototype (benchmark only, not product code): what the reader would cost if the store took a
ring batch as columns instead of one pydantic object per event.

``ingest_columnar`` turns decoded ring records straight into the store's rows (the ``events``
columns and the JSON body, byte-compatible with what ``EventStore.add_events`` writes) and inserts
them with the store's own statements. Strings that repeat (command, destination + verdict, drop
reason) are rendered once per batch; per event only the id, pid, timestamps and sizes are
formatted. Handles what a connect storm produces (completed connects and drops); pending connects
would go through the decoder as today. The one difference from pydantic's JSON: a time whose
microseconds are 0 is written with ``.000000`` (pydantic drops the fraction), which parses equal.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from netspy_tui.analysis.aggregate import FAILED_OUTCOMES
from netspy_tui.collector.ebpf import programs as P
from netspy_tui.collector.ebpf.decode import _ADDR_VIEW, Decoder
from netspy_tui.store.sqlite import _INSERT_BODY, _INSERT_EVENT, EventStore

_J = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def rows(dec: Decoder, recs: np.ndarray, first_seq: int) -> tuple[list[tuple[Any, ...]], list[tuple[int, bytes]], int]:
    """(events rows, body rows, connections) for ``recs`` (connect records without PENDING, and drops)."""
    n = len(recs)
    us = (recs["ts"].astype(np.int64) + np.int64(dec.clock._offset_ns)) // 1000
    times = np.datetime_as_string(us.astype("datetime64[us]"), unit="us").tolist()
    t_ns = (us * 1000).tolist()
    ids = dec._ids.take(n)
    alt = recs.view(_ADDR_VIEW)
    comm_cache, conn_cache, drop_cache = _caches(dec)
    ev_rows: list[tuple[Any, ...]] = []
    bodies: list[tuple[int, bytes]] = []
    seq = first_seq
    conns = 0
    for i, tsv, t, tm, kind, pid, comm, code, flags, family, port, stype, proto, v4, lo, hi, length, size in zip(
        ids, recs["ts"].tolist(), t_ns, times, recs["kind"].tolist(), recs["pid"].tolist(), recs["comm"].tolist(),
        recs["code"].tolist(), recs["flags"].tolist(), recs["family"].tolist(), recs["port"].tolist(),
        recs["socktype"].tolist(), recs["protocol"].tolist(), alt["ipv4"].tolist(), alt["addr_lo"].tolist(),
        alt["addr_hi"].tolist(), recs["length"].tolist(), recs["size"].tolist(), strict=True,
    ):  # fmt: skip
        c = comm_cache.get(comm)
        if c is None:
            name = dec._command(comm)
            c = comm_cache[comm] = (name, _J(name))
        head = f'{{"id":"{i}","pid":{pid},"command":{c[1]},"timestamp":{tsv},"time":"{tm}Z",'
        if kind == P.KIND_CONNECT:
            key = (family, lo, hi, port, flags, code, stype, proto)
            hit = conn_cache.get(key)
            if hit is None:
                ip, dest, raw6 = dec._destination(family, lo, hi, port)
                outcome, pname, sname, rp, rt, inferred = dec._verdict_for(flags, code, stype, proto, port)
                tail = _J({"k8s_node_name": None, "k8s_pod_name": None, "k8s_namespace": None, "source": dec.source,
                           "type": "connection", "destination_ip": ip, "destination_port": port, "destination": dest,
                           "address_family": family, "protocol": pname, "socket_type": sname, "return_code": code,
                           "raw_ipv4": v4 if family == P.AF_INET else 0,
                           "raw_ipv6": list(raw6) if raw6 is not None else [0] * 16, "raw_protocol": rp,
                           "raw_socktype": rt, "outcome": outcome, "protocol_inferred": inferred, "sampled": None})
                hit = conn_cache[key] = (dest, pname, outcome, 1 if outcome in FAILED_OUTCOMES else 0, tail[1:])
            dest, pname, outcome, failed, tail = hit
            ev_rows.append((seq, 0, t, tsv, pid, c[0], dest, port, pname, outcome, failed))
            bodies.append((seq, (head + tail).encode()))
            conns += 1
        else:
            reason = code & 0xFFFFFFFF
            key = (reason, flags, family, lo, hi, port, proto)
            hit2 = drop_cache.get(key)
            if hit2 is None:
                rname = dec.drop_reasons.get(reason, f"UNKNOWN({reason})")
                protocol = destination = None
                if flags & P.F_L3:
                    protocol = _drop_protocol(proto)
                    ip, with_port, _ = dec._destination(family, lo, hi, port)
                    destination = with_port if flags & P.F_PORT else ip
                mid = (f'"k8s_node_name":null,"k8s_pod_name":null,"k8s_namespace":null,"source":{_J(dec.source)},'
                       f'"type":"packet_drop","drop_reason_code":{reason},"drop_reason":{_J(rname)},')
                end = f'"protocol":{_J(protocol)},"destination":{_J(destination)}}}'
                hit2 = drop_cache[key] = (mid, end, destination or "", protocol or "", rname)  # type: ignore[assignment]
            mid, end, dest, protocol, rname = hit2  # type: ignore[misc]
            ev_rows.append((seq, 1, t, tsv, pid, c[0], dest, None, protocol, rname, 1))
            bodies.append((seq, f'{head}{mid}"skb_length":{length},"packet_size_bytes":{size},{end}'.encode()))
        seq += 1
    return ev_rows, bodies, conns


_CACHES: dict[int, tuple[dict[Any, Any], dict[Any, Any], dict[Any, Any]]] = {}


def _caches(dec: Decoder) -> tuple[dict[Any, Any], dict[Any, Any], dict[Any, Any]]:
    """Rendered strings kept across batches (per decoder), bounded like the decoder's own caches."""
    caches = _CACHES.setdefault(id(dec), ({}, {}, {}))
    for c in caches:
        if len(c) > 8192:
            c.clear()
    return caches


def _drop_protocol(proto: int) -> str:
    from netspy_tui.collector.ebpf.decode import DROP_PROTOCOLS

    return DROP_PROTOCOLS.get(proto) or f"Unknown({proto})"


def ingest_columnar(dec: Decoder, store: EventStore, recs: np.ndarray) -> int:
    """Insert ``recs`` into ``store`` the columnar way; returns how many rows."""
    with store._write_lock:
        first = store._next_seq
        ev_rows, bodies, conns = rows(dec, recs, first)
        conn = store._writer
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_INSERT_EVENT, ev_rows)
        conn.executemany(_INSERT_BODY, bodies)
        for kind, k in ((0, conns), (1, len(ev_rows) - conns)):
            if k:
                conn.execute("UPDATE kind_counts SET n = n + ? WHERE kind = ?", (k, kind))
        conn.execute("COMMIT")
        store._next_seq = first + len(ev_rows)
    return len(ev_rows)
