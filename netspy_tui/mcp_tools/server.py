"""The ``network-telemetry`` MCP server: typed, bounded, read-only tools over a TelemetrySource.

The same server object serves the app's in-process MCP client (the gateway), outside agents over
stdio (``netspy-tui mcp``) and over streamable HTTP (``netspy-tui mcp --http``). Every tool returns
readable text and structured content (a model from :mod:`netspy_tui.mcp_tools.schemas`).
Errors the caller can fix come back as ``isError`` results with one sentence.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import os
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Annotated, Any, TypeVar

import anyio
import anyio.abc
import mcp.server.mcpserver.server as _sdk_server
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.mcpserver.tools import Tool, ToolManager
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ResourceUpdated, ServerEvent
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INVALID_PARAMS,
    CallToolResult,
    EmptyResult,
    Icon,
    SubscribeRequestParams,
    TextContent,
    ToolAnnotations,
    UnsubscribeRequestParams,
)
from pydantic import BaseModel, ValidationError

from netspy_tui import __version__
from netspy_tui.analysis import describe
from netspy_tui.analysis.aggregate import FAILED_OUTCOMES, observed_seconds
from netspy_tui.errors import NetspyError, sole_exception
from netspy_tui.fleet.merge import merge_pages
from netspy_tui.mcp_tools import EVENTS_URI
from netspy_tui.mcp_tools.narrow import (
    PidsView,
    check_node,
    known_nodes,
    one_info,
    source_info,
    source_label,
    source_losses,
    source_started,
)
from netspy_tui.mcp_tools.schemas import (
    MAX_DURATION,
    RECENT_BYTES_SECONDS,
    SNAPSHOT_PARTS,
    Addresses,
    After,
    Before,
    ConnectionDirection,
    DashboardSnapshot,
    DropsAfter,
    DropsSince,
    Duration,
    GroupBy,
    InboundSince,
    Kind,
    LatencyReport,
    Limit,
    MaxEvents,
    NameAddresses,
    Node,
    Pid,
    ProcessName,
    Query,
    ResolvedAfter,
    Since,
    SnapshotParts,
    SummaryText,
    TrafficReport,
    Until,
    Workload,
    invalid_arguments,
    time_order_problem,
)
from netspy_tui.models import (
    LOSS_CAUSES,
    ConnectionEvent,
    ConnectionList,
    EventKind,
    EventPage,
    EventQuery,
    GroupStat,
    Insight,
    LatencyStats,
    NameLookup,
    NetworkSummary,
    PacketDropEvent,
    PacketDropList,
    PatternAnalysis,
    ProcessList,
    Scope,
    ServerStatus,
    TrafficStats,
    WindowStats,
    counts_exact,
    describe_losses,
    is_ip_address,
    parse_page_token,
    parse_time,
    utcnow,
)
from netspy_tui.names.resolver import NameResolver, address_of
from netspy_tui.names.workload import WorkloadResolver, k8s_identity
from netspy_tui.telemetry.source import ChangingSource, FollowedSource, TelemetrySource, TrafficSource
from netspy_tui.textsafe import clean

log = logging.getLogger(__name__)


def _leave_logging_alone(level: str = "INFO") -> None:
    """Replaces the SDK's ``configure_logging``, which every ``MCPServer()`` calls: it imports rich (~25 ms of
    every ``--tool`` start) to build a root handler for ``logging.basicConfig`` — dropped when the root logger
    already has one, as in every netspy-tui command (:mod:`netspy_tui.logs`), and unwanted where it has none:
    a program embedding this server keeps its own logging."""


_sdk_server.configure_logging = _leave_logging_alone

SERVER_NAME = "network-telemetry"
#: Shortest gap between two change notifications (a burst of writes is one notification): what outside agents are
#: promised. A dashboard's own in-process server waits its refresh interval instead (see :func:`create_server`).
CHANGE_GAP = 0.1
READ_ONLY = ToolAnnotations(readOnlyHint=True, destructiveHint=False, idempotentHint=True, openWorldHint=False)

S = TypeVar("S", Scope, EventQuery)
#: processes whose workloads a workload filter or grouping looks at, for a list (no window of its own)
WORKLOAD_LOOKBACK = 3600
#: A one-host eBPF server's events do not say their workload (its host knows them: netspy-tui serve's /mcp does).
_REMOTE_WORKLOADS = ("{what} the processes' own host: this eBPF server's events do not say their workload; "
                     "ask the server's own MCP tools (netspy-tui serve answers MCP at /mcp), or filter by pid or "
                     "process_name.")  # fmt: skip
#: events read to find the workloads a source's events name (group_by='workload' off this host)
STATS_EVENTS = 10_000

#: The AI tools' implementation: (source, tool name, arguments) -> Insight (see mcp_tools.ai_bridge).
AIToolsHook = Callable[[TelemetrySource, str, dict[str, Any]], Awaitable[Insight]]


@dataclass
class ToolContext:
    """What the tools read from: lives for the server's lifetime (the lifespan context)."""

    source: TelemetrySource
    ai_tools: AIToolsHook | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    names: NameResolver | None = None
    """Destination names (None: addresses only)."""
    workloads: WorkloadResolver | None = None
    """Processes' workloads from their cgroups (only for this host's own collector)."""
    names_wait: float = 0.0
    """How long a tool may wait for names it does not know yet (0: only the ones known now; a
    one-shot command waits up to the resolver's timeout, a live view shows them next refresh)."""

    async def hostnames(self, addresses: Iterable[str]) -> dict[str, str]:
        """address -> name for those of ``addresses`` that have one (within ``names_wait``)."""
        if self.names is None or not self.names.enabled:
            return {}
        wanted = {a for a in (address_of(d) for d in addresses) if a}
        if not wanted:
            return {}
        if self.names_wait > 0:
            return await anyio.to_thread.run_sync(self.names.resolve, wanted, self.names_wait)
        return self.names.known(wanted)

    async def live_workloads(self) -> bool:
        """True when pids are this host's processes, whose workloads the cgroups tell (this host's
        own live collector, not a remote server or a recording)."""
        if self.workloads is None:
            return False
        info = await source_info(self.source)
        return info.kind == "embedded" and info.collector in ("ebpf", "procfs")

    async def workload_names(self, pids: Iterable[int]) -> dict[int, str]:
        """pid -> workload name, when the source is this host's own live collector (a remote
        server's or a recording's pids are not this host's processes)."""
        if not await self.live_workloads():
            return {}
        resolver = self.workloads
        assert resolver is not None

        def read() -> dict[int, str]:
            found = {pid: resolver.of_pid(pid) for pid in set(pids) if pid > 0}
            return {pid: w.name for pid, w in found.items() if w is not None}

        return await anyio.to_thread.run_sync(read)

    async def narrow(self, scope: S) -> tuple[TelemetrySource, S]:
        """The source and scope a tool reads with its ``node`` and ``workload`` applied (see
        :mod:`netspy_tui.mcp_tools.narrow`); ToolError for a node or workload this source lacks."""
        source = self.source
        if not await check_node(source, scope.node):
            scope = dataclasses.replace(scope, node=None)
        if scope.workload is None:
            return source, scope
        if await self.live_workloads():
            window = scope.window if isinstance(scope, Scope) else WORKLOAD_LOOKBACK
            by_workload = await self.pids_by_workload(Scope(scope.kind, window=window))
            if scope.workload not in by_workload:
                seen = ", ".join(f"'{clean(w, 40)}'" for w in sorted(by_workload)[:10]) or "none"
                raise ToolError(
                    f"no process of workload '{clean(scope.workload, 60)}' in the last {window} s "
                    f"(workloads seen: {seen}); list_processes with group_by='workload' names them."
                )
            return PidsView(source, by_workload[scope.workload]), scope
        info = await source_info(source)
        if info.kind == "embedded" and info.generation != "aggregator":
            raise ToolError(
                "workload filters need this host's live collector (eBPF or procfs): the processes of a "
                "recording or history are not this host's now; filter by pid or process_name instead."
            )
        if info.kind == "http" and info.generation != "aggregator":
            raise ToolError(_REMOTE_WORKLOADS.format(what="workload filters need"))
        return source, scope

    async def pids_by_workload(self, scope: Scope) -> dict[str, list[int]]:
        """This host's processes in ``scope``'s window, by workload (live collector only)."""
        stats = await self.source.stats(dataclasses.replace(scope, workload=None), top_n=1, buckets=1)
        names = await self.workload_names(pid for p in stats.processes for pid in p.pids)
        out: dict[str, list[int]] = {}
        for pid, name in sorted(names.items()):
            out.setdefault(name, []).append(pid)
        return out

    async def with_workloads(self, events: list[ConnectionEvent]) -> list[ConnectionEvent]:
        names = await self.workload_names(e.pid for e in events)
        return [e.model_copy(update={"workload": names[e.pid]}) if e.pid in names else e for e in events]

    async def named(self, events: list[ConnectionEvent]) -> list[ConnectionEvent]:
        """``events`` with their destinations' names, and netspy-tui's own DNS questions marked."""
        resolver = self.names
        if resolver is None or not resolver.enabled or not events:
            return events
        keys = [address_of(e.destination_ip or e.destination) or "" for e in events]
        names = await self.hostnames(keys)
        own = os.getpid()  # (is_own_query's first test, made here once: most events are not this process's)
        out = []
        for e, key in zip(events, keys, strict=True):
            update: dict[str, Any] = {}
            name = names.get(key)
            if name:
                update["hostname"] = name
            if e.pid == own and resolver.is_own_query(e.pid, e.destination_ip, e.destination_port):
                update["own_dns_query"] = True
            out.append(e.model_copy(update=update) if update else e)
        return out


