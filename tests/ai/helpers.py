"""Contexts for explanations built the way the MCP tools build their results (figures from ``aggregate``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from netspy_tui.ai import build_context
from netspy_tui.analysis.aggregate import FAILED_OUTCOMES, AnyEvent, aggregate, filter_events, observed_seconds
from netspy_tui.models import (
    ConnectionEvent,
    ConnectionList,
    EventKind,
    EventQuery,
    NetworkSummary,
    PatternAnalysis,
    Scope,
)

SOURCE = "events in memory"


def pattern_analysis(
    events: Sequence[AnyEvent],
    kind: EventKind,
    pid: int | None,
    command: str | None,
    window: int,
    now: datetime,
    started: datetime | None = None,
) -> PatternAnalysis:
    """``started``: when the source started observing (None: not said, the whole window was)."""
    stats = aggregate(events, Scope(kind, pid, command, window), now)
    observed = observed_seconds(window, now, stats.first_seen, started)
    rate = stats.total * 60 / observed
    failures = sum(c.count for c in stats.outcomes if c.key in FAILED_OUTCOMES) if kind == "connection" else 0
    ratio = failures / stats.total if stats.total else 0.0
    return PatternAnalysis(text="(text)", stats=stats, rate_per_minute=round(rate, 3), failure_ratio=round(ratio, 4),
                           source=SOURCE, observed_seconds=observed)  # fmt: skip


def context_for(
    events: Sequence[AnyEvent],
    pid: int | None,
    command: str | None,
    window: int,
    now: datetime,
    *,
    drops: bool = True,
    sampled: bool = False,
    recent_limit: int = 30,
    started: datetime | None = None,
) -> dict[str, object]:
    patterns = pattern_analysis(events, "connection", pid, command, window, now, started)
    page, total = filter_events(events, EventQuery(kind="connection", pid=pid, command=command, limit=recent_limit))
    conns = [e for e in page if isinstance(e, ConnectionEvent)]
    recent = ConnectionList(
        text="(text)",
        events=conns,
        total_count=total,
        returned=len(conns),
        truncated=total > len(conns),
        pid=pid,
        process_name=command,
        source=SOURCE,
        sampled=sampled,
    )
    summary = NetworkSummary(
        text="(text)",
        kind="connection",
        count=patterns.stats.total,
        pid=pid,
        process_name=command,
        duration_seconds=window,
        source=SOURCE,
        query_time=now,
    )
    drop_patterns = pattern_analysis(events, "packet_drop", pid, command, window, now, started) if drops else None
    return build_context(
        pid=pid, command=command, summary=summary, patterns=patterns, recent=recent, packet_drops=drop_patterns
    )
