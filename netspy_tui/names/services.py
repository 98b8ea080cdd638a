"""Service names for well-known ports, from the system's services database (``/etc/services``
through the C library, as ``getent services`` reads it): ``443`` over TCP is ``https``."""

from __future__ import annotations

import functools
import socket

__all__ = ["service_name", "with_service"]


@functools.lru_cache(maxsize=4096)
def service_name(port: int, protocol: str = "tcp") -> str | None:
    """The service registered for ``port`` over ``protocol`` ("tcp" or "udp"), or None (no
    entry, no database, a port outside 1..65535). Cached: the database is read once per port."""
    proto = protocol.lower()
    if proto not in ("tcp", "udp") or not 0 < port < 65536:
        return None
    try:
        name = socket.getservbyport(port, proto)
    except (OSError, OverflowError):
        return None
    return name or None


def with_service(port: int, protocol: str = "tcp") -> str:
    """``443/https`` when the port has a service name, else ``443``."""
    name = service_name(port, protocol)
    return f"{port}/{name}" if name else str(port)