def _accepts_integer(schema: dict[str, Any]) -> bool:
    options = schema.get("anyOf", [schema])
    return any(isinstance(o, dict) and o.get("type") == "integer" for o in options)


def _argument_problems(parameters: dict[str, Any], arguments: dict[str, Any]) -> list[str]:
    """What the schema forbids but lax validation would let through: unknown names, true/false as numbers."""
    properties: dict[str, Any] = parameters.get("properties", {})
    problems = []
    unknown = [clean(k, 40) for k in arguments if k not in properties]
    if unknown:
        expected = ", ".join(properties) or "none"
        names = ", ".join(f"'{k}'" for k in unknown[:5])
        problems.append(f"unknown argument{'s' if len(unknown) > 1 else ''} {names} (expected: {expected})")
    for key, value in arguments.items():
        if isinstance(value, bool) and key in properties and _accepts_integer(properties[key]):
            problems.append(f"{key} must be a whole number")
    return problems


class _LazyTools(ToolManager):
    """The server's tools, each built when first asked for: building one (its argument model, input and output
    JSON schemas) is ~10 ms of CPU, ~0.15 s for all of them, and a dashboard calls one tool (dashboard_snapshot)
    on its way to the first data. ``tools/list`` builds every tool, in the order they were registered.

    A call needs less: the arguments' model and input schema. The output schema (JSON schema generation over the
    result's model: 13 of dashboard_snapshot's 16 ms) is only published, never checked (see :meth:`_built`), so
    a tool asked for by a call before any listing is built without it; ``tools/list`` builds the full one."""

    def __init__(self, warn_on_duplicate_tools: bool = True) -> None:
        super().__init__(warn_on_duplicate_tools)
        self._later: dict[str, Callable[..., Tool]] = {}
        self._order: list[str] = []
        self._callable: dict[str, Tool] = {}
        """Tools built for calls only (no output schema), until the listing builds them whole."""

    def defer(self, name: str, build: Callable[..., Tool]) -> None:
        """Register ``name``, built by ``build`` at its first use (a duplicate name keeps the first, as the SDK)."""
        if name in self._later or name in self._tools:
            if self.warn_on_duplicate_tools:
                log.warning("Tool already exists: %s", name)
            return
        self._later[name] = build
        self._order.append(name)

    def _built(self, name: str) -> Tool | None:
        build = self._later.pop(name, None)
        if build is not None:
            tool = build()
            # Every tool's structured content is a model's dump (_result; dashboard_snapshot's parts are such
            # dumps), so it matches the published outputSchema by construction; the SDK validating it again against
            # the model was ~40 % of a dashboard refresh and ~10 % of a list_connections(100) call. The schemas stay
            # published; the check is skipped (FuncMetadata's fields are read live: no output_model, no validation).
            # tests/mcp/test_tools_in_memory.py validates every tool's answer against its outputSchema.
            tool.fn_metadata.output_model = None
            self._tools[name] = tool
            self._callable.pop(name, None)
        return self._tools.get(name)

    def get_tool(self, name: str) -> Tool | None:
        """The tool to call: the whole one once listed, else one built without its output schema (every tool
        returns a CallToolResult, which the SDK passes on as it is when there is no output model)."""
        tool = self._tools.get(name) or self._callable.get(name)
        build = self._later.get(name) if tool is None else None
        if build is not None:
            tool = self._callable[name] = build(structured_output=False)
        return tool

    def list_tools(self) -> list[Tool]:
        return [tool for name in list(self._order) if (tool := self._built(name)) is not None]

    def add_tool(self, fn: Callable[..., Any], name: str | None = None, *args: Any, **kwargs: Any) -> Tool:
        tool = super().add_tool(fn, name, *args, **kwargs)
        if tool.name not in self._order:
            self._order.append(tool.name)
        return tool

    def remove_tool(self, name: str) -> None:
        self._callable.pop(name, None)
        if self._later.pop(name, None) is None:
            super().remove_tool(name)
        self._order.remove(name)


