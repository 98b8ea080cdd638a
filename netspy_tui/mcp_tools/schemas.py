"""The MCP tools' arguments (their ``inputSchema`` bounds) and structured results (``outputSchema``).

The argument types below are the one definition of every bound: the tools declare them, and the
CLI checks its flags against them (:func:`argument_problem`) before calling a tool, with the same
wording (:func:`invalid_arguments`). Every tool returns one of the result models
(:class:`~netspy_tui.models.NetworkSummary` and its siblings, defined in ``models.py`` because the AI
layer below reads them too) as ``structured_content`` next to a readable ``text`` (which is also the
tool's text content block). The gateway parses them back into these models, so the CLI, the
dashboard and the AI layer all see typed data.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import PydanticCustomError

# The tools' structured results are domain models shared by every layer above the store (the AI
# layer reads them too), so they live in models.py; they are re-exported here, next to the
# argument types, as the tools' output schemas.
from netspy_tui.models import (  # noqa: F401
    MAX_CURSOR,
    ConnectionList,
    Insight,
    LatencyReport,
    NameLookup,
    NetworkSummary,
    PacketDropList,
    PatternAnalysis,
    ProcessList,
    ServerStatus,
    TrafficReport,
    parse_page_token,
    parse_time,
    time_range_problem,
)
from netspy_tui.textsafe import clean

MAX_PID = 4_194_304
MAX_DURATION = 7 * 24 * 3600
MAX_EVENTS = 1000


def _rfc3339(value: str | None) -> str | None:
    """A time the tools can page on, within the times a query can name; kept as given (the tool parses it again)."""
    if value is not None:
        try:
            when = parse_time(value)
        except ValueError:
            raise PydanticCustomError(
                "rfc3339_time",
                "must be an RFC3339 time (e.g. 2026-11-24T12:00:00Z), not '{value}'",
                {"value": clean(value, 60)},
            ) from None
        problem = time_range_problem(when)
        if problem:
            raise PydanticCustomError("rfc3339_time", problem + ", not '{value}'", {"value": clean(value, 60)})
    return value


def _page_token(value: str | None) -> str | None:
    """A list's page token (its ``before``); kept as given (the tool parses it again)."""
    if value is not None:
        try:
            parse_page_token(value)
        except ValueError:
            raise PydanticCustomError(
                "page_token",
                "must be the `before` an earlier list returned (e.g. 1795521600000000000:273000673000000:42), "
                "not '{value}'",
                {"value": clean(value, 60)},
            ) from None
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
After = Annotated[
    int | None,
    Field(
        ge=0,
        le=MAX_CURSOR,
        description="Only events stored after this cursor (the `cursor` of an earlier list): each event once, even "
        "one that arrived late. Sources without a store order return no cursor and ignore it (use `since`).",
    ),
]
ResolvedAfter = Annotated[
    int | None,
    Field(
        ge=0,
        le=MAX_CURSOR,
        description="With `after`: also return, as `updates`, the events listed before (stored at or before `after`) "
        "whose outcome was resolved after this `resolved_cursor` of an earlier list (a connect listed in progress, "
        "now ended). Sources that do not number resolutions return no resolved_cursor and ignore it.",
    ),
]
Until = Annotated[
    str | None,
    Field(
        max_length=64,
        description="Only events at or before this RFC3339 time (for paging backward; the events of that time come "
        "again: `before` pages on without repeats where the source gives it).",
    ),
    AfterValidator(_rfc3339),
]
Before = Annotated[
    str | None,
    Field(
        max_length=64,
        description="Page back: only the events after this one in the list's order (newest first), given as the "
        "`before` of an earlier list with the same filters (its hint names it). Unlike `until` it goes on inside a "
        "run of events of one time, each event once. Only a source with a store has it (a remote server: use `until`).",
    ),
    AfterValidator(_page_token),
]
ConnectionDirection = Annotated[
    Literal["outbound", "inbound", "all"],
    Field(
        description="outbound (default): connect() attempts made on this host; inbound: connections local "
        "processes accepted (the kernel's passive opens, this host's own collector only; `after` does not apply, "
        "page with `since`); all: both, newest first."
    ),
]
NODE_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$"
Node = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=253,
        pattern=NODE_PATTERN,
        description="Only events of this node (an aggregator's node name, k8s_node_name; on one host, its own name).",
    ),
]
Workload = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=200,
        description="Only processes of this workload, as list_processes with group_by='workload' names it "
        "(e.g. 'nginx.service', 'docker 3f2a…', 'host').",
    ),
]
GroupBy = Annotated[
    Literal["process", "workload", "node"],
    Field(description="Rank processes (default), or sum them by workload or by node."),
]
Kind = Annotated[
    Literal["connection", "packet_drop"], Field(description="Rank by connection attempts or packet drops.")
]
Limit = Annotated[int, Field(ge=1, le=200, description="Most processes to return (1 to 200).")]
Addresses = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=64)]],
    Field(min_length=1, max_length=500, description="IP addresses to name (1 to 500)."),
]
#: What one refresh of a live view asks ``dashboard_snapshot`` for.
SnapshotPart = Literal[
    "status", "connections", "drops", "patterns", "drop_patterns", "processes", "names", "recent_bytes", "inbound"
]
SNAPSHOT_PARTS: tuple[SnapshotPart, ...] = ("status", "connections", "drops", "patterns", "drop_patterns", "processes")
#: The seconds the ``recent_bytes`` part covers (a live view's rx/tx sparklines sample it every refresh).
RECENT_BYTES_SECONDS = 2
SnapshotParts = Annotated[
    list[SnapshotPart],
    Field(
        max_length=9,
        description="The parts to return: status (server_status), connections and drops (list_connections / "
        "list_packet_drops since the cursors), inbound (list_connections with direction 'inbound' since "
        "`inbound_since`), patterns and drop_patterns (analyze_patterns / "
        "analyze_packet_drops), processes (list_processes), names (lookup_names of `addresses`), recent_bytes "
        f"(get_traffic over the last {RECENT_BYTES_SECONDS} s, limit 1: the totals).",
    ),
]
NameAddresses = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=64)]] | None,
    Field(max_length=500, description="IP addresses to name (the names part; up to 500)."),
]
DropsAfter = Annotated[
    int | None,
    Field(
        ge=0,
        le=MAX_CURSOR,
        description="The drops part's cursor: only drops stored after this `cursor` of an earlier list.",
    ),
]
DropsSince = Annotated[
    str | None,
    Field(max_length=64, description="The drops part's cursor: only drops strictly newer than this RFC3339 time."),
    AfterValidator(_rfc3339),
]

