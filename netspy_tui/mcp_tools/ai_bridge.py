"""Wiring between the AI layer (netspy_tui.ai, which knows nothing of MCP) and the MCP tools.

* :func:`ai_tools_hook` answers the ``ai_insights`` and ``contextual_analysis`` tools.
* :func:`data_tools` / :func:`tool_caller` offer the model the read-only data tools through an
  MCP client session (the internal gateway), so every figure the model sees came through MCP.
* :func:`stream_question` and :func:`stream_process_explanation` are the streaming forms the CLI
  and the dashboard use; :func:`dashboard_hooks` hands them to the dashboard as :class:`AIHooks`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from netspy_tui.ai import (
    AISettings,
    AIStreamError,
    AnswerItem,
    ProgressNote,
    StreamEvent,
    ToolCaller,
    ToolOutput,
    ToolSpec,
    build_context,
    collect,
    rule_based_explanation,
    stream_answer,
    stream_explanation,
    stream_summary_explanation,
)
from netspy_tui.ai.settings import NOT_CONFIGURED_HINT
from netspy_tui.ai.types import PARTIAL_MARK
from netspy_tui.errors import AIError, NetspyError
from netspy_tui.mcp_tools import DATA_TOOLS
from netspy_tui.mcp_tools.gateway import Gateway, open_gateway
from netspy_tui.models import Insight, Scope, format_time, utcnow
from netspy_tui.telemetry.source import TelemetrySource

log = logging.getLogger(__name__)
T = TypeVar("T")
#: Entries of each traffic and latency list an explanation is given (the largest, the slowest).
TOP_PARTS = 10
#: Connections the process accepted, newest first, that an explanation is given.
MAX_INBOUND = 20

if TYPE_CHECKING:  # the server module imports the MCP SDK: it loads with the gateway's session, not with the AI hooks
    from netspy_tui.mcp_tools.server import AIToolsHook

#: ``explain(gateway, scope)``: explain the traffic of ``scope``'s pid or command (neither: all
#: traffic) over its window.
ExplainFn = Callable[[Gateway, Scope], AsyncIterator[AnswerItem]]
#: ``ask(gateway, question, context)``: a free-form question; ``context`` is what the user is looking at.
AskFn = Callable[[Gateway, str, dict[str, Any] | None], AsyncIterator[AnswerItem]]
#: ``summarize(summary_text)``: the ``ai_insights`` tool's answer to a summary text (the command bar's
#: ``insights "..."``).
SummarizeFn = Callable[[str], AsyncIterator[AnswerItem]]


@dataclass(frozen=True, slots=True)
class AIHooks:
    """What the dashboard needs from the AI layer: three streaming callables and two labels.

    Each callable returns an async iterator of :data:`~netspy_tui.ai.types.AnswerItem`: text
    fragments of the answer in order, the tools the model called (shown as ``→ name({...}) ✓
    summary``), :class:`~netspy_tui.ai.types.ProgressNote` lines for the pane's state line, and
    :class:`~netspy_tui.ai.types.Finished` naming who answered. The iterator ending means the
    answer is complete; raising (ideally a ``NetspyError``, an ``AIStreamError`` once text has
    streamed) means it failed: the pane shows one line and keeps the text received so far. The
    gateway is passed on every call, so hooks never hold a stale one.
    """

    explain: ExplainFn
    ask: AskFn | None = None
    """None: free-form questions are unavailable; the pane shows :attr:`unavailable` instead."""
    summarize: SummarizeFn | None = None
    """None: like :attr:`ask`."""
    label: str = "AI"
    """Which engine answers, for the pane title: e.g. ``gpt-5-mini at http://127.0.0.1:8000/v1 (key set)``."""
    unavailable: str = "No AI model is configured."
    """One line shown when a question cannot be asked (says how to enable AI)."""


async def data_tools(gateway: Gateway) -> list[ToolSpec]:
    tools = await gateway.list_tools()
    return [
        ToolSpec(name=t.name, description=t.description or "", parameters=dict(t.input_schema))
        for t in tools
        if t.name in DATA_TOOLS
    ]


def tool_caller(gateway: Gateway) -> ToolCaller:
    async def call(name: str, arguments: dict[str, Any]) -> ToolOutput:
        if name not in DATA_TOOLS:
            return ToolOutput(text=f"Tool {name} is not available to the model.", is_error=True)
        result = await gateway.call(name, arguments)
        return ToolOutput(text=result.text, data=result.data, is_error=result.is_error)

    return call