class TelemetryServer(MCPServer[ToolContext]):
    """MCPServer whose errors read as one sentence each.

    Arguments are checked against the tool's schema more strictly than pydantic's lax mode: an
    unknown argument (``process`` for ``process_name``) is an error instead of being silently
    ignored — a caller would otherwise get the figures for every process — and ``true`` is not
    the pid 1. A tool that fails unexpectedly says so in one sentence; the traceback goes to the log.
    """

    only: frozenset[str] | None = None
    """Register only these tools (None: all). A one-shot ``--tool`` builds the server for the one
    tool it calls: each registration builds pydantic models for the tool's arguments and result."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tool_manager = _LazyTools(warn_on_duplicate_tools=self.settings.warn_on_duplicate_tools)

    def add_tool(
        self,
        fn: Callable[..., Any],
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
        annotations: ToolAnnotations | None = None,
        icons: list[Icon] | None = None,
        meta: dict[str, Any] | None = None,
        structured_output: bool | None = None,
    ) -> None:
        """Register ``fn`` (built at its first use, see :class:`_LazyTools`), unless :attr:`only` leaves it out."""
        tool_name = name or fn.__name__
        if self.only is not None and tool_name not in self.only:
            return
        tools = self._tool_manager
        assert isinstance(tools, _LazyTools)
        tools.defer(
            tool_name,
            partial(
                Tool.from_function,
                fn,
                name=name,
                title=title,
                description=description,
                annotations=annotations,
                icons=icons,
                meta=meta,
                structured_output=structured_output,
            ),
        )

    async def _handle_call_tool(self, ctx: Any, params: Any) -> Any:
        """``tools/call``: the result handed to the SDK's outbound pass in its wire form (a handler may return a
        dict). The SDK dumps a returned CallToolResult whole, walking the structured content once more, though it
        is already a model's JSON-mode dump (:func:`_result`): ~0.26 ms per 100 events listed (the 85 kB of
        a list_connections(100)), a walk of what the outbound pass then validates and dumps anyway."""
        result = await super()._handle_call_tool(ctx, params)
        if type(result) is not CallToolResult or result.structured_content is None:
            return result
        wire = result.model_dump(by_alias=True, mode="json", exclude_none=True, exclude={"structured_content"})
        wire["structuredContent"] = result.structured_content
        return wire

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[ToolContext, Any] | None = None
    ) -> Any:
        tool = self._tool_manager.get_tool(name)
        if tool is not None and isinstance(arguments, dict):
            problems = _argument_problems(tool.parameters, arguments)
            if problems:
                raise ToolError(f"Invalid arguments for {name}: " + "; ".join(problems) + ".")
            order = time_order_problem(name, arguments)  # (each bound alone is the argument model's)
            if order:
                raise ToolError(order)
        try:
            return await super().call_tool(name, arguments, context)
        except UnexpectedToolError as exc:
            cause = sole_exception(exc.__cause__) if exc.__cause__ is not None else None
            if isinstance(cause, NetspyError):
                raise ToolError(str(cause)) from cause
            log.error("tool %s failed unexpectedly", name, exc_info=cause)
            what = type(cause).__name__ if cause is not None else "error"
            raise ToolError(f"{name} failed unexpectedly ({what}); the server's log has the details.") from cause
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                raise ToolError(invalid_arguments(name, cause)) from cause
            if isinstance(cause, NetspyError):
                raise ToolError(str(cause)) from cause
            raise


#: Set while ``dashboard_snapshot`` gathers its parts: a part's readable text block is not built (the snapshot
#: returns structured parts only), and an event list's ``text`` is one line instead of a line per event
#: (formatting and cleaning up to 1,000 lines was most of a list call's cost; a live view shows the events).
_PARTS_ONLY: ContextVar[bool] = ContextVar("netspy_parts_only", default=False)


def _result(model: BaseModel, text: str) -> CallToolResult:
    """Readable text plus structured content. The text is cleaned once more as it leaves the server:
    whatever a description forgot to escape (a server's free-text field), no escape sequence reaches a
    client's terminal or a model's context. The structured content keeps the exact values."""
    if _PARTS_ONLY.get():
        return CallToolResult(content=[], structured_content=model.model_dump(mode="json"))
    return CallToolResult(
        content=[TextContent(type="text", text=clean(text, None, keep_newlines=True))],
        structured_content=model.model_dump(mode="json"),
    )


def _ctx(ctx: Context[ToolContext, Any]) -> ToolContext:
    return ctx.request_context.lifespan_context


async def _check_scope(source: TelemetrySource, scope: Scope | EventQuery) -> None:
    """Both pid and process_name given: they must describe the same process."""
    pid, command = scope.pid, scope.command
    if pid is None or command is None:
        return
    page = await source.query(EventQuery(kind=scope.kind, pid=pid, limit=1))
    if page.events and page.events[0].command != command:
        actual = clean(page.events[0].command, 32)
        raise ToolError(
            f"pid {pid} is '{actual}', not '{clean(command, 32)}': pass only one of pid and process_name, "
            "or make them agree."
        )


def _time(value: str | None) -> datetime | None:
    """A ``since``/``until`` argument (already checked by its schema type) as a datetime."""
    return None if value is None else parse_time(value)


def _token(value: str | None) -> tuple[int, int, int] | None:
    """A ``before`` argument (already checked by its schema type) as :attr:`EventQuery.before`."""
    return None if value is None else parse_page_token(value)


async def _summary(ctx: Context[ToolContext, Any], scope: Scope) -> CallToolResult:
    tc = _ctx(ctx)
    await _check_scope(tc.source, scope)
    source, narrowed = await tc.narrow(scope)
    count = await source.count(narrowed)
    kind, pid, process_name, duration = scope.kind, scope.pid, scope.command, scope.window
    label = await source_label(tc.source)
    losses = await source_losses(tc.source, duration)
    text = describe.with_notes(
        describe.summary_text(kind, count, pid, process_name, duration),
        describe.comm_note(process_name, count),  # ("systemd-resolved" made 0: the kernel says "systemd-resolve")
        describe.filter_note(scope.node, scope.workload),
        describe.loss_note(losses),
    )
    return _result(NetworkSummary(text=text, kind=kind, count=count, pid=pid, process_name=process_name,
                                  duration_seconds=duration, source=label, query_time=utcnow(), losses=losses,
                                  counts_exact=counts_exact(losses)), text)  # fmt: skip


async def _list(ctx: Context[ToolContext, Any], q: EventQuery) -> tuple[list[Any], int, str, bool, EventPage]:
    tc = _ctx(ctx)
    await _check_scope(tc.source, q)
    source, narrowed = await tc.narrow(q)
    if q.before is not None and not getattr(source, "pages_by_token", False):
        label = clean(await source_label(tc.source), 80)
        raise ToolError(f"before needs a source that numbers its events, and {label} gives no page tokens: page "
                        "back with until.")  # fmt: skip
    page = await source.query(narrowed)
    if not page.events and not page.not_kept and q.after is None and q.until is None and q.before is None:
        page = await _counted_not_kept(source, narrowed, page)
    info = await source_info(tc.source)
    return list(page.events), page.total_count, info.label, info.sampled, page


async def _counted_not_kept(source: TelemetrySource, q: EventQuery, page: EventPage) -> EventPage:
    """An empty ``page`` that says how many events of ``q``'s window (since ``q.since``, else the longest
    window a tool counts) the source counted without keeping them (shed, or removed by the store's row
    limit or retention): the counts outlive the raw events, and "no events found" would be wrong."""
    now = utcnow()
    since = q.since or now - timedelta(seconds=MAX_DURATION)
    window = min(MAX_DURATION, math.ceil((now - since).total_seconds()))
    if window < 1:
        return page
    try:
        counted = await source.count(Scope(q.kind, q.pid, q.command, window, q.node, q.workload))
    except NetspyError as exc:  # (a server that will not count so long a window: the list stands without the note)
        log.info("no count for the empty list's window: %s", exc)
        return page
    if counted <= 0:
        return page
    # (the window counted: a since older than the longest window is not what the count covers)
    counted_since = now - timedelta(seconds=window)
    return page.model_copy(update={"not_kept": counted, "not_kept_since": counted_since, "not_kept_until": now})


async def _inbound(ctx: Context[ToolContext, Any], q: EventQuery) -> EventPage | None:
    """Connections local processes accepted, in ``q`` (None: the source does not see them)."""
    tc = _ctx(ctx)
    await _check_scope(tc.source, q)
    source, narrowed = await tc.narrow(q)
    reader = getattr(source, "inbound", None)
    if reader is None:
        return None
    page: EventPage | None = await reader(dataclasses.replace(narrowed, node=None))
    return page


def _listed(
    model: type[ConnectionList] | type[PacketDropList],
    kind: EventKind,
    events: list[Any],
    total: int,
    pid: int | None,
    process_name: str | None,
    since: datetime | None,
    label: str,
    page: EventPage,
    sampled: bool = False,
    node: str | None = None,
    workload: str | None = None,
    direction: str = "outbound",
    inbound_available: bool | None = None,
) -> CallToolResult:
    """``list_connections`` / ``list_packet_drops``: the page as text and as the tool's result."""
    if _PARTS_ONLY.get():
        text = f"{len(events)} of {total} {'connection' if kind == 'connection' else 'packet drop'} events listed."
    else:
        missing = "" if inbound_available is not False else (
            "Note: this source does not see inbound connections (this host's own collector counts them in the "
            "kernel: run netspy-tui on that host)" + ("; the list holds connect() attempts only." if direction == "all"
                                                       else ".")
        )  # fmt: skip
        listed = describe.list_text(kind, events, total, pid, process_name, sampled, direction, page.before)
        text = describe.with_notes(listed, describe.comm_note(process_name, total), *_page_notes(page, kind),
                                   describe.filter_note(node, workload), missing)  # fmt: skip
    extra: dict[str, Any] = {}
    if model is ConnectionList:
        extra = {"sampled": sampled, "direction": direction, "inbound_available": inbound_available}
    result = model(
        text=text,
        events=events,
        total_count=total,
        returned=len(events),
        truncated=total > len(events),
        pid=pid,
        process_name=process_name,
        since=since,
        source=label,
        not_kept=page.not_kept,
        not_events=page.not_events,
        cursor=page.cursor,
        updates=page.updates if model is ConnectionList else [],
        resolved_cursor=page.resolved_cursor if model is ConnectionList else None,
        before=page.before if events else None,
        **extra,
    )
    return _result(result, text)


