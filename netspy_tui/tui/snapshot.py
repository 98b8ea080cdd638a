"""Frozen snapshots of what the dashboard shows, built by the poller, rendered by the screen."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from netspy_tui.models import (
    ConnectionEvent,
    LatencyReport,
    PacketDropEvent,
    PatternAnalysis,
    ProcessList,
    Scope,
    ServerStatus,
    TrafficReport,
    TrafficStats,
)

#: Every process: the dashboard's subject when nothing is focused or filtered.
ALL = Scope()


@dataclass(frozen=True, slots=True)
class PollConfig:
    window: int
    subject: Scope = ALL
    """Whose traffic the tools are asked about: its pid or command (the poller asks about both
    kinds of event, over ``window``)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one poll saw. Connections and drops are oldest first, bounded by window and row cap."""

    version: int
    """The PollConfig version this snapshot answers (older versions are dropped by the screen)."""
    config: PollConfig
    taken_at: datetime
    latency_ms: float
    """Wall time of the whole poll (all tool calls)."""
    status: ServerStatus | None
    connections: tuple[ConnectionEvent, ...]
    drops: tuple[PacketDropEvent, ...]
    processes: ProcessList | None
    patterns: PatternAnalysis | None
    drop_patterns: PatternAnalysis | None
    new_connections: int
    """Connection events that arrived in this poll."""
    burst_skipped: int = 0
    """Events a burst pushed past ``max_events`` in one poll (not fetched)."""
    drops_skipped: int = 0
    """Packet drops a burst pushed past ``max_events`` in one poll (not fetched: the drops table has a gap there)."""
    connections_whole: bool = False
    """``connections`` holds every connection event of the window (none left unfetched, cut at the row cap or shed
    by the source): their count is the window's, whatever a summary read at another moment says."""
    drops_whole: bool = False
    """The same for ``drops``."""
    connections_gapped: bool = False
    """Some event of ``connections`` is older than events of the window that are not held (a burst's unfetched
    middle, events the source shed): they are not the window's latest."""
    drops_gapped: bool = False
    """The same for ``drops``."""
    inbound_held: int = 0
    """Accepted connections held (``connections`` merges them with the connect() attempts, whose window count the
    pattern analysis gives): what the Connections tab's "latest N of M" adds to that count."""
    traffic: TrafficReport | None = None
    """Bytes per process, remote and connection (``get_traffic``): fetched only while the Traffic view is shown."""
    latency: LatencyReport | None = None
    """Connect latency per destination (``get_connect_latency``), fetched with ``traffic``."""
    traffic_error: str | None = None
    """Why ``traffic`` or ``latency`` could not be read this poll (one line), else None."""
    window_events: float | None = None
    """The connection events of the window at ``taken_at``: the summaries' count (read at most every few polls)
    aged to now (see :meth:`Poller._window_events`); None: the count as read."""
    workloads_held: bool = True
    """Some event of ``connections`` may carry a workload (False: none does, and the process rows need not look)."""
    recent_bytes: TrafficStats | None = None
    """The subject's bytes over the last few seconds (every poll, for the rx/tx sparklines); None when the source
    does not count bytes."""

    @property
    def observed_seconds(self) -> float | None:
        """The part of the window the source has observed: the window, or the source's uptime when it started
        later (a 1-hour window 4 minutes after start holds 4 minutes of events), or, when the window holds events
        older than that (a recording replayed, a ``--db`` reopened), the span from the first of them. A source
        that does not say its uptime (a remote server) is taken to have observed the whole window."""
        processes = self.processes
        if processes is None:
            return None
        window = float(max(1, processes.duration_seconds))
        uptime = self.status.source.uptime_seconds if self.status is not None else None
        if uptime is None:
            return window
        first = processes.first_seen or min((p.first_seen for p in processes.processes), default=None)
        span = (self.taken_at - first).total_seconds() if first is not None else 0.0
        return max(1.0, min(window, max(uptime, span)))

    @property
    def events_per_second(self) -> float | None:
        """Events of the window averaged over the time actually observed."""
        observed = self.observed_seconds
        if self.processes is None or observed is None:
            return None
        total = self.processes.total_events if self.window_events is None else self.window_events
        return max(0.0, total) / observed