async def stream_question(
    gateway: Gateway, settings: AISettings, question: str, context: dict[str, Any] | None = None
) -> AsyncIterator[StreamEvent]:
    """A free-form question; the model reads data through the gateway's tools."""
    settings.require_configured()
    tools = await data_tools(gateway)
    async for event in stream_answer(settings, question, tools, tool_caller(gateway), context):
        yield event


#: The ``contextual_analysis`` arguments that tell the model what the user is asking about (the question aside).
QUESTION_CONTEXT = ("pid", "process_name", "duration", "node", "workload")


def question_context(arguments: dict[str, Any]) -> dict[str, Any] | None:
    """The context a ``contextual_analysis`` question is sent with: its arguments that are set (None: none)."""
    context = {k: arguments[k] for k in QUESTION_CONTEXT if arguments.get(k) is not None}
    return context or None


async def tool_defaults(gateway: Gateway, name: str) -> dict[str, Any]:
    """The defaults the tool ``name`` declares in its input schema (those that are not None)."""
    for tool in await gateway.list_tools():
        if tool.name == name:
            properties = dict(tool.input_schema).get("properties") or {}
            return {
                key: spec["default"]
                for key, spec in properties.items()
                if isinstance(spec, dict) and spec.get("default") is not None
            }
    return {}


async def stream_contextual_analysis(
    gateway: Gateway, settings: AISettings, arguments: dict[str, Any]
) -> AsyncIterator[StreamEvent]:
    """The ``contextual_analysis`` tool's answer, streamed: its arguments completed with the tool's own defaults
    (its 300 s window), so the model is sent the context the tool itself sends."""
    settings.require_configured()
    arguments = await tool_defaults(gateway, "contextual_analysis") | arguments
    async for event in stream_question(gateway, settings, arguments["query"], question_context(arguments)):
        yield event


def subject_name(pid: int | None, command: str | None, node: str | None = None, workload: str | None = None) -> str:
    """Who is explained, as the model and the user are told: ``curl (pid 42) on node node-a``."""
    if command and pid:
        who = f"{command} (pid {pid})"
    else:
        who = command or (f"pid {pid}" if pid else "all processes")
    if workload:
        who += f" in workload {workload}"
    return who + (f" on node {node}" if node else "")


async def _optional(call: Awaitable[T]) -> T | None:
    """A tool's result, or None where the source cannot answer it (a seed-generation server has no
    packet-drop endpoints; a plain eBPF server no traffic): the explanation goes on without it."""
    try:
        return await call
    except NetspyError as exc:
        log.debug("explanation context without a part: %s", exc)
        return None


async def explanation_context(gateway: Gateway, scope: Scope) -> dict[str, Any]:
    """Summary, pattern analysis, recent events and drops of one process, and where the source has them its
    traffic (bytes, retransmits), connect latency and the connections it accepted, all via MCP tools."""
    pid, command, window = scope.pid, scope.command, scope.window
    node, workload = scope.node, scope.workload  # what the user narrowed the view to narrows every figure too
    summary = await gateway.summary(pid=pid, process_name=command, duration=window, node=node, workload=workload)
    patterns = await gateway.patterns(pid=pid, process_name=command, duration=window, node=node, workload=workload)
    since = format_time((patterns.stats.until or utcnow()) - timedelta(seconds=window))  # (the source's clock)
    # the parts a source may not have, asked together: over HTTP each is a round trip or two
    recent, drops, traffic, latency, inbound = await asyncio.gather(
        gateway.connections(pid=pid, process_name=command, max_events=30, node=node, workload=workload),
        _optional(gateway.drop_patterns(pid=pid, process_name=command, duration=window, node=node,
                                        workload=workload)),
        _optional(gateway.traffic(pid=pid, process_name=command, duration=window, limit=TOP_PARTS, node=node,
                                  workload=workload)),
        _optional(gateway.connect_latency(pid=pid, process_name=command, duration=window, limit=TOP_PARTS,
                                          node=node, workload=workload)),
        _optional(gateway.connections(pid=pid, process_name=command, max_events=MAX_INBOUND, since=since,
                                      direction="inbound", node=node, workload=workload)),
    )  # fmt: skip
    context = build_context(
        pid=pid, command=command, summary=summary, patterns=patterns, recent=recent, packet_drops=drops,
        traffic=traffic.stats if traffic is not None else None, latency=latency.stats if latency is not None else None,
        inbound=inbound if inbound is not None and inbound.inbound_available is not False else None,
        node=node, workload=workload,
    )  # fmt: skip
    nodes = sorted({e.k8s_node_name for e in recent.events if e.k8s_node_name} | ({node} if node else set()))
    if nodes:  # an aggregator's events: which hosts the process ran on
        context["nodes"] = nodes
    return context