def _page_notes(page: EventPage, kind: EventKind) -> tuple[str, str]:
    return (
        describe.not_kept_note(page.not_kept, page.not_kept_since, page.not_kept_until, kind, listed=bool(page.events)),
        describe.not_events_note(page.not_events),
    )


async def _patterns(
    source: TelemetrySource, scope: Scope, top_n: int = 10, tc: ToolContext | None = None
) -> PatternAnalysis:
    await _check_scope(source, scope)
    narrowed_source, narrowed = await tc.narrow(scope) if tc is not None else (source, scope)
    stats = await narrowed_source.stats(narrowed, top_n=top_n)
    label = await source_label(source)
    losses = await source_losses(source, scope.window)
    # over the seconds observed: a recording replayed, or a collector started within the window, has seen less
    observed = observed_seconds(scope.window, stats.until or utcnow(), stats.first_seen, source_started(source))
    rate = stats.total * 60 / observed
    failures = sum(c.count for c in stats.outcomes if c.key in FAILED_OUTCOMES) if scope.kind == "connection" else 0
    ratio = failures / stats.total if stats.total else 0.0
    names = await tc.hostnames(c.key for c in stats.top_destinations) if tc is not None else {}
    text = describe.with_notes(
        describe.patterns_text(stats, rate, ratio, names, observed),
        describe.comm_note(scope.command, stats.total),
        describe.filter_note(scope.node, scope.workload),
        describe.loss_note(losses),
        describe.not_events_note(stats.not_events),
    )
    return PatternAnalysis(
        text=text,
        stats=stats,
        rate_per_minute=round(rate, 3),
        failure_ratio=round(ratio, 4),
        source=label,
        observed_seconds=observed,
        losses=losses,
        counts_exact=counts_exact(losses),
        hostnames=names,
    )


#: the losses that touch get_traffic's figures
TRAFFIC_LOSSES = ("traffic_full", "finals_full", "tcp_tail_uncounted", "tcp_netns_unread", "tcp_forgotten_dropped")


async def _extension(ctx: Context[ToolContext, Any], method: str, model: type[Any], pid: int | None,
                     process_name: str | None, duration: int, limit: int, causes: tuple[str, ...],
                     node: str | None = None, workload: str | None = None
                     ) -> tuple[Any, str, dict[str, int]]:  # fmt: skip
    """A :class:`TrafficSource` figure (``available`` False from a source without it), the source's
    label, and the window's losses of ``causes`` (those that touch this figure). Bytes and latency
    are kept per process, not per workload, and only for this node."""
    tc = _ctx(ctx)
    source = tc.source
    await _check_scope(source, Scope(kind="connection", pid=pid, command=process_name, window=duration))
    if workload is not None:
        raise ToolError(
            f"{method.replace('_', ' ')} is kept per process, not per workload: pass the pid or "
            "process_name of one of its processes (list_processes names them, with their workloads)."
        )
    if await check_node(source, node):
        raise ToolError(f"{method.replace('_', ' ')} is this host's own figure; ask the node's agent for its "
                        "node's (serve on that node), or leave node out.")  # fmt: skip
    if isinstance(source, TrafficSource):
        stats = await getattr(source, method)(pid, process_name, duration, limit)
    else:
        stats = model(window_seconds=duration, pid=pid, command=process_name, until=utcnow(), available=False,
                      unavailable_reason=getattr(source, "figures_unavailable", ""))  # fmt: skip
    label = await source_label(source)
    losses = {k: v for k, v in (await source_losses(source, duration)).items() if k in causes and v}
    return stats, label, losses


def _latency_loss_note(losses: dict[str, int]) -> str:
    """What the window's lost raw events mean for connect latency (``LatencyReport.counts_exact`` is False then):
    it is measured on the raw events kept, so a connect whose event was shed or lost is in none of its figures.
    (The generic :func:`describe.loss_note` calls a shed exact: true of the counts kept apart, not of latency.)"""
    parts = [f"{n:,} {LOSS_CAUSES.get(cause, (cause.replace('_', ' '), False))[0]}"
             for cause, n in sorted(losses.items(), key=lambda kv: -kv[1]) if n]  # fmt: skip
    if not parts:
        return ""
    return (f"Note: {', '.join(parts)} in this window; latency is measured on the raw events kept, so these "
            "figures leave those connects out: the counts are short and the percentiles are of the rest.")  # fmt: skip


def _group(key: str, stats: WindowStats) -> GroupStat:
    return GroupStat(key=key, attempts=stats.total, failures=sum(p.failures for p in stats.processes),
                     processes=[p.command for p in stats.processes[:10]])  # fmt: skip


async def _node_groups(tc: ToolContext, scope: Scope, stats: WindowStats) -> list[GroupStat]:
    """``list_processes`` by node: each node's own figures (one host: itself)."""
    nodes = await known_nodes(tc.source)
    if nodes is None:
        raise ToolError("this eBPF server does not say which nodes it has: group_by='node' needs an aggregator "
                        "(serve --aggregate) or this host's own collector.")  # fmt: skip
    info = await source_info(tc.source)
    if info.generation != "aggregator":
        return [_group(nodes[0], stats)] if nodes else []
    if scope.node is not None:
        nodes = [scope.node]
    parts = [await tc.source.stats(dataclasses.replace(scope, node=n), top_n=1, buckets=1) for n in nodes]
    return [_group(n, part) for n, part in zip(nodes, parts, strict=True) if part.total]


async def _workload_groups(tc: ToolContext, source: TelemetrySource, scope: Scope, stats: WindowStats
                           ) -> list[GroupStat]:  # fmt: skip
    """``list_processes`` by workload: this host's processes by their cgroups, or the events' own
    ``workload`` field (an aggregator's agents, a server); events that do not say one are ``unknown``."""
    groups = []
    unnamed: list[str] = []  # the commands of the events no group has, busiest first
    if await tc.live_workloads():
        named: set[int] = set()
        for name, pids in (await tc.pids_by_workload(scope)).items():
            view = PidsView(source, pids)
            named.update(view.pids)
            part = await view.stats(scope, top_n=1, buckets=1)
            if part.total:
                groups.append(_group(name, part))
        unnamed = [p.command for p in stats.processes if not named.issuperset(p.pids)]
    else:
        info = await source_info(source)
        if info.kind == "embedded" and info.generation != "aggregator":
            raise ToolError("group_by='workload' needs this host's live collector (eBPF or procfs), an aggregator "
                            "or a server whose events carry their workload.")  # fmt: skip
        if info.kind == "http" and info.generation != "aggregator":
            raise ToolError(_REMOTE_WORKLOADS.format(what="group_by='workload' needs"))
        now = utcnow()
        page = await source.query(EventQuery(scope.kind, since=now - timedelta(seconds=scope.window + 1),
                                             limit=STATS_EVENTS, node=scope.node, workload=scope.workload))  # fmt: skip
        names = sorted({w for e in page.events if (w := getattr(e, "workload", None))})
        for name in names:
            part = await source.stats(dataclasses.replace(scope, workload=name), top_n=1, buckets=1)
            if part.total:
                groups.append(_group(name, part))
        without = Counter(e.command for e in page.events if not getattr(e, "workload", None))
        unnamed = [command for command, _ in without.most_common()]
    rest = stats.total - sum(g.attempts for g in groups)
    if rest > 0:  # the window's events no group has: its exact figures less the groups' (failures too)
        failures = sum(p.failures for p in stats.processes) - sum(g.failures for g in groups)
        groups.append(GroupStat(key="unknown", attempts=rest, failures=max(0, failures), processes=unnamed[:10]))
    return groups


