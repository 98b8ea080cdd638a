"""The app's MCP client: every front end (CLI, REPL, dashboard, AI) reads data only through it.

:class:`Gateway` wraps an ``mcp.client.Client`` connected in memory to this process's own
``network-telemetry`` server (or to any other MCP server over stdio or HTTP) and offers
``call(name, args)`` plus typed methods that parse structured content back into models.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from netspy_tui.errors import NetspyError, sole_exception
from netspy_tui.mcp_tools import EVENTS_URI
from netspy_tui.mcp_tools.schemas import DashboardSnapshot
from netspy_tui.models import (
    ConnectionList,
    LatencyReport,
    NameLookup,
    NetworkSummary,
    PacketDropList,
    PatternAnalysis,
    ProcessList,
    ServerStatus,
    TrafficReport,
)
from netspy_tui.textsafe import inert_json

if TYPE_CHECKING:  # the SDK (~0.6 s to import) loads when a session opens: a dashboard paints before that
    from mcp.client import Client
    from mcp.types import Tool

    from netspy_tui.mcp_tools.server import AIToolsHook
    from netspy_tui.names.resolver import NameResolver
    from netspy_tui.names.workload import WorkloadResolver
    from netspy_tui.telemetry.source import TelemetrySource

M = TypeVar("M", bound=BaseModel)


def _narrowing(node: str | None, workload: str | None) -> dict[str, str]:
    """The ``node`` and ``workload`` arguments when set (absent otherwise, as before the tools took them)."""
    return {k: v for k, v in (("node", node), ("workload", workload)) if v is not None}


class ToolFailed(NetspyError):
    """A tool answered with ``isError``; the message is the tool's own sentence."""


@dataclass(frozen=True)
class ToolResult:
    name: str
    text: str
    data: dict[str, Any] | None
    is_error: bool

    def json(self) -> str:
        """The result as indented JSON; control and bidi characters in strings are ``\\u`` escapes."""
        return inert_json(
            json.dumps(
                {"tool": self.name, "is_error": self.is_error, "text": self.text, "data": self.data},
                indent=2,
                ensure_ascii=False,
            )
        )


def _strip_prefix(name: str, text: str) -> str:
    prefix = f"Error executing tool {name}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


