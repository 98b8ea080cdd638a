"""The poll loop body: fetch through the gateway, keep the window, build a frozen Snapshot.

No widgets here. The app's one poll worker calls :meth:`Poller.poll` on an interval and posts the
result; the screen asks for a different subject or window with :meth:`Poller.configure`, which
takes effect at the start of the next poll (and wakes the loop so that happens at once).

Polling is incremental. Where the source has an insertion order (a store; netspy-tui's aggregator: the fleet's,
:meth:`FleetStore.changes`) connections and drops are asked for with ``after=<its cursor>`` and ``since`` the
window's start: what was stored since the cursor, however old its time (a blocking connect stored when it
returned, seconds after it started; an agent's backlog after an outage), takes its place by time in the tables,
each event once. A connect listed in progress comes again with its outcome: the snapshot also returns the
connects resolved since the store's resolution cursor (``resolved_after``). A remote eBPF server has only the
time cursor: ``since=<newest time seen - OVERLAP>``, and the overlap it re-reads is de-duplicated by id. A refresh
costs in proportion to the new events and outcomes.
Events are trimmed to the window and capped at ``max_rows``. Summary panels (processes, patterns) are
fetched every poll unless they get slow, then at most every twice their cost in seconds, so they take at
most about half the time.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from netspy_tui.analysis import describe
from netspy_tui.errors import NetspyError
from netspy_tui.mcp_tools.gateway import Gateway
from netspy_tui.mcp_tools.schemas import DashboardSnapshot
from netspy_tui.models import (
    ConnectionEvent,
    ConnectionList,
    LatencyReport,
    NameLookup,
    PacketDropEvent,
    PacketDropList,
    PatternAnalysis,
    ProcessList,
    Scope,
    ServerStatus,
    TrafficReport,
    TrafficStats,
    format_time,
)
from netspy_tui.tui.snapshot import PollConfig, Snapshot

#: Most events one list call may return (the tools' own cap).
MAX_EVENTS_PER_CALL = 1000
#: The server status is re-read every this many polls (it rarely changes).
STATUS_EVERY = 5
#: Rows of the process table (the most list_processes returns).
PROCESS_LIMIT = 200
#: Longest wait between retries while polls fail.
MAX_BACKOFF = 30.0
#: Incremental polls ask for events newer than (newest seen - this): an event stamped earlier that
#: reaches the server late (per-CPU buffers, an aggregator's agents) is still fetched; ids de-duplicate.
OVERLAP = timedelta(seconds=2)
#: The overlap on an aggregator without an insertion cursor (ebpf-server's own): its agents post every few seconds
#: each, not in step (``serve --forward`` posts every 2 s what settled 2 s, and retries a failed post after about a
#: second), so one node's events arrive seconds behind another's newest. (An agent's backlog after a longer outage
#: arrives later still: there it is in the counts at once, in the table only once it is among the newest.) On
#: netspy-tui's aggregator the fleet's cursor brings every event stored since, whatever its time: no overlap.
FLEET_OVERLAP = timedelta(seconds=15)
#: Seconds before the summaries were read in which a process's last event means it is still running (the header's
#: events per second keep its count while it is not the subject: its new events are not fetched by the polls).
ACTIVE_SECONDS = 5.0
#: With no new events, the summaries (which only age) are re-read every this many polls.
IDLE_SUMMARY_EVERY = 5
#: While the server notifies changes: seconds between refreshes with no change (the window still moves).
IDLE_REFRESH = 10.0
#: A source that cannot notify (a remote eBPF server) is polled every interval until this many polls in a row
#: brought nothing new; then each further empty poll doubles the wait, up to :data:`IDLE_POLL_MAX`.
IDLE_BACKOFF_AFTER = 3
#: Longest wait between polls of a quiet source that cannot notify: the first event after a quiet spell shows
#: within this many seconds (the next poll that brings one goes back to every interval). A key that changes what
#: is shown (window, filter, focus, a view that needs data) polls at once, whatever the wait.
IDLE_POLL_MAX = 4.0

E = TypeVar("E", ConnectionEvent, PacketDropEvent)


def event_key(event: ConnectionEvent | PacketDropEvent) -> str:
    """Row key of an event: its id (with its node's name when it has one: an aggregator's agents number their
    events each on its own, two replaying one recording alike), or a stand-in when a server sent none."""
    key = event.id or f"{event.type}-{event.pid}-{event.timestamp}-{event.time.isoformat()}"
    return f"{event.k8s_node_name}/{key}" if event.k8s_node_name else key


def backoff(interval: float, attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): interval doubled each time, capped."""
    return float(min(MAX_BACKOFF, max(interval, 0.05) * 2 ** max(0, attempt - 1)))