def create_server(
    source: TelemetrySource,
    ai_tools: AIToolsHook | None = None,
    *,
    names: NameResolver | None = None,
    names_wait: float = 0.0,
    workloads: WorkloadResolver | None = None,
    only: Iterable[str] | None = None,
    change_gap: float | None = None,
) -> TelemetryServer:
    """Build the MCP server over ``source``. ``ai_tools`` answers the AI tools (see netspy_tui.ai);
    ``names`` names destinations in the tools' results (waiting at most ``names_wait`` per call);
    ``only`` limits the tools offered to those named (a one-shot command; default: all); ``change_gap`` is the
    shortest gap between two change notifications (default :data:`CHANGE_GAP`; a server whose one client
    refreshes at most every N seconds need not tell it more often: each notification is a message through the
    SDK's streams and a wake of the loop from the writing thread, up to ten a second while events arrive, of which
    a dashboard refreshing every second uses one)."""

    bus = _ChangeBus()
    change_gap = CHANGE_GAP if change_gap is None else change_gap
    # A remote server's changes (HttpSource of a netspy-tui server) are followed only once a client asks whether
    # this server notifies, and only when that server offers them; a source that changes itself notifies always.
    remote = _RemoteChanges(source, bus, change_gap) if isinstance(source, FollowedSource) else None
    notifies = remote is None and isinstance(source, ChangingSource)

    @asynccontextmanager
    async def lifespan(server: MCPServer[ToolContext]) -> AsyncIterator[ToolContext]:
        async with anyio.create_task_group() as tasks:
            if remote is not None:
                remote.tasks, remote.server = tasks, server
            elif isinstance(source, ChangingSource):
                tasks.start_soon(_publish_changes, source, bus, change_gap)
            try:
                yield ToolContext(
                    source=source, ai_tools=ai_tools, names=names, names_wait=names_wait, workloads=workloads
                )
            finally:
                tasks.cancel_scope.cancel()

    srv = TelemetryServer(
        SERVER_NAME,
        version=__version__,
        instructions=(
            "Read-only network telemetry of one Linux host: every connect() attempt with its outcome, "
            "kernel packet drops with reasons, bytes sent and read per process and connection with TCP "
            "retransmits (get_traffic), and how long TCP connects take (get_connect_latency). "
            "Start with get_network_summary or list_processes, then narrow "
            "with pid or process_name."
        ),
        log_level="WARNING",
        lifespan=lifespan,
        subscriptions=bus,
    )
    srv.only = frozenset(only) if only is not None else None

    @srv.resource(
        EVENTS_URI,
        name="events",
        title="New telemetry",
        description="Updated (notifications/resources/updated: after resources/subscribe, or on subscriptions/listen "
        "from protocol 2026-07-28) "
        f"whenever new events or counts are stored, at most every {change_gap:g} s: read the tools again after it. "
        "Reading it says whether this server notifies at all (a remote eBPF server's data does not: poll instead; a "
        "remote netspy-tui server's does while it tells its changes, and the listen stream ends when it stops).",
        mime_type="application/json",
    )
    async def events_resource() -> str:
        return json.dumps({"notifies": notifies if remote is None else await remote.start()})

    async def subscribe(ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams) -> EmptyResult:
        """``resources/subscribe`` of a client on a protocol before 2026-07-28 (Claude Desktop, the Inspector and
        most agents today): told by ``notifications/resources/updated`` on its session, as listen streams are."""
        _updated_only(str(params.uri))
        if remote is not None:
            await remote.start()  # (a remote server's changes are followed from the first client that asks)
        bus.legacy.add(_connection(ctx))
        return EmptyResult()

    async def unsubscribe(ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams) -> EmptyResult:
        _updated_only(str(params.uri))
        bus.legacy.discard(_connection(ctx))
        return EmptyResult()

    srv._lowlevel_server.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)  # noqa: SLF001
    srv._lowlevel_server.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)  # noqa: SLF001

    @srv.tool(annotations=READ_ONLY)
    async def get_network_summary(
        ctx: Context[ToolContext, Any],
        pid: Pid = None,
        process_name: ProcessName = None,
        duration: Duration = 60,
        node: Node = None,
        workload: Workload = None,
    ) -> Annotated[CallToolResult, NetworkSummary]:
        """Count outbound connection attempts (connect() calls) over the last `duration` seconds, for one process
        or all. Inbound (accepted) connections are not in this count: get_traffic counts them."""
        return await _summary(ctx, Scope("connection", pid, process_name, duration, node, workload))

    @srv.tool(annotations=READ_ONLY)
    async def list_connections(
        ctx: Context[ToolContext, Any],
        pid: Pid = None,
        process_name: ProcessName = None,
        max_events: MaxEvents = 100,
        since: Since = None,
        until: Until = None,
        node: Node = None,
        workload: Workload = None,
        after: After = None,
        direction: ConnectionDirection = "outbound",
        resolved_after: ResolvedAfter = None,
        before: Before = None,
    ) -> Annotated[CallToolResult, ConnectionList]:
        """List recent connections newest first: connect() attempts (destination, protocol, outcome), or with
        `direction` the connections local processes accepted (inbound: who connected, on which local port), or
        both."""
        if before is not None and direction != "outbound":
            raise ToolError("before pages the connect() attempts (direction 'outbound') only: page inbound "
                            "connections back with until.")  # fmt: skip
        since_dt = _time(since)
        query = EventQuery("connection", pid, process_name, since_dt, _time(until), max_events, node, workload, after,
                           resolved_after, _token(before))  # fmt: skip
        tc = _ctx(ctx)
        events: list[Any] = []
        total, label, sampled, page = 0, "", False, EventPage(events=[], total_count=0)
        if direction != "inbound":
            events, total, label, sampled, page = await _list(ctx, query)
        available = None
        if direction != "outbound":
            inbound = await _inbound(ctx, dataclasses.replace(query, after=None))
            available = inbound is not None
            info = await source_info(tc.source)
            label, sampled = info.label, info.sampled
            if inbound is not None:
                merged = merge_pages([page, inbound], max_events) if direction == "all" else inbound
                page = merged.model_copy(update={"cursor": page.cursor})
                events, total = list(page.events), page.total_count
        conns = [e for e in events if isinstance(e, ConnectionEvent)]
        outbound = [i for i, e in enumerate(conns) if e.direction == "outbound"]  # (an inbound one's destination is
        for i, e in zip(outbound, await tc.named([conns[i] for i in outbound]), strict=True):  # this host: no name)
            conns[i] = e
        conns = await tc.with_workloads(conns)
        if page.updates:
            updates = [e for e in page.updates if isinstance(e, ConnectionEvent)]
            page = page.model_copy(update={"updates": await tc.with_workloads(await tc.named(updates))})
        return _listed(ConnectionList, "connection", conns, total, pid, process_name, since_dt, label, page, sampled,
                       node, workload, direction, available)  # fmt: skip

    @srv.tool(annotations=READ_ONLY)
    async def analyze_patterns(
        ctx: Context[ToolContext, Any],
        pid: Pid = None,
        process_name: ProcessName = None,
        duration: Duration = 60,
        node: Node = None,
        workload: Workload = None,
    ) -> Annotated[CallToolResult, PatternAnalysis]:
        """Analyse connection patterns: top destinations, protocol, port and outcome mix, rate, first/last seen."""
        scope = Scope("connection", pid, process_name, duration, node, workload)
        result = await _patterns(_ctx(ctx).source, scope, tc=_ctx(ctx))
        return _result(result, result.text)

    @srv.tool(annotations=READ_ONLY)
    async def get_packet_drop_summary(
        ctx: Context[ToolContext, Any],
        pid: Pid = None,
        process_name: ProcessName = None,
        duration: Duration = 60,
        node: Node = None,
        workload: Workload = None,
    ) -> Annotated[CallToolResult, NetworkSummary]:
        """Count packets the kernel dropped over the last `duration` seconds, for one process or all."""
        return await _summary(ctx, Scope("packet_drop", pid, process_name, duration, node, workload))

    @srv.tool(annotations=READ_ONLY)
    async def list_packet_drops(
        ctx: Context[ToolContext, Any],
        pid: Pid = None,
        process_name: ProcessName = None,
        max_events: MaxEvents = 100,
        since: Since = None,
        until: Until = None,
        node: Node = None,
        workload: Workload = None,
        after: After = None,
        before: Before = None,
    ) -> Annotated[CallToolResult, PacketDropList]:
        """List recent packet drops with the kernel's drop reason, newest first."""
        since_dt = _time(since)
        query = EventQuery("packet_drop", pid, process_name, since_dt, _time(until), max_events, node, workload, after,
                           before=_token(before))  # fmt: skip
        events, total, label, _, page = await _list(ctx, query)
        drops = [e for e in events if isinstance(e, PacketDropEvent)]
        return _listed(PacketDropList, "packet_drop", drops, total, pid, process_name, since_dt, label, page,
                       node=node, workload=workload)  # fmt: skip

    @srv.tool(annotations=READ_ONLY)
    async def analyze_packet_drops(
        ctx: Context[ToolContext, Any],
        pid: Pid = None,
        process_name: ProcessName = None,
        duration: Duration = 60,
        node: Node = None,
        workload: Workload = None,
    ) -> Annotated[CallToolResult, PatternAnalysis]:
        """Analyse packet drops: drop-reason mix, affected processes, rate, first/last seen."""
        scope = Scope("packet_drop", pid, process_name, duration, node, workload)
        result = await _patterns(_ctx(ctx).source, scope, tc=_ctx(ctx))
        return _result(result, result.text)

    @srv.tool(annotations=READ_ONLY)
    async def list_processes(
        ctx: Context[ToolContext, Any],
        duration: Duration = 60,
        kind: Kind = "connection",
        limit: Limit = 20,
        group_by: GroupBy = "process",
        node: Node = None,
        workload: Workload = None,
    ) -> Annotated[CallToolResult, ProcessList]:
        """Top talkers: processes ranked by connection attempts (or drops) in the window; or their sums per
        workload or per node (group_by)."""
        tc = _ctx(ctx)
        scope = Scope(kind, window=duration, node=node, workload=workload)
        source, narrowed = await tc.narrow(scope)
        stats = await source.stats(narrowed, top_n=1, buckets=1)
        label = await source_label(tc.source)
        losses = await source_losses(tc.source, duration)
        procs = stats.processes[:limit]
        workloads = await tc.workload_names(pid for p in procs for pid in p.pids)
        procs = [p.model_copy(update={"workloads": list(dict.fromkeys(workloads[x] for x in p.pids if x in workloads))})
                 for p in procs]  # fmt: skip
        groups: list[GroupStat] = []
        if group_by == "node":
            groups = await _node_groups(tc, narrowed, stats)
        elif group_by == "workload":
            groups = await _workload_groups(tc, source, narrowed, stats)
        groups = sorted(groups, key=lambda g: (-g.attempts, g.key))[:limit]
        listed = describe.groups_text(kind, group_by, groups, duration) if group_by != "process" else \
            describe.processes_text(kind, procs, duration)  # fmt: skip
        text = describe.with_notes(
            listed,
            describe.filter_note(node, workload),
            describe.loss_note(losses),
            describe.not_events_note(stats.not_events),
        )
        return _result(
            ProcessList(
                text=text,
                kind=kind,
                duration_seconds=duration,
                processes=procs,
                group_by=group_by,
                groups=groups,
                total_events=stats.total,
                source=label,
                losses=losses,
                counts_exact=counts_exact(losses),
                not_events=stats.not_events,
                first_seen=stats.first_seen,
            ),
            text,
        )

    @srv.tool(annotations=READ_ONLY)
    async def get_traffic(
        ctx: Context[ToolContext, Any],
        pid: Pid = None,
        process_name: ProcessName = None,
        duration: Duration = 60,
        limit: Limit = 20,
        node: Node = None,
        workload: Workload = None,
    ) -> Annotated[CallToolResult, TrafficReport]:
        """Bytes sent and read over the last `duration` seconds per process, remote address and connection
        (exact totals and average rates; largest first, `limit` of each)."""
        stats, label, losses = await _extension(ctx, "traffic", TrafficStats, pid, process_name, duration, limit,
                                                TRAFFIC_LOSSES, node, workload)  # fmt: skip
        text = describe.with_notes(describe.traffic_text(stats), describe.loss_note(losses))
        return _result(TrafficReport(text=text, stats=stats, source=label, losses=losses,
                                     counts_exact=counts_exact(losses)), text)  # fmt: skip

    @srv.tool(annotations=READ_ONLY)
    async def get_connect_latency(
        ctx: Context[ToolContext, Any],
        pid: Pid = None,
        process_name: ProcessName = None,
        duration: Duration = 60,
        limit: Limit = 20,
        node: Node = None,
        workload: Workload = None,
    ) -> Annotated[CallToolResult, LatencyReport]:
        """How long TCP connects took over the last `duration` seconds (connect() to established, refused or
        timed out, in microseconds): p50/p95/max per process and per destination, slowest first."""
        stats, label, losses = await _extension(ctx, "connect_latency", LatencyStats, pid, process_name, duration,
                                                limit, ("shed", "ring_full"), node, workload)  # fmt: skip
        text = describe.with_notes(describe.latency_text(stats), _latency_loss_note(losses))
        return _result(LatencyReport(text=text, stats=stats, source=label, losses=losses,
                                     counts_exact=not losses), text)  # fmt: skip

    @srv.tool(annotations=READ_ONLY)
    async def lookup_names(
        ctx: Context[ToolContext, Any], addresses: Addresses
    ) -> Annotated[CallToolResult, NameLookup]:
        """The host names known now for up to 500 IP addresses (/etc/hosts, reverse DNS); the others are
        asked in the background, never waited for. For views that show names beside addresses."""
        tc = _ctx(ctx)
        # (not an address is said, not dropped: "1 of 4 addresses have a name" with nothing about the other three)
        wrong = [a for a in dict.fromkeys(addresses) if not is_ip_address(a)]
        if wrong:
            shown = ", ".join(repr(clean(a, 64)) for a in wrong[:3]) + (
                f" and {len(wrong) - 3} more" if len(wrong) > 3 else ""
            )
            raise ToolError(
                f"addresses must be IP addresses (without a port, e.g. 10.0.0.1 or 2001:db8::1), not {shown}."
            )
        if tc.names is None or not tc.names.enabled:
            text = "Names are off: destinations are shown by address."
            return _result(NameLookup(text=text, enabled=False), text)
        names, nameless = tc.names.lookup_many(dict.fromkeys(addresses))
        pending = tc.names.stats().pending
        flight = f"{pending} question{'' if pending == 1 else 's'} in flight"
        text = f"{len(names)} of {len(set(addresses))} addresses have a name ({flight})."
        return _result(NameLookup(text=text, names=names, pending=pending, nameless=nameless), text)

    @srv.tool(annotations=READ_ONLY)
    async def server_status(ctx: Context[ToolContext, Any]) -> Annotated[CallToolResult, ServerStatus]:
        """Where the data comes from, whether it is healthy, and the eBPF programs behind it."""
        tc = _ctx(ctx)
        info = await source_info(tc.source)
        programs = await tc.source.programs() if info.healthy else []
        lines = [f"Source: {info.label} ({info.status})"]
        if info.detail:
            lines.append(f"Detail: {clean(info.detail, 300)}")
        if info.sampled:
            lines.append("Sampling: short-lived connections can be missed.")
        if info.kind == "embedded":
            # (seen: made, each once, the raw events shed included; not kept: those too, and events the kernel could
            # not count, never seen: it can exceed seen; by cause below)
            lines.append(f"Events seen: {info.events_seen:,}, stored: {info.stored_events or 0:,}, "
                         f"not kept: {info.events_lost:,}")  # fmt: skip
        if info.recent_losses:
            lines.append(f"Last minute: {clean(describe_losses(info.recent_losses), 300)}")
        if info.losses:
            lines.append(f"Since start: {clean(describe_losses(info.losses), 300)}")
        if info.nodes is not None:
            shown = ", ".join(f"{clean(n, 60)} {c:,}" for n, c in sorted(info.nodes.items())[:20])
            lines.append(f"Aggregator of {len(info.nodes)} node{'' if len(info.nodes) == 1 else 's'}"
                         + (f" (events: {shown})" if shown else ""))  # fmt: skip
        for note in info.notes:
            lines.append(f"Note: {clean(note, 300)}")
        if info.forwarding:
            fw = info.forwarding
            resolved, unsent = fw.get("resolved"), fw.get("unsent_outcomes")  # (a remote server's word: numbers only)
            lines.append(
                f"Forwarding to {clean(str(fw.get('url')), 200)}: {fw.get('forwarded', 0):,} sent, "
                + (f"{resolved:,} outcomes sent late, " if type(resolved) is int and resolved > 0 else "")
                + f"{fw.get('waiting', 0):,} waiting, {fw.get('dropped', 0):,} dropped, "
                f"{fw.get('failures', 0):,} failed batches"
                + (f", {fw['rejected']:,} refused by the aggregator" if fw.get("rejected") else "")
                + (
                    f", {unsent:,} outcomes not sent (the aggregator takes none)"
                    if type(unsent) is int and unsent > 0
                    else ""
                )
                + (f"; last error: {clean(str(fw['last_error']), 200)}" if fw.get("last_error") else "")
            )
        if info.recording:
            rec = info.recording
            where, written = clean(str(rec.get("path")), 200), rec.get("events", 0)
            written = f"{written:,}" if isinstance(written, int) else "?"  # (a remote server's word: not trusted)
            lines.append(f"Recording to {where}: {written} events written" if not rec.get("error") else
                         f"Recording stopped: {clean(str(rec['error']), 300)}")  # fmt: skip
        for p in programs:
            lines.append(f"Program: {clean(p.name, 60)} ({clean(p.type, 20)}, {clean(p.status, 20)})")
        kubernetes = k8s_identity() if info.kind == "embedded" else {}
        if kubernetes:
            where = ", ".join(f"{key.removeprefix('k8s_').removesuffix('_name')} {clean(value, 80)}"
                              for key, value in kubernetes.items())  # fmt: skip
            lines.append(f"Kubernetes (downward API; events carry these k8s_* fields): {where}")
        text = "\n".join(lines)
        return _result(ServerStatus(text=text, source=info, programs=programs, kubernetes=kubernetes), text)

    @srv.tool(annotations=READ_ONLY.model_copy(update={"open_world_hint": True}))
    async def ai_insights(
        ctx: Context[ToolContext, Any],
        summary_text: SummaryText,
    ) -> Annotated[CallToolResult, Insight]:
        """Ask an AI model (any OpenAI-compatible API) to explain a network summary."""
        return await _ai_tool(ctx, "ai_insights", {"summary_text": summary_text})

    @srv.tool(annotations=READ_ONLY.model_copy(update={"open_world_hint": True}))
    async def contextual_analysis(
        ctx: Context[ToolContext, Any],
        query: Query,
        pid: Pid = None,
        process_name: ProcessName = None,
        duration: Duration = 300,
        node: Node = None,
        workload: Workload = None,
    ) -> Annotated[CallToolResult, Insight]:
        """Answer a question about the host's network behaviour; the model reads live data through these tools."""
        await check_node(_ctx(ctx).source, node)
        args = {"query": query, "pid": pid, "process_name": process_name, "duration": duration}
        return await _ai_tool(ctx, "contextual_analysis", args | {"node": node, "workload": workload})

    @srv.tool(annotations=READ_ONLY)
    async def dashboard_snapshot(
        ctx: Context[ToolContext, Any],
        pid: Pid = None,
        process_name: ProcessName = None,
        duration: Duration = 60,
        max_events: MaxEvents = 100,
        since: Since = None,
        drops_since: DropsSince = None,
        parts: SnapshotParts | None = None,
        limit: Limit = 20,
        addresses: NameAddresses = None,
        after: After = None,
        drops_after: DropsAfter = None,
        node: Node = None,
        workload: Workload = None,
        inbound_since: InboundSince = None,
        resolved_after: ResolvedAfter = None,
        until: Until = None,
    ) -> Annotated[CallToolResult, DashboardSnapshot]:
        """One refresh of a live view in one call: the server status, the connections (connect() attempts),
        inbound connections and drops newer than their cursors, the connection and drop patterns and the process
        ranking over `duration`, and names for `addresses` — each part what its own tool returns for the same
        arguments (the event lists' `text` is one line, not a line per event). `until` pages the connections
        backward through a burst."""
        wanted = set(SNAPSHOT_PARTS if parts is None else parts)
        n, w = node, workload
        calls: dict[str, Callable[[], Awaitable[CallToolResult]]] = {
            "status": lambda: server_status(ctx),
            "connections": lambda: list_connections(
                ctx, pid, process_name, max_events, since, until, n, w, after, "outbound", resolved_after
            ),
            "drops": lambda: list_packet_drops(
                ctx, pid, process_name, max_events, drops_since, None, n, w, drops_after
            ),
            "patterns": lambda: analyze_patterns(ctx, pid, process_name, duration, n, w),
            "drop_patterns": lambda: analyze_packet_drops(ctx, pid, process_name, duration, n, w),
            "processes": lambda: list_processes(ctx, duration, "connection", limit, "process", n, w),
            # (the rows' addresses: one that is none, a socket's path, is not asked about, as before, nor refused)
            "names": lambda: lookup_names(ctx, [a for a in addresses or () if is_ip_address(a)]),
            "recent_bytes": lambda: get_traffic(ctx, pid, process_name, RECENT_BYTES_SECONDS, 1),
            "inbound": lambda: list_connections(
                ctx, pid, process_name, max_events, inbound_since, None, n, w, None, "inbound"
            ),
        }
        got: dict[str, Any] = {}
        token = _PARTS_ONLY.set(True)
        try:
            with one_info():  # (the parts read the source's info once, not once each)
                for part, call in calls.items():
                    if part in wanted and (part != "names" or addresses):
                        got[part] = (await call()).structured_content
        finally:
            _PARTS_ONLY.reset(token)
        counts = [f"{len(got[k]['events'])} {k}" for k in ("connections", "inbound", "drops") if k in got]
        text = f"Snapshot of {', '.join(got) or 'nothing'}" + (f" ({', '.join(counts)})" if counts else "") + "."
        return CallToolResult(content=[TextContent(type="text", text=text)], structured_content={"text": text, **got})

    return srv


