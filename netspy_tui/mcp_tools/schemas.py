"""The MCP tools' arguments (their ``inputSchema`` bounds) and structured results (``outputSchema``).

The argument types below are the one definition of every bound: the tools declare them, and the
CLI checks its flags against them (:func:`argument_problem`) before calling a tool, with the same
wording (:func:`invalid_arguments`). Every tool returns one of the result models as
``structured_content`` next to a readable ``text`` (which is also the tool's text content block).
The gateway parses them back into these models, so the CLI, the dashboard and the AI layer all
see typed data.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import PydanticCustomError

from netspy_tui.models import (
    ConnectionEvent,
    EventKind,
    LatencyStats,
    PacketDropEvent,
    ProcessStat,
    ProgramInfo,
    SourceInfo,
    TrafficStats,
    WindowStats,
    parse_time,
)
from netspy_tui.textsafe import clean

MAX_PID = 4_194_304
MAX_DURATION = 7 * 24 * 3600
MAX_EVENTS = 1000


def _rfc3339(value: str | None) -> str | None:
    """A time the tools can page on; kept as given (the tool parses it again)."""
    if value is not None:
        try:
            parse_time(value)
        except ValueError:
            raise PydanticCustomError("rfc3339_time", "must be an RFC3339 time (e.g. 2026-11-24T12:00:00Z), "
                                      "not '{value}'", {"value": clean(value, 60)}) from None
    return value


Pid = Annotated[int | None, Field(ge=1, le=MAX_PID, description="Process id (tgid) to filter on.")]
ProcessName = Annotated[
    str | None,
    Field(min_length=1, max_length=64, description="Process name (kernel comm, at most 15 characters) to filter on."),
]
Duration = Annotated[
    int, Field(ge=1, le=MAX_DURATION, description="Time window in seconds, counting back from now (1 to 604800).")
]
MaxEvents = Annotated[int, Field(ge=1, le=MAX_EVENTS, description="Most events to return, newest first (1 to 1000).")]
Since = Annotated[
    str | None,
    Field(
        max_length=64,
        description="Only events strictly newer than this RFC3339 time (for paging forward / incremental polling).",
    ),
    AfterValidator(_rfc3339),
]
Until = Annotated[
    str | None,
    Field(max_length=64, description="Only events at or before this RFC3339 time (for paging backward)."),
    AfterValidator(_rfc3339),
]
Kind = Annotated[Literal["connection", "packet_drop"],
                 Field(description="Rank by connection attempts or packet drops.")]
Limit = Annotated[int, Field(ge=1, le=200, description="Most processes to return (1 to 200).")]
SummaryText = Annotated[str, Field(min_length=1, max_length=20_000, description="Network summary text to explain.")]
Query = Annotated[str, Field(min_length=1, max_length=4000, description="The question to answer.")]

#: Every tool argument's type, by name (the same name always has the same type and bounds).
ARGUMENT_TYPES: dict[str, Any] = {
    "pid": Pid, "process_name": ProcessName, "duration": Duration, "max_events": MaxEvents, "since": Since,
    "until": Until, "kind": Kind, "limit": Limit, "summary_text": SummaryText, "query": Query,
}


def invalid_arguments(tool: str, exc: ValidationError, names: Mapping[str, str] | None = None) -> str:
    """One sentence for every way the arguments break their bounds: ``Invalid arguments for TOOL: ...``.

    ``names`` renames arguments as the caller knows them (the CLI's ``--max-events``)."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "arguments"
        loc = (names or {}).get(loc, loc)
        ctx = err.get("ctx") or {}
        kind = err["type"]
        if kind == "greater_than_equal":
            parts.append(f"{loc} must be >= {ctx.get('ge')}")
        elif kind == "less_than_equal":
            parts.append(f"{loc} must be <= {ctx.get('le')}")
        elif kind in ("int_parsing", "int_type", "int_from_float"):
            parts.append(f"{loc} must be a whole number")
        elif kind == "missing":
            parts.append(f"{loc} is required")
        elif kind == "string_too_short":
            parts.append(f"{loc} must not be empty")
        elif kind == "string_too_long":
            parts.append(f"{loc} must be at most {ctx.get('max_length')} characters")
        elif kind == "rfc3339_time":
            parts.append(f"{loc} {err['msg']}")
        else:
            parts.append(f"{loc}: {err['msg']}")
    return f"Invalid arguments for {tool}: " + "; ".join(dict.fromkeys(parts)) + "."


@cache
def _arguments_model(names: frozenset[str]) -> type[BaseModel]:
    fields: dict[str, Any] = {name: (ARGUMENT_TYPES[name], None) for name in sorted(names)}
    return create_model("Arguments", **fields)


def argument_problem(tool: str, arguments: Mapping[str, Any], names: Mapping[str, str] | None = None) -> str | None:
    """None when ``arguments`` are within the tools' bounds, else the sentence the tool would answer."""
    try:
        _arguments_model(frozenset(arguments)).model_validate(dict(arguments))
    except ValidationError as exc:
        return invalid_arguments(tool, exc, names)
    return None


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


class TrafficReport(_Windowed):
    """``get_traffic``: bytes sent and read per process, remote address and connection."""

    stats: TrafficStats
    source: str


class LatencyReport(_Windowed):
    """``get_connect_latency``: TCP connect latency per process and destination. The attempts come
    from raw connect records: ``counts_exact`` is False when some were shed or lost in the window."""

    stats: LatencyStats
    source: str


class Insight(_Result):
    """``ai_insights`` and ``contextual_analysis``."""

    model: str | None = None
    """The model that wrote ``text``; None when the local rule-based explainer did."""
    engine: str
    """``openai`` (any OpenAI-compatible server) or ``rules``."""
    tool_calls: list[str] = Field(default_factory=list)
    """Tools the model called, in order, e.g. ``list_connections({"pid": 42})``."""