class Gateway:
    """Typed access to the telemetry tools over one MCP client session with this process's own server: its
    results are validated against their models when they are built, so the client's JSON-schema re-check (about
    70 % of a ``list_connections(100)`` call) is skipped. Typed methods still parse with pydantic."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._tools: list[Tool] | None = None

    async def list_tools(self) -> list[Tool]:
        if self._tools is None:
            self._tools = list((await self._client.list_tools()).tools)
        return self._tools

    async def call(self, name: str, arguments: dict[str, Any] | None = None) -> ToolResult:
        """Call a tool; ``isError`` results come back as results (never raised)."""
        from mcp.types import CallToolRequest, CallToolRequestParams, CallToolResult, TextContent

        args = {k: v for k, v in (arguments or {}).items() if v is not None}
        request = CallToolRequest(params=CallToolRequestParams(name=name, arguments=args))
        result = await self._client.session.send_request(request, CallToolResult)
        text = "\n".join(c.text for c in result.content if isinstance(c, TextContent))
        if result.is_error:
            text = _strip_prefix(name, text)
        return ToolResult(name=name, text=text, data=result.structured_content, is_error=bool(result.is_error))

    async def _typed(self, name: str, model: type[M], arguments: dict[str, Any]) -> M:
        result = await self.call(name, arguments)
        if result.is_error:
            raise ToolFailed(result.text)
        try:
            return model.model_validate(result.data or {})
        except ValidationError as exc:
            raise ToolFailed(f"{name} returned data this version cannot read ({exc.errors()[0]['msg']})") from None

    async def summary(
        self, pid: int | None = None, process_name: str | None = None, duration: int = 60, *,
        node: str | None = None, workload: str | None = None,
    ) -> NetworkSummary:  # fmt: skip
        return await self._typed(
            "get_network_summary", NetworkSummary,
            {"pid": pid, "process_name": process_name, "duration": duration, **_narrowing(node, workload)},
        )  # fmt: skip

    async def connections(
        self,
        pid: int | None = None,
        process_name: str | None = None,
        max_events: int = 100,
        since: str | None = None,
        until: str | None = None,
        after: int | None = None,
        *,
        node: str | None = None,
        workload: str | None = None,
        direction: str = "outbound",
    ) -> ConnectionList:
        which = {"direction": direction} if direction != "outbound" else {}
        return await self._typed(
            "list_connections",
            ConnectionList,
            {"pid": pid, "process_name": process_name, "max_events": max_events, "since": since, "until": until,
             "after": after, **_narrowing(node, workload), **which},
        )  # fmt: skip

    async def patterns(
        self, pid: int | None = None, process_name: str | None = None, duration: int = 60, *,
        node: str | None = None, workload: str | None = None,
    ) -> PatternAnalysis:  # fmt: skip
        return await self._typed(
            "analyze_patterns", PatternAnalysis,
            {"pid": pid, "process_name": process_name, "duration": duration, **_narrowing(node, workload)},
        )  # fmt: skip

    async def drop_summary(
        self, pid: int | None = None, process_name: str | None = None, duration: int = 60
    ) -> NetworkSummary:
        return await self._typed(
            "get_packet_drop_summary", NetworkSummary, {"pid": pid, "process_name": process_name, "duration": duration}
        )

    async def drops(
        self,
        pid: int | None = None,
        process_name: str | None = None,
        max_events: int = 100,
        since: str | None = None,
        until: str | None = None,
    ) -> PacketDropList:
        return await self._typed(
            "list_packet_drops",
            PacketDropList,
            {"pid": pid, "process_name": process_name, "max_events": max_events, "since": since, "until": until},
        )

    async def drop_patterns(
        self, pid: int | None = None, process_name: str | None = None, duration: int = 60, *,
        node: str | None = None, workload: str | None = None,
    ) -> PatternAnalysis:  # fmt: skip
        return await self._typed(
            "analyze_packet_drops", PatternAnalysis,
            {"pid": pid, "process_name": process_name, "duration": duration, **_narrowing(node, workload)},
        )  # fmt: skip

    async def processes(self, duration: int = 60, kind: str = "connection", limit: int = 20) -> ProcessList:
        return await self._typed("list_processes", ProcessList, {"duration": duration, "kind": kind, "limit": limit})

    async def names(self, addresses: list[str]) -> NameLookup:
        return await self._typed("lookup_names", NameLookup, {"addresses": addresses})

    async def traffic(
        self, pid: int | None = None, process_name: str | None = None, duration: int = 60, limit: int = 20, *,
        node: str | None = None, workload: str | None = None,
    ) -> TrafficReport:  # fmt: skip
        return await self._typed(
            "get_traffic",
            TrafficReport,
            {"pid": pid, "process_name": process_name, "duration": duration, "limit": limit,
             **_narrowing(node, workload)},
        )  # fmt: skip

    async def connect_latency(
        self, pid: int | None = None, process_name: str | None = None, duration: int = 60, limit: int = 20, *,
        node: str | None = None, workload: str | None = None,
    ) -> LatencyReport:  # fmt: skip
        return await self._typed(
            "get_connect_latency",
            LatencyReport,
            {"pid": pid, "process_name": process_name, "duration": duration, "limit": limit,
             **_narrowing(node, workload)},
        )  # fmt: skip

    async def snapshot(
        self,
        pid: int | None = None,
        process_name: str | None = None,
        duration: int = 60,
        *,
        max_events: int = 100,
        since: str | None = None,
        drops_since: str | None = None,
        parts: Iterable[str] | None = None,
        limit: int = 20,
        addresses: list[str] | None = None,
        after: int | None = None,
        drops_after: int | None = None,
        node: str | None = None,
        workload: str | None = None,
        inbound_since: str | None = None,
        resolved_after: int | None = None,
        until: str | None = None,
    ) -> DashboardSnapshot:
        """One refresh of a live view (``dashboard_snapshot``): the parts named, each as its own tool returns it;
        ``until`` pages the connections backward."""
        cursor: dict[str, object] = {"inbound_since": inbound_since} if inbound_since is not None else {}
        if resolved_after is not None:  # (only when asked: a server before it refuses what it does not know)
            cursor["resolved_after"] = resolved_after
        if until is not None:  # (the same)
            cursor["until"] = until
        return await self._typed(
            "dashboard_snapshot",
            DashboardSnapshot,
            {"pid": pid, "process_name": process_name, "duration": duration, "max_events": max_events,
             "since": since, "drops_since": drops_since, "parts": None if parts is None else list(parts),
             "limit": limit, "addresses": addresses or None, "after": after, "drops_after": drops_after,
             **_narrowing(node, workload), **cursor},
        )  # fmt: skip

    @asynccontextmanager
    async def changes(self) -> AsyncIterator[AsyncIterator[object] | None]:
        """The server's "new telemetry stored" notifications (the ``netspy://telemetry/events`` resource), or
        None when it cannot send them (a source that does not say when it changes, an older server or
        protocol): then poll. Iterating ends or raises when the stream is lost."""
        from mcp.client.subscriptions import ListenNotSupportedError
        from mcp.shared.exceptions import MCPError
        from mcp.types import TextResourceContents

        try:
            contents = (await self._client.read_resource(EVENTS_URI)).contents
            text = next((c.text for c in contents if isinstance(c, TextResourceContents)), "{}")
            notifies = bool(json.loads(text).get("notifies"))
        except (MCPError, ValueError, AttributeError):
            notifies = False
        if not notifies:
            yield None
            return
        try:
            listening = self._client.listen(resource_subscriptions=[EVENTS_URI])
            subscription = await listening.__aenter__()
        except (ListenNotSupportedError, MCPError):
            yield None
            return
        try:
            yield subscription
        finally:
            await listening.__aexit__(None, None, None)

    async def status(self) -> ServerStatus:
        return await self._typed("server_status", ServerStatus, {})


@asynccontextmanager
async def _session(client: Client) -> AsyncIterator[Gateway]:
    """``client`` open as a Gateway. Its session runs in an anyio task group, which wraps whatever the
    ``async with`` body raises in an ExceptionGroup: a lone exception comes back out as itself, so
    callers catch a NetspyError as a NetspyError (one line) instead of seeing a group's traceback."""
    try:
        async with client:
            yield Gateway(client)
    except BaseExceptionGroup as group:
        inner = sole_exception(group)
        if inner is group:
            raise
        raise inner from None