def _updated_only(uri: str) -> None:
    if uri != EVENTS_URI:
        raise MCPError(INVALID_PARAMS, f"Only {EVENTS_URI} is updated: {clean(uri, 120)} cannot be subscribed to.")


#: seconds a legacy client's session may take to accept a notification before it is skipped (a client that does
#: not read its input must not hold up the others' notifications)
LEGACY_SEND_SECONDS = 2.0


def _connection(ctx: ServerRequestContext[Any, Any]) -> Connection:
    """The client's connection (``ctx.session`` is made for each request): kept weakly, so a subscription ends with
    its connection."""
    connection = getattr(ctx.session, "_connection", None)  # (the SDK 2.3 keeps it there; no public handle)
    if not isinstance(connection, Connection):
        raise MCPError(INVALID_PARAMS, "This server cannot notify clients of its protocol: read the tools again "
                       "every few seconds instead.")  # fmt: skip
    return connection


class _ChangeBus(InMemorySubscriptionBus):
    """The SDK's bus (``subscriptions/listen`` streams, protocol 2026-07-28), which also tells the sessions of older
    clients that subscribed with ``resources/subscribe``: the SDK 2.3 publishes to listen streams only, and a client
    of the protocols most agents speak today subscribed and was never told."""

    def __init__(self) -> None:
        super().__init__()
        self.legacy: weakref.WeakSet[Connection] = weakref.WeakSet()  # (a connection that ended leaves it)

    async def publish(self, event: ServerEvent) -> None:
        await super().publish(event)
        if not isinstance(event, ResourceUpdated) or event.uri != EVENTS_URI:
            return
        for connection in list(self.legacy):
            try:  # (the connection drops it when its stream is closed)
                with anyio.fail_after(LEGACY_SEND_SECONDS):
                    await connection.send_resource_updated(event.uri)
            except TimeoutError:
                log.info("an MCP client did not take a change notification within %g s: skipped", LEGACY_SEND_SECONDS)
            except Exception as exc:  # a transport's own failure: that client is not told again
                log.info("an MCP client's change notifications ended: %s", exc)
                self.legacy.discard(connection)


