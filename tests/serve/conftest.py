"""Shared data for the serve tests: a MemorySource filled from tests/factories.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from netspy_tui.models import ConnectionEvent, PacketDropEvent, ProgramInfo
from netspy_tui.serve import create_app
from netspy_tui.telemetry.memory import MemorySource
from tests.factories import connection, drop

AnyEvent = ConnectionEvent | PacketDropEvent


def sample_events() -> list[AnyEvent]:
    """Times relative to now: connections 10, 20, 50, 90 s and 2 h ago; drops 5, 30, 600 s ago."""
    return [
        connection(pid=100, command="curl", ago=10),
        connection(pid=100, command="curl", ip="2606:2800:220:1:248:1893:25c8:1946", port=443, ago=20),
        connection(pid=200, command="wget", ip="10.0.0.1", port=80, ago=50),
        connection(pid=300, command="ssh", ip="10.0.0.2", port=22, protocol="TCP", ago=90),
        connection(pid=300, command="ssh", ip="10.0.0.2", port=22, ago=7200),
        drop(pid=400, command="nginx", ago=5),
        drop(pid=400, command="nginx", reason="UDP_DROP", code=3, ago=30),
        drop(pid=500, command="dnsmasq", ago=600),
    ]


class ProgramSource(MemorySource):
    """A MemorySource that also reports the eBPF programs, as the embedded source does."""

    async def programs(self) -> list[ProgramInfo]:
        return [
            ProgramInfo(name="connection", type="kprobe", status="active", id=11),
            ProgramInfo(name="packet_drop", type="tracepoint", status="loaded"),
        ]


@pytest.fixture
def source() -> ProgramSource:
    return ProgramSource(sample_events())


@pytest.fixture
async def client(source: MemorySource) -> AsyncIterator[httpx.AsyncClient]:
    """In-process client of the app over ``source`` (fast; the live tests use real sockets)."""
    transport = httpx.ASGITransport(app=create_app(source))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        yield c
