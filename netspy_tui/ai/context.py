"""The data an explanation is made from: a plain JSON-able dict with documented keys.

The lead code gathers it through the MCP tools and passes it to
:func:`netspy_tui.ai.stream_explanation` (sent to the model inside a telemetry block) or to
:func:`netspy_tui.ai.rule_based_explanation` (read locally). Every key is optional.

====================  ========================================================================================
key                   value
====================  ========================================================================================
``process``           ``{"pid": int | None, "command": str | None}``: who is being explained (with ``node`` and
                      ``workload`` when the explanation is narrowed to one)
``summary``           ``NetworkSummary.model_dump(mode="json")``: connection count in the window
``patterns``          ``PatternAnalysis.model_dump(mode="json")`` with ``stats.kind == "connection"``
``recent_events``     ``[ConnectionEvent.model_dump(mode="json"), ...]`` newest first
``packet_drops``      ``PatternAnalysis.model_dump(mode="json")`` with ``stats.kind == "packet_drop"``
                      (``stats.outcomes`` are the kernel drop reasons)
``traffic``           ``TrafficStats.model_dump(mode="json")``: bytes sent and read (per remote address and
                      connection), retransmitted segments, TCP connections opened and closed; only where
                      the source counts them
``latency``           ``LatencyStats.model_dump(mode="json")``: TCP connect latency (p50/p95/max, slowest
                      destinations); only where the source measures it
``inbound_events``    ``[ConnectionEvent.model_dump(mode="json"), ...]``: the newest connections the process
                      accepted (``direction`` ``inbound``: ``peer_*`` who connected)
``inbound_total``     ``int``: how many it accepted in the window (``inbound_events`` holds the newest of them)
``nodes``             ``[str, ...]``: the nodes its events came from (an aggregator's)
``sampled``           ``bool``: the source samples sockets (procfs) and may miss short-lived connections
``source``            ``str``: where the data comes from, as ``SourceInfo.label``
====================  ========================================================================================

:func:`build_context` makes this dict from the models; :func:`parse_context` reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

from pydantic import BaseModel, ValidationError

from netspy_tui.errors import AIError
from netspy_tui.models import (
    ConnectionEvent,
    ConnectionList,
    LatencyStats,
    NetworkSummary,
    PatternAnalysis,
    TrafficStats,
    describe_validation_error,
)


class ProcessRef(TypedDict, total=False):
    pid: int | None
    command: str | None
    node: str
    workload: str


class ExplanationContext(TypedDict, total=False):
    """The documented shape of ``context`` (see the module docstring)."""

    process: ProcessRef
    summary: dict[str, Any]
    patterns: dict[str, Any]
    recent_events: list[dict[str, Any]]
    packet_drops: dict[str, Any]
    traffic: dict[str, Any]
    latency: dict[str, Any]
    inbound_events: list[dict[str, Any]]
    inbound_total: int
    nodes: list[str]
    sampled: bool
    source: str


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)


def build_context(
    *,
    pid: int | None = None,
    command: str | None = None,
    summary: NetworkSummary | None = None,
    patterns: PatternAnalysis | None = None,
    recent: ConnectionList | list[ConnectionEvent] | None = None,
    packet_drops: PatternAnalysis | None = None,
    traffic: TrafficStats | None = None,
    latency: LatencyStats | None = None,
    inbound: ConnectionList | list[ConnectionEvent] | None = None,
    sampled: bool | None = None,
    source: str | None = None,
    node: str | None = None,
    workload: str | None = None,
) -> dict[str, Any]:
    """The explanation context from tool results (any may be None: that key is left out; so are traffic
    and latency figures the source does not have, and an empty inbound list). ``node`` and ``workload``:
    what the figures are narrowed to, besides the process."""
    process: dict[str, Any] = {"pid": pid, "command": command}
    process.update({k: v for k, v in (("node", node), ("workload", workload)) if v})
    ctx: dict[str, Any] = {"process": process}
    if summary is not None:
        ctx["summary"] = _dump(summary)
    if patterns is not None:
        ctx["patterns"] = _dump(patterns)
    if recent is not None:
        events = recent.events if isinstance(recent, ConnectionList) else recent
        ctx["recent_events"] = [_dump(e) for e in events]
        if isinstance(recent, ConnectionList) and recent.sampled and sampled is None:
            sampled = True
    if packet_drops is not None:
        ctx["packet_drops"] = _dump(packet_drops)
    if traffic is not None and traffic.available:
        ctx["traffic"] = _dump(traffic)
    if latency is not None and latency.available:
        ctx["latency"] = _dump(latency)
    accepted = inbound.events if isinstance(inbound, ConnectionList) else inbound
    if accepted:
        ctx["inbound_events"] = [_dump(e) for e in accepted]
        ctx["inbound_total"] = (
            max(inbound.total_count, len(accepted)) if isinstance(inbound, ConnectionList) else len(accepted)
        )
    if sampled is not None:
        ctx["sampled"] = sampled
    src = source or (patterns.source if patterns else None) or (summary.source if summary else None)
    if src:
        ctx["source"] = src
    return ctx


@dataclass
class ParsedContext:
    """The context read back into models (what the rule-based explainer works from)."""

    pid: int | None = None
    command: str | None = None
    summary: NetworkSummary | None = None
    patterns: PatternAnalysis | None = None
    recent_events: list[ConnectionEvent] = field(default_factory=list)
    packet_drops: PatternAnalysis | None = None
    traffic: TrafficStats | None = None
    latency: LatencyStats | None = None
    inbound_events: list[ConnectionEvent] = field(default_factory=list)
    inbound_total: int = 0
    sampled: bool = False
    source: str | None = None


def parse_context(context: dict[str, Any]) -> ParsedContext:
    """Validate ``context``; a malformed part raises :class:`AIError` naming the field."""
    if not isinstance(context, dict):
        raise AIError(f"Explanation context must be a JSON object, not {type(context).__name__}")
    parsed = ParsedContext()
    part = "process"
    try:
        process = context.get("process") or {}
        if not isinstance(process, dict):
            raise AIError("Explanation context field process must be an object")
        pid = process.get("pid")
        parsed.pid = int(pid) if pid is not None else None
        cmd = process.get("command")
        parsed.command = str(cmd) if cmd is not None else None
        parts: tuple[tuple[str, type[BaseModel]], ...] = (
            ("summary", NetworkSummary), ("patterns", PatternAnalysis), ("recent_events", ConnectionEvent),
            ("packet_drops", PatternAnalysis), ("traffic", TrafficStats), ("latency", LatencyStats),
            ("inbound_events", ConnectionEvent),
        )  # fmt: skip
        for part, model in parts:
            value = context.get(part)
            if part.endswith("_events"):  # a list of events (empty when absent)
                setattr(parsed, part, [model.model_validate(e) for e in value or []])
            elif value is not None:
                setattr(parsed, part, model.model_validate(value))
    except ValidationError as exc:
        raise AIError(f"Explanation context field {part} is malformed: {describe_validation_error(exc)}") from None
    except (TypeError, ValueError) as exc:
        raise AIError(f"Explanation context is malformed: {exc}") from None
    try:
        parsed.inbound_total = max(int(context.get("inbound_total") or 0), len(parsed.inbound_events))
    except (TypeError, ValueError):
        raise AIError("Explanation context field inbound_total must be a whole number") from None
    parsed.sampled = bool(context.get("sampled")) or any(e.sampled for e in parsed.recent_events)
    src = context.get("source")
    parsed.source = str(src) if src else (parsed.patterns.source if parsed.patterns else None)
    return parsed