def _process_list(patterns: PatternAnalysis) -> ProcessList:
    stats = patterns.stats
    procs = list(stats.processes[:PROCESS_LIMIT])
    return ProcessList(
        text=describe.processes_text("connection", procs, stats.window_seconds),
        kind="connection",
        duration_seconds=stats.window_seconds,
        processes=procs,
        total_events=stats.total,
        source=patterns.source,
        first_seen=stats.first_seen,
    )


log = logging.getLogger(__name__)

#: destination addresses asked about per poll (the newest rows first)
NAMES_PER_POLL = 200
#: addresses the resolver said have no name are not asked about again for this long (its negative cache's TTL)
NAMELESS_SECONDS = 300.0
#: at most this many of them remembered
NAMELESS_MAX = 10_000
#: rows of each traffic list (processes, remotes, connections, latency destinations): the tools' cap
TRAFFIC_LIMIT = 200


class _Window(Generic[E]):
    """Events of one kind, keyed by id, in arrival (time) order, bounded by window and count."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.events: dict[str, E] = {}
        self.with_workload = 0
        """How many of :attr:`events` carry a workload (the dashboard gives the process rows their workloads from the
        events only when some do: a pass over every held event at each refresh, for nothing, on a source without)."""
        self._unnamed: dict[str, int] = {}
        """Destination address -> held connections to it without a name (see :meth:`unnamed`)."""
        self.newest: datetime | None = None
        self.overlap = OVERLAP
        self.cursor: int | None = None
        """The source's insertion-order cursor after the last page (None: it has none; the time cursor alone)."""
        self.resolved: int | None = None
        """The source's resolution cursor after the last page (None: it numbers none): held connects listed in
        progress come again with their outcome once the source has it."""
        self.missing_until: datetime | None = None
        """Events of the window at or before this time may not be held (a page that left some unfetched, the cut
        at ``max_rows``, events the source shed): until they have left the window it is not held whole."""

    def missing(self, until: datetime) -> None:
        if self.missing_until is None or until > self.missing_until:
            self.missing_until = until

    def missing_from(self, page: ConnectionList | PacketDropList, now: datetime) -> None:
        """Note what ``page`` (newest first) did not bring: events older than its oldest when it was cut, any
        time up to now when the source shed some."""
        if page.not_kept:
            self.missing(now)
        elif page.truncated and page.total_count > page.returned:
            self.missing(page.events[-1].time if page.events else now)

    def gapped(self) -> bool:
        """Whether some event held is older than one that may not be (a burst's unfetched middle, events the source
        shed): the rows are then not the window's latest, and the tab says so."""
        if self.missing_until is None or not self.events:
            return False
        return next(iter(self.events.values())).time < self.missing_until

    def whole(self, cutoff: datetime) -> bool:
        """Whether every event of the window (after ``cutoff``) is held."""
        return self.missing_until is None or self.missing_until <= cutoff

    def since(self, start: datetime | None = None) -> str | None:
        """The time cursor of the next poll: the newest time held less the overlap; with an insertion cursor
        (``start``: the window's start), the window's start: the cursor alone says what is new, and an event
        stored late (a blocking connect that returned seconds after it started, an agent's backlog) still
        comes (one older than the window does not)."""
        if self.newest is None:
            return None
        if start is not None and self.cursor is not None:
            return format_time(start)
        return format_time(self.newest - self.overlap)

    def known_after(self, since: str | None) -> int:
        """How many events already held are newer than ``since`` (the overlap a poll re-reads)."""
        if since is None or self.newest is None or self.cursor is not None:
            return 0  # (with a cursor, a page holds only events not seen before)
        cutoff = self.newest - self.overlap
        return sum(1 for event in self.events.values() if event.time > cutoff)

    def add(self, newest_first: list[E]) -> int:
        """Add what is new; the window stays in event-time order even when an event arrives late (an outcome
        recorded after newer connects, or an older page of a burst fetched after a newer one)."""
        added = 0
        late = False
        events = self.events
        earliest: datetime | None = None
        for event in reversed(newest_first):
            key = event_key(event)
            if key in events:
                held = events[key]
                if isinstance(held, ConnectionEvent) and held.outcome == "in_progress" != event.outcome:
                    events[key] = event  # (the same connect again with its outcome: a source without resolutions)
                    self._count(held, -1)
                    self._count(event, 1)
                continue
            events[key] = event
            self._count(event, 1)
            added += 1
            if earliest is None or event.time < earliest:
                earliest = event.time
            if self.newest is None or event.time >= self.newest:
                self.newest = event.time
            else:
                late = True
        if late and earliest is not None:
            self._resort_from(earliest, added)
        return added

    def update(self, events: list[E]) -> int:
        """Put events that came again with their outcome (same key) in place of the held ones; returns how many
        changed. One not held (left the window, cut at ``max_rows``) is not added: it was not listed."""
        changed = 0
        held = self.events
        for event in events:
            key = event_key(event)
            old = held.get(key)
            if old is None or old == event:
                continue
            if isinstance(old, ConnectionEvent) and isinstance(event, ConnectionEvent):
                if old.hostname and not event.hostname:  # (a name learnt since it was listed stays)
                    event = event.model_copy(update={"hostname": old.hostname})
            held[key] = event
            self._count(old, -1)
            self._count(event, 1)
            changed += 1
        return changed

    def _resort_from(self, earliest: datetime, added: int) -> None:
        """Put the ``added`` events (the last ones in :attr:`events`) in time order: the same order as a stable sort
        of the whole window by time, re-sorting only the events after ``earliest`` (the held ones newer than the
        earliest added, then the added ones): a late event is seconds old, the window holds thousands."""
        events = self.events
        tail: list[tuple[str, E]] = []
        for i, item in enumerate(reversed(events.items())):
            if i >= added and item[1].time <= earliest:
                break
            tail.append(item)
        tail.reverse()
        for key, _ in tail:
            del events[key]
        events.update(sorted(tail, key=lambda item: item[1].time))

    def _count(self, event: E, sign: int) -> None:
        """Count ``event`` in (1) or out (-1) of :attr:`with_workload` and the unnamed addresses, as it is put in or
        taken out of :attr:`events`."""
        if event.workload:
            self.with_workload += sign
        if isinstance(event, ConnectionEvent) and not event.hostname and (address := event.destination_ip):
            left = self._unnamed.get(address, 0) + sign
            if left:
                self._unnamed[address] = left
            else:
                del self._unnamed[address]

    def unnamed(self, most: int, nameless: frozenset[str] | set[str] = frozenset()) -> list[str]:
        """Up to ``most`` destination addresses of held connections that have no name yet (and are not among
        the ``nameless``: addresses the resolver already said have none)."""
        # newest first, stopping once every such address is found (how many: the count kept by address): the names
        # asked are those of the new rows, and the walk over every row held (2,000 at 100 events/s) to find none
        # older was ~3 % of the dashboard's main thread
        wanted = min(most, sum(1 for address in self._unnamed if address not in nameless))
        out: dict[str, None] = {}
        if not wanted:
            return []
        for event in reversed(self.events.values()):  # the newest first: what the user sees
            if (
                isinstance(event, ConnectionEvent)
                and not event.hostname
                and event.destination_ip
                and event.destination_ip not in nameless
            ):
                out[event.destination_ip] = None
                if len(out) >= wanted:
                    break
        return list(out)

    def name(self, names: dict[str, str]) -> int:
        """Give held connections the names learnt since they arrived; returns how many changed."""
        changed = 0
        for key, event in self.events.items():
            if isinstance(event, ConnectionEvent) and not event.hostname:
                name = names.get(event.destination_ip)
                if name:
                    self.events[key] = named = event.model_copy(update={"hostname": name})
                    self._count(event, -1)
                    self._count(named, 1)
                    changed += 1
        return changed

    def trim(self, cutoff: datetime) -> None:
        events = self.events
        excess = len(events) - self.max_rows
        stale = []
        for key, event in events.items():
            if excess > 0 or event.time <= cutoff:
                stale.append(key)
                if event.time > cutoff:  # (cut at max_rows while still in the window)
                    self.missing(event.time)
                excess -= 1
            else:
                break
        for key in stale:
            self._count(events.pop(key), -1)

    def frozen(self) -> tuple[E, ...]:
        return tuple(self.events.values())


