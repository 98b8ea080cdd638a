"""Structured results of the MCP tools (their ``outputSchema``).

Every tool returns one of these as ``structured_content`` next to a readable ``text`` (which is
also the tool's text content block). The gateway parses them back into these models, so the CLI,
the dashboard and the AI layer all see typed data.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from netspy_tui.models import (
    ConnectionEvent,
    EventKind,
    PacketDropEvent,
    ProcessStat,
    ProgramInfo,
    SourceInfo,
    WindowStats,
)


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True)
    text: str
    """The same readable sentence(s) as the text content block."""


class _Windowed(_Result):
    losses: dict[str, int] = Field(default_factory=dict)
    """What was lost or shed in the window, by cause (``shed``, ``ring_full``, ...); empty when
    nothing was. Causes that only cost raw detail leave every count exact."""
    counts_exact: bool = True
    """False when something lost in the window was never counted (see ``losses``)."""


class _Listed(_Result):
    not_kept: int = 0
    """Events counted in the seconds the list spans that were not kept as raw events (shed under
    load): the list shows what was kept; counts and summaries include them."""
    not_events: int = 0
    """Items of the server's answer that were not events (``null``, an unknown kind): skipped."""


class NetworkSummary(_Windowed):
    """``get_network_summary`` and ``get_packet_drop_summary``."""

    kind: EventKind
    count: int
    pid: int | None = None
    process_name: str | None = None
    duration_seconds: int
    source: str
    query_time: datetime


class ConnectionList(_Listed):
    """``list_connections``: newest first."""

    events: list[ConnectionEvent]
    total_count: int
    returned: int
    truncated: bool
    pid: int | None = None
    process_name: str | None = None
    since: datetime | None = None
    source: str
    sampled: bool = False
    """True when the source samples sockets and may miss short-lived connections."""


class PacketDropList(_Listed):
    """``list_packet_drops``: newest first."""

    events: list[PacketDropEvent]
    total_count: int
    returned: int
    truncated: bool
    pid: int | None = None
    process_name: str | None = None
    since: datetime | None = None
    source: str


class PatternAnalysis(_Windowed):
    """``analyze_patterns``: the window's aggregates plus derived rates."""

    stats: WindowStats
    rate_per_minute: float
    failure_ratio: float
    source: str


class ProcessList(_Windowed):
    """``list_processes``: top talkers in the window."""

    kind: EventKind
    duration_seconds: int
    processes: list[ProcessStat]
    total_events: int
    source: str
    not_events: int = 0
    """Items of the server's answer that were not events (``null``, an unknown kind): skipped."""


class ServerStatus(_Result):
    """``server_status``."""

    source: SourceInfo
    programs: list[ProgramInfo] = Field(default_factory=list)


class Insight(_Result):
    """``ai_insights`` and ``contextual_analysis``."""

    model: str | None = None
    """The model that wrote ``text``; None when the local rule-based explainer did."""
    engine: str
    """``openai`` (any OpenAI-compatible server) or ``rules``."""
    tool_calls: list[str] = Field(default_factory=list)
    """Tools the model called, in order, e.g. ``list_connections({"pid": 42})``."""
