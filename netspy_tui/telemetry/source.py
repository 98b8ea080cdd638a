"""The one interface the MCP tools read from.

Implementations: :class:`netspy_tui.telemetry.client.HttpSource` (an eBPF server, any API
generation) and :class:`netspy_tui.telemetry.embedded.EmbeddedSource` (the in-process collector and
SQLite store). Both return the same models, so every tool behaves the same on either.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from netspy_tui.models import EventKind, EventPage, LatencyStats, ProgramInfo, SourceInfo, TrafficStats, WindowStats


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Filters for an event query. ``command`` matches the kernel comm exactly.

    ``since`` is exclusive and ``until`` inclusive, both wall-clock, so an incremental poll can
    pass the newest time it has seen. Results are newest first, at most ``limit``.
    """

    kind: EventKind = "connection"
    pid: int | None = None
    command: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100


@runtime_checkable
class TelemetrySource(Protocol):
    async def info(self) -> SourceInfo:
        """Describe the source and check its health (never raises for an unhealthy source)."""
        ...

    async def query(self, q: EventQuery) -> EventPage:
        """Events matching ``q``, newest first."""
        ...

    async def count(self, kind: EventKind, pid: int | None, command: str | None, window_seconds: int) -> int:
        """How many events of ``kind`` in the last ``window_seconds``."""
        ...

    async def stats(
        self,
        kind: EventKind,
        pid: int | None,
        command: str | None,
        window_seconds: int,
        top_n: int = 10,
        buckets: int = 60,
    ) -> WindowStats:
        """Aggregates for the pattern panel, analyze_patterns and list_processes."""
        ...

    async def programs(self) -> list[ProgramInfo]:
        """The eBPF programs behind the data (may be empty)."""
        ...

    async def losses(self, window_seconds: int) -> dict[str, int]:
        """What was lost or shed in the last ``window_seconds``, by cause (empty when nothing, or
        when the source cannot tell)."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class TrafficSource(Protocol):
    """A source that can also say how many bytes each process moved and how long its connects took
    (optional: the tools answer ``available: false`` for a source without it)."""

    async def traffic(self, pid: int | None, command: str | None, window_seconds: int, limit: int = 20
                      ) -> TrafficStats:  # fmt: skip
        """Bytes sent and read in the last ``window_seconds``, per process, remote address and flow."""
        ...

    async def connect_latency(self, pid: int | None, command: str | None, window_seconds: int, limit: int = 20
                              ) -> LatencyStats:  # fmt: skip
        """TCP connect latency in the last ``window_seconds``, per process and destination."""
        ...