def open_gateway(
    source: TelemetrySource,
    ai_tools: AIToolsHook | None = None,
    *,
    names: NameResolver | None = None,
    names_wait: float = 0.0,
    workloads: WorkloadResolver | None = None,
    only: Iterable[str] | None = None,
    change_gap: float | None = None,
) -> AbstractAsyncContextManager[Gateway]:
    """An in-process MCP client/server pair over ``source`` (which the caller owns and closes);
    ``names`` names destinations in the tools' results, ``only`` limits the tools, ``change_gap`` spaces the
    change notifications (default: what outside agents get; see :func:`create_server`)."""
    from mcp.client import Client

    from netspy_tui.mcp_tools.server import create_server

    server = create_server(
        source, ai_tools, names=names, names_wait=names_wait, workloads=workloads, only=only, change_gap=change_gap
    )
    return _session(Client(server, raise_exceptions=False))


class StartingGateway(Gateway):
    """Stands in for a gateway that is still opening (a dashboard paints before the MCP pair is up).

    Calls made before :meth:`attach` wait for it, then go to the real gateway; after :meth:`fail` they
    raise the reason the gateway could not open. Every typed method goes through :meth:`call`.
    """

    def __init__(self) -> None:
        self._real: Gateway | None = None
        self._failed: NetspyError | None = None
        self._settled = asyncio.Event()

    @property
    def ready(self) -> bool:
        return self._real is not None

    def attach(self, gateway: Gateway) -> None:
        self._real = gateway
        self._settled.set()

    def fail(self, error: NetspyError) -> None:
        self._failed = error
        self._settled.set()

    async def wait(self) -> Gateway:
        await self._settled.wait()
        if self._real is None:
            raise self._failed or NetspyError("the MCP gateway did not start")
        return self._real

    async def list_tools(self) -> list[Tool]:
        return await (await self.wait()).list_tools()

    async def call(self, name: str, arguments: dict[str, Any] | None = None) -> ToolResult:
        return await (await self.wait()).call(name, arguments)

    @asynccontextmanager
    async def changes(self) -> AsyncIterator[AsyncIterator[object] | None]:
        async with (await self.wait()).changes() as changes:
            yield changes
