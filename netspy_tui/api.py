"""The developer API, mirroring the Go netspy's client usage.

    from netspy_tui.api import NetspyClient

    async with NetspyClient("http://localhost:8080") as client:
        for tool in await client.list_tools():
            print(tool.name)
        result = await client.call_tool("get_network_summary", {"process_name": "curl"})
        print(result.text)         # "Process 'curl' made 5 outbound connection attempts ..."
        print(result.data)         # the structured content (a dict)

Calls go through the same in-process MCP client/server pair the dashboard uses.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from types import TracebackType

from mcp.types import Tool

from netspy_tui.ai.settings import AISettings
from netspy_tui.mcp_tools.ai_bridge import ai_tools_hook
from netspy_tui.mcp_tools.gateway import Gateway, ToolResult, open_gateway
from netspy_tui.telemetry.client import DEFAULT_SERVER, HttpSource
from netspy_tui.telemetry.source import TelemetrySource

__all__ = ["NetspyClient", "ToolResult"]


class NetspyClient:
    """An MCP client for the telemetry tools over one eBPF server (or any TelemetrySource)."""

    def __init__(
        self,
        server_url: str = DEFAULT_SERVER,
        *,
        source: TelemetrySource | None = None,
        timeout: float = 10.0,
        model: str | None = None,
        ai: AISettings | None = None,
    ) -> None:
        """``ai``: the settings the AI tools use; None reads them like the CLI does (config file,
        ``OPENAI_API_KEY``, ...) when the client is entered, with ``model`` on top."""
        self._source = source or HttpSource(server_url, read_timeout=timeout)
        self._owns_source = source is None
        self._model = model
        self._ai = ai
        self._stack = AsyncExitStack()
        self._gateway: Gateway | None = None

    async def __aenter__(self) -> NetspyClient:
        ai = self._ai
        if ai is None:
            from netspy_tui.config import load_settings

            ai = AISettings.from_settings(load_settings({"model": self._model})[0])
        self._gateway = await self._stack.enter_async_context(open_gateway(self._source, ai_tools_hook(ai)))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()
        if self._owns_source:
            await self._source.aclose()

    @property
    def gateway(self) -> Gateway:
        if self._gateway is None:
            raise RuntimeError("use NetspyClient as `async with NetspyClient(...) as client`")
        return self._gateway

    async def list_tools(self) -> list[Tool]:
        return await self.gateway.list_tools()

    async def call_tool(self, name: str, arguments: dict | None = None) -> ToolResult:
        """Call a tool; errors come back as ``result.is_error`` with one sentence in ``result.text``."""
        return await self.gateway.call(name, arguments)
