"""Builders of contract-shaped event JSON (dicts) and parsed events, for every test layer.

The dicts follow shared/contracts/ebpf-server/README.md field by field; tests/contract.py
validates them, so fixtures cannot drift from the contract.
"""

from __future__ import annotations

import ipaddress
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from netspy_tui.models import ConnectionEvent, PacketDropEvent, format_time, parse_event

_ids = itertools.count(1)
BASE_TIME = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


def _common(kind: str, pid: int, command: str, time: datetime, timestamp: int | None) -> dict[str, Any]:
    n = next(_ids)
    return {
        "id": f"{n:016x}",
        "type": kind,
        "pid": pid,
        "command": command,
        "timestamp": timestamp if timestamp is not None else 1_000_000_000 + n,
        "time": format_time(time),
    }


def connection_json(
    pid: int = 1234,
    command: str = "curl",
    ip: str = "93.184.216.34",
    port: int = 443,
    *,
    time: datetime | None = None,
    ago: float | None = None,
    protocol: str = "TCP",
    return_code: int = 0,
    timestamp: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A connection event as the eBPF server sends it."""
    when = time or (datetime.now(UTC) - timedelta(seconds=ago) if ago is not None else BASE_TIME)
    addr = ipaddress.ip_address(ip) if ip else None
    if addr is None:
        family, dest, raw4, raw6 = 1, "", 0, [0] * 16
    elif addr.version == 4:
        family, dest = 2, f"{ip}:{port}"
        raw4, raw6 = int.from_bytes(addr.packed, "little"), [0] * 16
    else:
        family, dest = 10, f"[{ip}]:{port}"
        raw4, raw6 = 0, list(addr.packed)
    event = _common("connection", pid, command, when, timestamp)
    event.update(
        destination_ip=ip,
        destination_port=port,
        destination=dest,
        address_family=family,
        protocol=protocol,
        socket_type="STREAM" if protocol == "TCP" else "DGRAM",
        return_code=return_code,
        raw_ipv4=raw4,
        raw_ipv6=raw6,
        raw_protocol=6 if protocol == "TCP" else 17,
        raw_socktype=1 if protocol == "TCP" else 2,
    )
    event.update(extra)
    return event


def drop_json(
    pid: int = 4321,
    command: str = "nginx",
    reason: str = "TCP_DROP",
    code: int = 2,
    *,
    time: datetime | None = None,
    ago: float | None = None,
    size: int = 60,
    timestamp: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A packet-drop event as the eBPF server sends it."""
    when = time or (datetime.now(UTC) - timedelta(seconds=ago) if ago is not None else BASE_TIME)
    event = _common("packet_drop", pid, command, when, timestamp)
    event.update(drop_reason_code=code, drop_reason=reason, skb_length=size, packet_size_bytes=size)
    event.update(extra)
    return event


def connection(**kw: Any) -> ConnectionEvent:
    event = parse_event(connection_json(**kw))
    assert isinstance(event, ConnectionEvent)
    return event


def drop(**kw: Any) -> PacketDropEvent:
    event = parse_event(drop_json(**kw))
    assert isinstance(event, PacketDropEvent)
    return event
