"""The one interface the MCP tools read from.

Three implementations: :class:`netspy_tui.telemetry.client.HttpSource` (an eBPF server, any API
generation), :class:`netspy_tui.telemetry.embedded.EmbeddedSource` (the in-process collector and
SQLite store) and :class:`netspy_tui.telemetry.memory.MemorySource` (events in memory: the tests'
stand-in and the reference for every figure). All return the same models, so every tool behaves
the same on each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from netspy_tui.models import (
    EventPage,
    EventQuery,
    LatencyStats,
    ProgramInfo,
    Scope,
    SourceInfo,
    TrafficStats,
    WindowStats,
)


@runtime_checkable
class TelemetrySource(Protocol):
    async def info(self) -> SourceInfo:
        """Describe the source and check its health (never raises for an unhealthy source)."""
        ...

    async def query(self, q: EventQuery) -> EventPage:
        """Events matching ``q``, newest first."""
        ...

    async def count(self, scope: Scope) -> int:
        """How many events are in ``scope`` (its kind and process, in its window)."""
        ...

    async def stats(self, scope: Scope, top_n: int = 10, buckets: int = 60) -> WindowStats:
        """Aggregates of ``scope`` for the pattern panel, analyze_patterns and list_processes."""
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


@runtime_checkable
class InboundSource(Protocol):
    """A source that also lists the connections local processes accepted (this host's own collector: the
    kernel counts passive opens with the traffic). Optional: ``list_connections`` says when a source has none."""

    async def inbound(self, q: EventQuery) -> EventPage | None:
        """Accepted connections in ``q`` (``since`` exclusive, ``until`` inclusive), newest first, at most
        ``q.limit``; None when this source does not see them."""
        ...


@runtime_checkable
class ChangingSource(Protocol):
    """A source that says when it has new data (this process's own store): the MCP server notifies its
    clients instead of them polling. A remote eBPF server cannot: its clients keep polling."""

    def on_change(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` (from any thread, quickly) after new events or counts; returns the call that stops it."""
        ...


@runtime_checkable
class FollowedSource(Protocol):
    """A source whose changes come from another server (:class:`~netspy_tui.telemetry.client.HttpSource` of a
    ``netspy-tui serve``, which offers ``/api/changes``): it has ``on_change`` (a :class:`ChangingSource`), yet
    its listeners are called only while :meth:`follow_changes` runs, and only when the server offers the
    stream. Check this before trusting ``isinstance(source, ChangingSource)``."""

    async def offers_changes(self) -> bool:
        """Whether the server tells its changes (asked once; a server without the stream is polled)."""
        ...

    async def follow_changes(self) -> None:
        """Call the ``on_change`` listeners after each change the server reports; returns when the stream
        breaks (the server is gone or stopped telling): from then on, poll."""
        ...