InboundSince = Annotated[
    str | None,
    Field(
        max_length=64,
        description="The inbound part's cursor: only connections accepted strictly after this RFC3339 time "
        "(inbound connections have no store cursor: re-read a few seconds, their ids are stable).",
    ),
    AfterValidator(_rfc3339),
]


class DashboardSnapshot(BaseModel):
    """One refresh of a live view: each part is exactly what its own tool returns for the same arguments
    (None: not asked for)."""

    model_config = ConfigDict(defer_build=True)  # (built when first used: a one-shot --tool never does)

    text: str
    status: ServerStatus | None = None
    connections: ConnectionList | None = None
    drops: PacketDropList | None = None
    patterns: PatternAnalysis | None = None
    drop_patterns: PatternAnalysis | None = None
    processes: ProcessList | None = None
    names: NameLookup | None = None
    recent_bytes: TrafficReport | None = None
    inbound: ConnectionList | None = None


SummaryText = Annotated[str, Field(min_length=1, max_length=20_000, description="Network summary text to explain.")]
Query = Annotated[str, Field(min_length=1, max_length=4000, description="The question to answer.")]

#: Every tool argument's type, by name (the same name always has the same type and bounds).
ARGUMENT_TYPES: dict[str, Any] = {
    "pid": Pid,
    "process_name": ProcessName,
    "duration": Duration,
    "max_events": MaxEvents,
    "since": Since,
    "after": After,
    "until": Until,
    "before": Before,
    "kind": Kind,
    "limit": Limit,
    "node": Node,
    "workload": Workload,
    "group_by": GroupBy,
    "direction": ConnectionDirection,
    "summary_text": SummaryText,
    "query": Query,
}


def invalid_arguments(tool: str, exc: ValidationError, names: Mapping[str, str] | None = None) -> str:
    """One sentence for every way the arguments break their bounds: ``Invalid arguments for TOOL: ...``.

    ``names`` renames arguments as the caller knows them (the CLI's ``--max-events``)."""
    parts = []
    for err in exc.errors():
        name = ".".join(str(p) for p in err["loc"]) or "arguments"
        loc = (names or {}).get(name, name)
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
        elif kind == "string_pattern_mismatch" and name == "node":
            parts.append("node must be a node name (letters, digits, '.', '-' and '_')")
        elif kind in ("rfc3339_time", "page_token"):
            parts.append(f"{loc} {err['msg']}")
        else:
            parts.append(f"{loc}: {err['msg']}")
    return f"Invalid arguments for {tool}: " + "; ".join(dict.fromkeys(parts)) + "."


@cache
def _arguments_model(names: frozenset[str]) -> type[BaseModel]:
    fields: dict[str, Any] = {name: (ARGUMENT_TYPES[name], None) for name in sorted(names)}
    return create_model("Arguments", **fields)


def time_order_problem(tool: str, arguments: Mapping[str, Any], names: Mapping[str, str] | None = None) -> str | None:
    """The sentence for a ``since`` that is not earlier than ``until`` (an empty window: a mistake, not a question
    whose answer is "nothing"), as a server's ``/api/events`` refuses it; None otherwise (or when either is absent or
    not a time: its own bound says so)."""
    since, until = arguments.get("since"), arguments.get("until")
    if not isinstance(since, str) or not isinstance(until, str):
        return None
    try:
        earlier = parse_time(since) < parse_time(until)
    except ValueError:
        return None
    if earlier:
        return None
    shown = names or {}
    return (f"Invalid arguments for {tool}: {shown.get('since', 'since')} must be earlier than "
            f"{shown.get('until', 'until')}.")  # fmt: skip


def argument_problem(tool: str, arguments: Mapping[str, Any], names: Mapping[str, str] | None = None) -> str | None:
    """None when ``arguments`` are within the tools' bounds, else the sentence the tool would answer."""
    try:
        _arguments_model(frozenset(arguments)).model_validate(dict(arguments))
    except ValidationError as exc:
        return invalid_arguments(tool, exc, names)
    return time_order_problem(tool, arguments, names)