async def _publish_changes(source: ChangingSource, bus: InMemorySubscriptionBus, gap: float) -> None:
    """Publish :data:`EVENTS_URI` updated after the source changes, at most every ``gap`` seconds."""
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()
    pending = False  # a wake is on its way to the loop: later writes need not send another

    def wake() -> None:  # on the writing thread, after every write: one thread-safe call per notification, not
        nonlocal pending  # per write (each is a write to the loop's self-pipe: ~14 % of a busy agent's CPU)
        if pending or loop.is_closed():
            return
        pending = True
        loop.call_soon_threadsafe(changed.set)

    stop = source.on_change(wake)
    try:
        while True:
            await changed.wait()
            changed.clear()
            pending = False  # (before publishing: a write that saw it set is covered by this notification)
            await bus.publish(ResourceUpdated(uri=EVENTS_URI))
            await anyio.sleep(gap)
    finally:
        stop()


class _RemoteChanges:
    """The changes of a :class:`FollowedSource` published as :data:`EVENTS_URI` updated: followed from the first
    read of the resource on (a one-shot command never pays for it), when the remote server offers them. When
    its stream breaks, publishing ends, the open listen streams are closed (a client's loop over them ends:
    back to its timer) and the resource says this server does not notify."""

    def __init__(self, source: FollowedSource, bus: InMemorySubscriptionBus, gap: float) -> None:
        self.source = source
        self.bus = bus
        self.gap = gap
        self.tasks: anyio.abc.TaskGroup | None = None
        self.server: MCPServer[ToolContext] | None = None
        self.following: bool | None = None  # None: not asked yet (or the server could not be asked)
        self._lock = asyncio.Lock()

    async def start(self) -> bool:
        """Whether changes are published; the first call (after a failed one: the next) asks the source."""
        async with self._lock:
            if self.following is None and self.tasks is not None:
                if await self.source.offers_changes():
                    self.following = True
                    self.tasks.start_soon(self._follow)
        return bool(self.following)

    async def _follow(self) -> None:
        try:
            async with anyio.create_task_group() as tasks:
                assert isinstance(self.source, ChangingSource)
                tasks.start_soon(_publish_changes, self.source, self.bus, self.gap)
                await self.source.follow_changes()
                tasks.cancel_scope.cancel()
        finally:
            self.following = False
            _end_listen_streams(self.server)