class Poller:
    def __init__(
        self,
        gateway: Gateway,
        *,
        clock: Callable[[], datetime],
        window: int,
        interval: float,
        max_rows: int = 2000,
        max_events: int = MAX_EVENTS_PER_CALL,
    ) -> None:
        self.gateway = gateway
        self._names_supported = True
        self._bytes_supported = True
        self._inbound_supported = True
        self._clock = clock
        self.interval = interval
        self._max_rows = max_rows
        self._max_events = min(max_events, MAX_EVENTS_PER_CALL)
        self._config = PollConfig(window=window)
        self._version = 0
        self._pending: tuple[int, PollConfig] | None = None
        self._status: ServerStatus | None = None
        self._traffic_wanted = False
        self._reset()
        self.wake = asyncio.Event()
        """Set to end the current sleep early (a new configuration is waiting)."""
        self.changed = asyncio.Event()
        """Set when the server says new telemetry was stored (see :meth:`next_poll`)."""
        self.following = False
        """True while the server's change notifications arrive: poll after a change, not on every tick."""
        self.names_pending = False
        """Names of held rows are still being asked: poll again after the interval even without a change."""
        self._nameless: set[str] = set()
        self._nameless_until = time.monotonic() + NAMELESS_SECONDS

    def _reset(self) -> None:
        self._conns: _Window[ConnectionEvent] = _Window(self._max_rows)
        self._inbound: _Window[ConnectionEvent] = _Window(self._max_rows)
        """Connections accepted (``inbound``): a window of their own, paged by time (they have no store cursor)."""
        self._drops: _Window[PacketDropEvent] = _Window(self._max_rows)
        self._summaries: tuple[ProcessList, PatternAnalysis, PatternAnalysis] | None = None
        self._aged_seen: datetime | None = None  # (the newest event of a summarised row that had left the window)
        self._tick = 0
        self._idle_ticks = 0
        self._summary_gap = 0.0
        """Seconds between summary reads while events arrive: twice what the last read cost (they take at most
        about half the time), however often polls come (every interval, or only on change notifications)."""
        self._summaries_at = 0.0
        self._read_at: datetime | None = None
        """When (by the clock) the summaries were read: the header's events of the window are aged from it."""
        self._arrived = 0
        """Connection events of every process that arrived since the summaries were read (counted while the subject
        is every process: then a poll's pages are every arrival)."""
        self.summaries_behind = False
        """Events came after the last summary read (within its gap): the panels are read again once the gap has
        passed, even if nothing else comes (else a lone event stayed out of them until the idle read, 50 s
        while following)."""

    @property
    def config(self) -> PollConfig:
        return self._pending[1] if self._pending else self._config

    @property
    def version(self) -> int:
        return self._pending[0] if self._pending else self._version

    @property
    def traffic_wanted(self) -> bool:
        return self._traffic_wanted

    def want_traffic(self, wanted: bool) -> None:
        """Fetch traffic and connect latency from the next poll on (the Traffic view is shown), or stop."""
        if wanted != self._traffic_wanted:
            self._traffic_wanted = wanted
            if wanted:
                self.wake.set()  # the view is empty until the next poll: make it now

    def configure(self, *, window: int | None = None, subject: Scope | None = None, wake: bool = True) -> int:
        """Ask for another window or subject from the next poll on; returns the new config version. The loop is
        woken to poll at once unless ``wake`` is False (the caller sets :attr:`wake` when it is ready)."""
        new = self.config
        if window is not None:
            new = replace(new, window=window)
        if subject is not None:
            new = replace(new, subject=subject)
        if new == self.config:
            return self.version
        self._pending = (self.version + 1, new)
        if wake:
            self.wake.set()
        return self._pending[0]

    async def poll(self) -> Snapshot:
        """One poll: raises whatever the gateway raises (NetspyError and friends); state is kept.

        One round trip (``dashboard_snapshot``) carries what the refresh needs: the status when due, the
        events since the cursors, names for held rows and the summaries when due. A second call happens only
        for a burst (older pages of connections) or when events arrive after idle polls skipped the summaries.
        """
        if self._pending is not None:
            self._version, self._config = self._pending
            self._pending = None
            self._reset()
        cfg, version = self._config, self._version
        subject = replace(cfg.subject, window=cfg.window)
        started = time.perf_counter()
        parts = ["connections", "drops"]
        if self._status is None or self._tick % STATUS_EVERY == 0 or self.following:
            parts.append("status")  # following changes, polls are few: each reads the health too
        # by the time since the last read (counted in polls, as two moduli of the poll count, they could stay out
        # of phase for good and the panels stale): at most every gap while events arrive, about every
        # IDLE_SUMMARY_EVERY-th poll while idle
        since_read = started - self._summaries_at
        idle_gap = IDLE_SUMMARY_EVERY * (IDLE_REFRESH if self.following else self.interval)
        gap = max(self._summary_gap, idle_gap) if self._idle_ticks and not self.summaries_behind else self._summary_gap
        summaries_due = self._summaries is None or since_read >= gap or self._summaries_aged(cfg.window)
        if summaries_due:
            parts += self._summary_parts(subject)
        if time.monotonic() > self._nameless_until:  # names may have appeared since: ask about them again
            self._nameless = set()
            self._nameless_until = time.monotonic() + NAMELESS_SECONDS
        unnamed = self._conns.unnamed(NAMES_PER_POLL, self._nameless) if self._names_supported else []
        if unnamed:
            parts.append("names")
        if self._bytes_supported:
            parts.append("recent_bytes")
        if self._inbound_supported:
            parts.append("inbound")
        fetched_since = self._conns.newest is not None
        drops_fetched_since = self._drops.newest is not None
        # with an insertion cursor (a store's, an aggregator's: the fleet's) the time bound is the window's start: what
        # was stored since the cursor, of any time in the window (a blocking connect is stored when it returns,
        # seconds after its start; an agent's backlog minutes after), each event once
        start = self._window_start(cfg.window)
        since = self._conns.since(start)
        drops = (self._drops.since(start), self._drops.cursor)
        # (the first time, only the window: a store can hold hours of accepted connections)
        inbound_since = self._inbound.since() or format_time(self._clock() - timedelta(seconds=cfg.window))
        snap = await self._snapshot(subject, parts, (since, self._conns.cursor), drops, unnamed, inbound_since,
                                    None if self._conns.cursor is None else self._conns.resolved or 0)  # fmt: skip
        cost = time.perf_counter() - started
        if snap.status is not None:
            self._status = snap.status
            overlap = FLEET_OVERLAP if snap.status.source.generation == "aggregator" else OVERLAP
            self._conns.overlap = self._inbound.overlap = self._drops.overlap = overlap
        if snap.names is not None:
            self._names(snap.names, unnamed)
        if snap.connections is None or snap.drops is None:
            raise NetspyError("dashboard_snapshot answered without the events asked for")
        after = self._conns.cursor
        self._conns.cursor, self._drops.cursor = snap.connections.cursor, snap.drops.cursor
        self._conns.resolved = snap.connections.resolved_cursor
        # (outcomes resolved since the last poll, of connects held in progress: before the new page, which may page
        # older events and cut at max_rows)
        resolved = self._conns.update(list(snap.connections.updates))
        new, skipped = await self._fetch_connections(subject, since, after, snap.connections)
        if subject.is_all and fetched_since:
            self._arrived += new + skipped
        self._drops.missing_from(snap.drops, self._clock())
        drops_skipped = self._skipped(self._drops, drops[0], snap.drops)
        new_drops = self._drops.add(list(snap.drops.events))
        new += self._add_inbound(snap)
        if not fetched_since:
            skipped = 0  # the first poll shows the newest rows; older ones are not "missed"
        if not drops_fetched_since:
            drops_skipped = 0
        if snap.names is None and new and self._names_supported:
            self.names_pending = bool(self._conns.unnamed(1))  # ask about the new rows' names next poll
        if new or new_drops or resolved:
            self._idle_ticks = 0
        else:
            self._idle_ticks += 1
        if summaries_due:
            self._keep_summaries(subject, snap, cost)
        elif (new or new_drops or resolved) and since_read >= self._summary_gap:
            # events after idle polls (which skip the summaries): the panels follow in this refresh
            s0 = time.perf_counter()
            extra = await self._snapshot(subject, self._summary_parts(subject), (None, None), (None, None), [])
            self._keep_summaries(subject, extra, time.perf_counter() - s0)
        elif new or new_drops or resolved:
            self.summaries_behind = True
        self._tick += 1
        now = self._clock()
        cutoff = now - timedelta(seconds=cfg.window)
        self._conns.trim(cutoff)
        self._inbound.trim(cutoff)
        self._drops.trim(cutoff)
        assert self._summaries is not None and self._status is not None
        processes, patterns, drop_patterns = self._summaries
        connections = self._connections()
        held = len(self._conns.events) + len(self._inbound.events)
        traffic, latency, traffic_error = await self._fetch_traffic(subject) if self._traffic_wanted else (None,) * 3
        recent_bytes = self._recent_bytes(snap)
        return Snapshot(
            version=version,
            config=cfg,
            taken_at=now,
            latency_ms=(time.perf_counter() - started) * 1000,
            status=self._status,
            connections=connections,
            drops=self._drops.frozen(),
            connections_whole=self._conns.whole(cutoff) and self._inbound.whole(cutoff) and held == len(connections),
            connections_gapped=self._conns.gapped(),
            inbound_held=len(self._inbound.events),
            drops_whole=self._drops.whole(cutoff),
            drops_gapped=self._drops.gapped(),
            processes=processes,
            patterns=patterns,
            drop_patterns=drop_patterns,
            new_connections=new,
            burst_skipped=skipped,
            drops_skipped=drops_skipped,
            window_events=self._window_events(processes, now, cfg.window, subject.is_all),
            traffic=traffic,
            latency=latency,
            traffic_error=traffic_error,
            recent_bytes=recent_bytes,
            workloads_held=bool(self._conns.with_workload or self._inbound.with_workload),
        )

    def _window_start(self, window: int) -> datetime:
        return self._clock() - timedelta(seconds=window)

    def _add_inbound(self, snap: DashboardSnapshot) -> int:
        """Add the accepted connections of the ``inbound`` part; a source that does not see them is not asked
        again."""
        page = snap.inbound
        if page is None:
            return 0
        if page.inbound_available is False:
            self._inbound_supported = False
            return 0
        self._inbound.missing_from(page, self._clock())
        return self._inbound.add(list(page.events))

    def _connections(self) -> tuple[ConnectionEvent, ...]:
        """connect() attempts and accepted connections in time order, the newest ``max_rows`` of them."""
        inbound = self._inbound.frozen()
        if not inbound:
            return self._conns.frozen()
        both = list(heapq.merge(self._conns.events.values(), inbound, key=lambda e: e.time))
        return tuple(both[-self._max_rows :])

    def _recent_bytes(self, snap: DashboardSnapshot) -> TrafficStats | None:
        """The subject's bytes over the last few seconds (the ``recent_bytes`` part: the pattern panel's rx/tx
        sparklines): None when not asked or the source does not count bytes (then it is not asked again)."""
        report = snap.recent_bytes
        if report is None:
            return None
        if not report.stats.available:
            self._bytes_supported = False
            return None
        return report.stats

    async def _fetch_traffic(self, subject: Scope) -> tuple[TrafficReport | None, LatencyReport | None, str | None]:
        """Bytes and connect latency for the subject over the window (the Traffic view). A tool that fails
        (a server without it, a bad answer) is one line for the view, not a failed poll."""
        args = (subject.pid, subject.command, subject.window, TRAFFIC_LIMIT)
        try:
            traffic = await self.gateway.traffic(*args)
            latency = await self.gateway.connect_latency(*args)
        except NetspyError as exc:
            log.debug("traffic unavailable: %s", exc)
            return None, None, str(exc)
        return traffic, latency, None

    @staticmethod
    def _skipped(window: _Window[E], since: str | None, page: ConnectionList | PacketDropList) -> int:
        """Events of a poll's page that a burst left unfetched (the page is the newest ``max_events`` of them): its
        total less what it returned and what the window already held of the overlap it re-read."""
        if not page.truncated:
            return 0
        known = window.known_after(since) - sum(1 for e in page.events if event_key(e) in window.events)
        return max(0, page.total_count - page.returned - max(0, known))

    def _summaries_aged(self, window: int) -> bool:
        """Whether a row of the last summaries has had all its events leave the window since (its newest event is
        older than the window): idle, they were read again only every :data:`IDLE_SUMMARY_EVERY` refreshes, and
        the process table kept processes (and counts) the event tables had let go for ~50 s. Keyed on each row's
        newest event, not on the oldest event counted: over a window full of events the oldest leaves at every
        moment, and the summaries were read again at every idle poll (an hour of 1,000,000 events idled at 0.5-0.6 %
        of a core against 0.2). Once for each such event (a source whose clock is behind this one's would have
        them read at every poll)."""
        if self._summaries is None:
            return False
        processes, *patterns = self._summaries
        lasts = [p.last_seen for p in processes.processes] + [
            a.stats.last_seen for a in patterns if a.stats.total and a.stats.last_seen is not None
        ]
        gone = min(lasts, default=None)
        if gone is None or gone >= self._clock() - timedelta(seconds=window) or gone == self._aged_seen:
            return False
        self._aged_seen = gone
        return True

    @staticmethod
    def _summary_parts(subject: Scope) -> list[str]:
        # analyze_patterns over all traffic already ranks the processes (the same aggregate that list_processes
        # returns): one aggregation instead of two.
        return ["patterns", "drop_patterns"] + ([] if subject.is_all else ["processes"])

    async def _snapshot(
        self,
        subject: Scope,
        parts: list[str],
        conns: tuple[str | None, int | None],
        drops: tuple[str | None, int | None],
        addresses: list[str],
        inbound_since: str | None = None,
        resolved_after: int | None = None,
    ) -> DashboardSnapshot:
        """``conns`` and ``drops``: each list's (since, after) cursors; ``inbound_since`` the inbound part's;
        ``resolved_after`` the connections' resolution cursor."""
        return await self.gateway.snapshot(
            subject.pid,
            subject.command,
            subject.window,
            max_events=self._max_events,
            since=conns[0],
            drops_since=drops[0],
            after=conns[1],
            drops_after=drops[1],
            parts=parts,
            limit=PROCESS_LIMIT,
            addresses=addresses,
            node=subject.node,
            workload=subject.workload,
            inbound_since=inbound_since,
            resolved_after=resolved_after,
        )

    def _window_events(self, processes: ProcessList, now: datetime, window: int, everyone: bool) -> float:
        """The connection events of the window now, from the summaries read at :attr:`_read_at` (every poll would be
        a window's aggregation each): what has left the window since by each process's first and last event
        (spread evenly between them), plus what arrived since. While the subject is every process the polls see
        every arrival; under a filter or focus they see the subject's alone, and a process whose last event was
        within :data:`ACTIVE_SECONDS` of the read is taken to go on as it did (its count kept) until the next read."""
        total = processes.total_events
        read_at = self._read_at
        if read_at is None or now <= read_at:
            return float(total)
        cut = now - timedelta(seconds=window)
        active = read_at - timedelta(seconds=ACTIVE_SECONDS)
        listed = 0
        kept = 0.0
        for proc in processes.processes:
            listed += proc.attempts
            if (not everyone and proc.last_seen >= active) or proc.first_seen > cut:
                kept += proc.attempts
            elif proc.last_seen > cut:
                span = (proc.last_seen - proc.first_seen).total_seconds()
                kept += proc.attempts * min(1.0, (proc.last_seen - cut).total_seconds() / span) if span > 0 else 0.0
        rest = max(0, total - listed)  # (processes past the list's limit: aged as the listed ones)
        aged = kept + (rest * kept / listed if listed else rest)
        return aged + (self._arrived if everyone else 0)

    def _keep_summaries(self, subject: Scope, snap: DashboardSnapshot, cost: float) -> None:
        patterns, drop_patterns = snap.patterns, snap.drop_patterns
        if patterns is None or drop_patterns is None:
            raise NetspyError("dashboard_snapshot answered without the summaries asked for")
        processes = snap.processes if snap.processes is not None else _process_list(patterns)
        self._summaries = (processes, patterns, drop_patterns)
        self._summaries_at = time.perf_counter()
        self._read_at = self._clock()
        self._arrived = 0
        self._summary_gap = 2 * cost
        self.summaries_behind = False

    def _names(self, lookup: NameLookup, asked: list[str]) -> None:
        """Names learnt since rows arrived (the list call names only what was known when it ran). The addresses
        ``asked`` that the resolver says have no name (or all that came back without one, with no question in flight)
        are not asked about again for :data:`NAMELESS_SECONDS`: a poll asks about the addresses new since, not again
        about every address of the window while other questions are in flight."""
        self.names_pending = lookup.enabled and lookup.pending > 0
        if not lookup.enabled:
            self._names_supported = False
            return
        if lookup.names:
            self._conns.name(lookup.names)
        if len(self._nameless) < NAMELESS_MAX:
            if lookup.pending == 0:
                self._nameless.update(a for a in asked if a not in lookup.names)
            else:
                self._nameless.update(lookup.nameless)

    async def _fetch_connections(
        self, subject: Scope, since: str | None, after: int | None, first: ConnectionList
    ) -> tuple[int, int]:
        """Add ``first`` (the connections since ``since``, stored after ``after``) and, through a burst the table can
        hold whole, older pages with ``until``; returns (added, events left unfetched).

        A burst of more new events than ``max_rows`` cannot be held whole whatever is paged: its older events are
        left unfetched either way (the status line counts them). Then only ``first``, its newest, is added: the
        pages that would fill the rest of the table with other events of the burst a user cannot read at that rate
        were most of the poll (a flooded aggregator: two pages of 1,000 events every second, the dashboard ~35 % of
        a core, each page ~120 ms of its CPU)."""
        until: str | None = None
        pages: dict[str, ConnectionEvent] = {}
        page = first
        known = self._conns.known_after(since)  # (held events the page's overlap re-read: a pass over them, once)
        fits = first.total_count - known <= self._max_rows
        while True:
            before = len(pages)
            for event in page.events:
                pages.setdefault(event_key(event), event)
            grew = len(pages) > before
            if not page.truncated or not grew or len(pages) >= self._max_rows or since is None or not fits:
                left = 0
                if page.truncated:
                    known_unreturned = known - sum(1 for key in pages if key in self._conns.events)
                    left = max(0, page.total_count - page.returned - max(0, known_unreturned))
                break
            until = format_time(page.events[-1].time)
            # (the snapshot's connections part, not list_connections: the same page without its text, a line an
            # event: ~25 ms of a 1,000-event page)
            older = await self.gateway.snapshot(subject.pid, subject.command, max_events=self._max_events, since=since,
                                                until=until, after=after, parts=["connections"], node=subject.node,
                                                workload=subject.workload)  # fmt: skip
            if older.connections is None:
                raise NetspyError("dashboard_snapshot answered without the events asked for")
            page = older.connections
        newest_first = sorted(pages.values(), key=lambda e: (e.time, e.timestamp), reverse=True)
        if first.not_kept:
            self._conns.missing(self._clock())
        elif left:
            self._conns.missing(newest_first[-1].time if newest_first else self._clock())
        return self._conns.add(newest_first), left

    async def next_poll(self, seconds: float) -> None:
        """Wait until the next poll is due: the rest of the interval (at most one refresh an interval), then,
        while following the server's change notifications, until something changed — or :data:`IDLE_REFRESH`
        passed (rows leave the window as it moves) or a new configuration waits; while names of shown rows are
        still being asked, after the interval. Without notifications (a remote eBPF server), every interval, and
        less often while polls bring nothing new (:meth:`idle_wait`)."""
        if not self.following:
            seconds += self.idle_wait() - self.interval
        woken = await self.sleep(seconds)
        if woken or not self.following or self.changed.is_set() or self.names_pending or self.summaries_behind:
            self.changed.clear()
            return
        changed = asyncio.ensure_future(self.changed.wait())
        waking = asyncio.ensure_future(self.wake.wait())
        try:
            await asyncio.wait((changed, waking), timeout=IDLE_REFRESH, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            waking.cancel()
        self.changed.clear()
        self.wake.clear()

    def idle_wait(self) -> float:
        """Seconds from one poll to the next of a source that cannot notify: the interval, doubled for each empty
        poll in a row past :data:`IDLE_BACKOFF_AFTER`, at most :data:`IDLE_POLL_MAX` (never less than the
        interval); the interval while names of shown rows are still being asked."""
        quiet = self._idle_ticks - IDLE_BACKOFF_AFTER
        if quiet <= 0 or self.names_pending or self.summaries_behind:
            return self.interval
        return float(min(max(self.interval, IDLE_POLL_MAX), self.interval * 2.0 ** min(quiet, 16)))

    async def sleep(self, seconds: float) -> bool:
        """Sleep ``seconds`` or until :meth:`configure` (or a view that wants data now) wakes the loop;
        True when woken."""
        woken = self.wake.is_set()
        if seconds > 0 and not woken:
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=seconds)
                woken = True
            except TimeoutError:
                pass
        self.wake.clear()
        return woken