async def stream_process_explanation(
    gateway: Gateway, settings: AISettings, scope: Scope
) -> AsyncIterator[StreamEvent]:
    """Explain one process: streamed from the model, or the local rule-based text when none is configured."""
    async for event in _explain(settings, scope, await explanation_context(gateway, scope)):
        yield event


async def _explain(settings: AISettings, scope: Scope, context: dict[str, Any]) -> AsyncIterator[StreamEvent]:
    """The explanation of ``scope`` from its gathered ``context``: the model's, or the local rules'."""
    from netspy_tui.ai import Finished, TextDelta

    subject = subject_name(scope.pid, scope.command, scope.node, scope.workload)
    if not settings.configured:
        text = rule_based_explanation(subject, context)
        yield TextDelta(text)
        yield Finished(model="rules", text=text)
        return
    async for event in stream_explanation(settings, subject, context):
        yield event


def ai_tools_hook(settings: AISettings) -> AIToolsHook:
    """The AI tools' implementation for :func:`netspy_tui.mcp_tools.server.create_server`, over ``settings``."""

    async def hook(source: TelemetrySource, name: str, args: dict[str, Any]) -> Insight:
        settings.require_configured()
        try:
            if name == "ai_insights":
                finished = await collect(stream_summary_explanation(settings, args["summary_text"]))
            else:
                async with open_gateway(source) as gateway:
                    finished = await collect(stream_question(gateway, settings, args["query"], question_context(args)))
        except AIStreamError as exc:
            if not exc.partial_text:
                raise
            # an error all the same (the answer is incomplete), with what had come: "the text so far is kept"
            from mcp.server.mcpserver.exceptions import ToolError  # (the SDK loads after the dashboard's frame)

            raise ToolError(f"{exc}{PARTIAL_MARK}{exc.partial_text}") from None
        return Insight(text=finished.text, model=finished.model, engine="openai", tool_calls=finished.tool_calls)

    return hook


def engine_label(settings: AISettings) -> str:
    """Who answers in the dashboard: ``gpt-5-mini at http://host/v1 (key set)``, or the local rules."""
    return settings.engine_label


def dashboard_hooks(settings: AISettings) -> AIHooks:
    """The dashboard's AI hooks over ``settings`` (``AISettings.from_settings`` of the loaded settings).

    ``a`` explains a process through :func:`stream_process_explanation` (the local rules when no model
    is configured); questions and ``insights "..."`` stream from the model, with the data tools offered
    through the gateway the dashboard passes on each call.
    """

    async def explain(gateway: Gateway, scope: Scope) -> AsyncIterator[AnswerItem]:
        who = subject_name(scope.pid, scope.command, scope.node, scope.workload)
        yield ProgressNote(f"gathering {who}: summary, patterns, recent events and traffic via MCP…")
        context = await explanation_context(gateway, scope)
        if settings.configured:  # (the telemetry is in: the wait from here is the model's, as for ask and summarize)
            yield ProgressNote(f"telemetry gathered; asking {settings.model}…")
        async for event in _explain(settings, scope, context):
            yield event

    async def ask(gateway: Gateway, question: str, context: dict[str, Any] | None) -> AsyncIterator[AnswerItem]:
        yield ProgressNote(f"asking {settings.model}…")
        async for event in stream_question(gateway, settings, question, context):
            yield event

    async def summarize(summary_text: str) -> AsyncIterator[AnswerItem]:
        yield ProgressNote(f"asking {settings.model}…")
        async for event in stream_summary_explanation(settings, summary_text):
            yield event

    configured = settings.configured
    return AIHooks(
        explain=explain,
        ask=ask if configured else None,
        summarize=summarize if configured else None,
        label=engine_label(settings),
        unavailable=str(AIError("No AI model is configured, so questions cannot be answered", NOT_CONFIGURED_HINT)),
    )