def _end_listen_streams(server: MCPServer[ToolContext] | None) -> None:
    """Close ``server``'s open ``subscriptions/listen`` streams gracefully (the SDK's ListenHandler.close: each
    client's subscription loop ends)."""
    lowlevel = getattr(server, "_lowlevel_server", None)  # (the SDK keeps its ListenHandler there)
    entry = lowlevel.get_request_handler("subscriptions/listen") if lowlevel is not None else None
    handler = getattr(entry, "handler", None)
    if isinstance(handler, ListenHandler):
        handler.close()
    else:
        log.warning("cannot end the change notifications of this MCP server: its clients keep waiting")


async def _ai_tool(ctx: Context[ToolContext, Any], name: str, args: dict[str, Any]) -> CallToolResult:
    tc = _ctx(ctx)
    if tc.ai_tools is None:
        raise ToolError("AI is not available in this server.")
    result = await tc.ai_tools(tc.source, name, args)
    return _result(result, result.text)


async def run_stdio(server: MCPServer[Any]) -> None:
    """Serve ``server`` over stdin and stdout (``netspy-tui mcp``), as the SDK's ``run_stdio_async``, except that a
    line that is not a JSON-RPC message is answered as JSON-RPC 2.0 asks (error -32700 "Parse error" for a line
    that is not JSON, -32600 "Invalid Request" for JSON that is no message; ``id`` null: it cannot be known) and said
    once on stderr. The SDK drops such a line unanswered: a client waiting on its request hung until its timeout."""
    from mcp.server.stdio import stdio_server
    from mcp.shared.message import SessionMessage
    from mcp.types import INVALID_REQUEST, PARSE_ERROR, ErrorData, JSONRPCError

    lowlevel = server._lowlevel_server  # noqa: SLF001 (what run_stdio_async runs: the SDK has no public handle)
    said = False
    async with stdio_server() as (read_stream, write_stream):
        relay_in, relay_out = anyio.create_memory_object_stream[SessionMessage | Exception](0)

        async def relay() -> None:
            nonlocal said
            async with relay_in, read_stream:
                async for item in read_stream:
                    if not isinstance(item, Exception):
                        await relay_in.send(item)
                        continue
                    parse = isinstance(item, ValidationError) and any(
                        e["type"] == "json_invalid" for e in item.errors(include_url=False)
                    )
                    error = (
                        ErrorData(code=PARSE_ERROR, message="Parse error: the line is not JSON")
                        if parse
                        else ErrorData(code=INVALID_REQUEST, message="Invalid Request: not a JSON-RPC 2.0 message")
                    )
                    await write_stream.send(SessionMessage(JSONRPCError(jsonrpc="2.0", id=None, error=error)))
                    if not said:
                        said = True
                        log.warning("mcp: a line on stdin was not a JSON-RPC message (%s); answered with error %d "
                                    "(said once)", error.message, error.code)  # fmt: skip

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(relay)
            await lowlevel.run(relay_out, write_stream, lowlevel.create_initialization_options())
            tasks.cancel_scope.cancel()
