"""A :class:`~netspy_tui.telemetry.source.TelemetrySource` over a :class:`FleetStore`: what
``serve --aggregate`` answers its queries (HTTP and MCP) from.

Every figure is asked of each node's store (only the scope's ``node`` when it names one) and merged
with :mod:`netspy_tui.fleet.merge`, so the fleet's counts are the exact sums of the nodes' own. A
``workload`` filter has no rollup to read: it is answered from the raw events the agents sent
(their ``workload`` field), at most :data:`RAW_LIMIT` per node and query.

A page says the fleet's insertion position (its ``cursor``); a query ``after`` it reads only the nodes that
stored events since, each from where its store stood then (:meth:`FleetStore.changes`): the events stored
since, each once, an agent's backlog of minutes-old events as well as the newest. A page of connections also says
the fleet's resolution position (``resolved_cursor``); a query after both positions (``resolved_after``) is also
given, as ``updates``, the connects stored by then that their agents gave their outcome since (sent in progress,
then resolved: :meth:`FleetStore.replaced_since`), as ``serve`` gives its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from netspy_tui.analysis.aggregate import AnyEvent, aggregate, filter_events
from netspy_tui.fleet.merge import NODE_TOP_N, merge_pages, merge_stats, merge_stored, merge_stored_items
from netspy_tui.fleet.store import FleetStore
from netspy_tui.models import (
    NOT_AGGREGATED,
    EventPage,
    EventQuery,
    ProgramInfo,
    Scope,
    SourceInfo,
    WindowStats,
    ns_to_time,
    time_to_ns,
    utcnow,
)
from netspy_tui.store import EventStore
from netspy_tui.store.sqlite import build_stored
from netspy_tui.textsafe import clean

__all__ = ["FleetSource", "RAW_LIMIT"]

log = logging.getLogger(__name__)

#: raw events read per node to answer a workload filter
RAW_LIMIT = 200_000


def _plain(q: EventQuery, limit: int, change: tuple[int, int] | None = None) -> EventQuery:
    """``q`` as a node's store can answer it (it knows neither nodes nor workloads, nor the fleet's positions):
    ``change``, for a query after a fleet position, is the node's (store position then, oldest event time stored
    since in ns): its events stored after that position, none older than that time (the time index reads only
    their seconds: a few, or an agent's backlog's minutes, not the whole window)."""
    since, after = q.since, None
    if change is not None:
        after = change[0]
        oldest = ns_to_time(change[1] - 1000)  # (strictly before it: since is exclusive, times are in µs)
        since = oldest if since is None or oldest > since else since
    return EventQuery(kind=q.kind, pid=q.pid, command=q.command, since=since, until=q.until, limit=limit, after=after)


class FleetSource:
    """The fleet's events in ``fleet``; the store is its owner's to close."""

    #: why its traffic and connect latency are ``available`` False (the API and the tools say it)
    figures_unavailable = NOT_AGGREGATED

    def __init__(self, fleet: FleetStore) -> None:
        self.fleet = fleet
        self._started = time.monotonic()
        #: the events its stores held when it started: what it took in since is the total less these (a restart
        #: starts ``events_seen``, /metrics' netspy_events_seen_total, again from 0, as netspy_connects_total does)
        self._held_at_start = int(fleet.stats()["total_events"])

    @property
    def started_at(self) -> datetime:
        """When it started taking events in (wall clock): rates are averaged from then, or from a window's first
        event when its stores hold older ones (see :func:`netspy_tui.analysis.aggregate.observed_seconds`)."""
        return utcnow() - timedelta(seconds=time.monotonic() - self._started)

    def known_nodes(self) -> list[str]:
        """The nodes that have sent events, sorted."""
        return sorted(self.fleet.nodes())

    def _stores(self, node: str | None) -> dict[str, EventStore]:
        stores = self.fleet.nodes()
        if node is None:
            return stores
        return {node: stores[node]} if node in stores else {}

    # --- TelemetrySource -------------------------------------------------------------

    async def info(self) -> SourceInfo:
        stats = self.fleet.stats()
        nodes: dict[str, int] = stats["events_by_node"]
        n = len(nodes)
        status, failing, ever, unsent = await self.fleet_health()
        detail = (
            f"serve --aggregate: {n} node{'' if n == 1 else 's'}, {stats['connected_agents']} sent in the last minute"
        )
        return SourceInfo(
            label=f"aggregator of {n} node{'' if n == 1 else 's'}",
            kind="embedded",
            generation="aggregator",
            healthy=status != "unhealthy",
            degraded=status != "healthy",
            detail=f"{failing}; {detail}" if failing else detail,
            events_seen=max(0, stats["total_events"] - self._held_at_start),
            stored_events=stats["total_events"],
            uptime_seconds=time.monotonic() - self._started,
            nodes=nodes,
            events_lost=ever,
            losses={"agent_unforwarded": ever} if ever else {},
            recent_losses={"agent_unforwarded": sum(unsent.values())} if unsent else {},
        )

    async def query(self, q: EventQuery) -> EventPage:
        return await asyncio.to_thread(self._query, q)

    def _reads(self, q: EventQuery, limit: int) -> tuple[dict[str, Any], list[tuple[EventStore, EventQuery]]]:
        """The page's positions (its ``cursor``: the fleet's insertion position now; of connections its
        ``resolved_cursor`` and ``updates``) and what to ask each node's store for ``q``: with ``q.after``, only the
        nodes that stored events after that position, each from where it stood then; else (or a position this run
        cannot answer for) every node, by time alone."""
        updates = self._updates(q)  # (first: the outcomes since, of the connects stored by the page's position)
        position, changed = self.fleet.changes(q.after)
        stores = self._stores(q.node)
        update: dict[str, Any] = {"cursor": position, **updates}
        if changed is None:
            return update, [(store, _plain(q, limit)) for store in stores.values()]
        return update, [(stores[node], _plain(q, limit, step)) for node, step in changed.items() if node in stores]

    def _updates(self, q: EventQuery) -> dict[str, Any]:
        """A page of connections' ``resolved_cursor``, and with ``q.after`` and ``q.resolved_after`` its
        ``updates``: the connects stored by ``q.after`` given their outcome after ``q.resolved_after``."""
        if q.kind != "connection":
            return {}
        if q.after is None or q.resolved_after is None:
            return {"resolved_cursor": self.fleet.resolved_position}
        _, changed = self.fleet.changes(q.after)  # (each node's store position then: None, all it holds)
        upto = None if changed is None else {node: step[0] for node, step in changed.items()}
        since = None if q.since is None else time_to_ns(q.since)
        until = None if q.until is None else time_to_ns(q.until)
        found, position = self.fleet.replaced_since(self._stores(q.node), q.kind, q.pid, q.command, since, until,
                                                    upto, q.resolved_after)  # fmt: skip
        updates: list[AnyEvent] = build_stored([body for _, _, body in found])
        if q.workload is not None:
            updates = filter_events(updates, q)[0]
        return {"resolved_cursor": position, "updates": updates}

    def _query(self, q: EventQuery) -> EventPage:
        if q.workload is None:  # each node's page as stored: only the events the merged page keeps are built
            update, reads = self._reads(q, q.limit)
            page = merge_stored([store.query_stored(nq) for store, nq in reads], q.limit)
            return page.model_copy(update=update)
        update, reads = self._reads(q, RAW_LIMIT)
        pages = []
        for store, nq in reads:
            raw = store.query(nq)
            events, total = filter_events(raw.events, q)
            pages.append(EventPage(events=events, total_count=total, truncated=total > len(events)))
        return merge_pages(pages, q.limit).model_copy(update=update)

    def query_stored(self, q: EventQuery) -> tuple[EventPage, list[tuple[int, int, Any]]]:
        """:meth:`query` (``q`` without a workload) with the page's events as the nodes' stores keep them
        (``EventStore.query_stored``): for a reader that writes them out as JSON without models."""
        if q.workload is not None:
            raise ValueError("a workload filter reads built events: use query")
        update, reads = self._reads(q, q.limit)
        page, items = merge_stored_items([store.query_stored(nq) for store, nq in reads], q.limit)
        return page.model_copy(update=update), items

    async def count(self, scope: Scope) -> int:
        return sum((await self.count_by_node(scope)).values())

    async def count_by_node(self, scope: Scope) -> dict[str, int]:
        """The scope's count on each node it covers (every node that has sent events, or its one)."""
        if scope.workload is not None:
            return {node: s.total for node, s in (await self.stats_by_node(scope, 1, 1)).items()}

        def read() -> dict[str, int]:
            now = utcnow()
            return {node: store.count(scope, now) for node, store in self._stores(scope.node).items()}

        return await asyncio.to_thread(read)

    async def stats_by_node(self, scope: Scope, top_n: int = 10, buckets: int = 60) -> dict[str, WindowStats]:
        return await asyncio.to_thread(self._stats_by_node, scope, top_n, buckets)

    def _stats_by_node(self, scope: Scope, top_n: int, buckets: int) -> dict[str, WindowStats]:
        now = utcnow()
        out = {}
        for node, store in self._stores(scope.node).items():
            if scope.workload is None:
                out[node] = store.stats(scope, top_n, buckets, now)
                continue
            since = now - timedelta(seconds=scope.window + 1)
            raw = store.query(EventQuery(kind=scope.kind, pid=scope.pid, command=scope.command, since=since,
                                         limit=RAW_LIMIT))  # fmt: skip
            if raw.truncated:
                log.warning("workload %r on node %s: figures from the newest %d events of the window only",
                            scope.workload, node, RAW_LIMIT)  # fmt: skip
            out[node] = aggregate(raw.events, scope, now, top_n, buckets)
        return out

    async def stats(self, scope: Scope, top_n: int = 10, buckets: int = 60) -> WindowStats:
        parts = await self.stats_by_node(scope, max(top_n, NODE_TOP_N), buckets)
        template = aggregate([], scope, utcnow(), top_n, buckets)
        tagged = [  # each process with the node it ran on (merged: the nodes a command ran on)
            part.model_copy(update={"processes": [p.model_copy(update={"nodes": [node]}) for p in part.processes]})
            for node, part in parts.items()
        ]
        return merge_stats(tagged, template, top_n)

    def on_change(self, listener: Callable[[], None]) -> Callable[[], None]:
        """``listener`` after each ingest batch that stored events (a
        :class:`~netspy_tui.telemetry.source.ChangingSource`: ``/api/changes``, the MCP server's notifications)."""
        return self.fleet.on_change(listener)

    def counted_since_open(self) -> dict[tuple[str, str, str], int]:
        """The fleet's exact counts since the nodes' stores opened, by (kind, command, outcome) (/metrics)."""
        out: dict[tuple[str, str, str], int] = {}
        for store in self.fleet.nodes().values():
            for key, n in store.counted_since_open().items():
                out[key] = out.get(key, 0) + n
        return out

    async def programs(self) -> list[ProgramInfo]:
        return []

    async def fleet_health(self) -> tuple[str, str, int, dict[str, int]]:
        """The fleet's status and why (its stores', then its agents' recent losses: the counts are short while
        agents cannot forward all they see, degraded), with :meth:`agent_losses`' figures."""
        status, detail = self.fleet.health()
        ever, unsent = await self.agent_losses()
        if unsent:
            status = "degraded" if status == "healthy" else status
            detail = "; ".join(filter(None, (detail, agent_losses_text(unsent, RECENT_LOSS_SECONDS))))
        return status, detail, ever, unsent

    async def agent_losses(self) -> tuple[int, dict[str, int]]:
        """The events the agents said they could not forward: all the stores keep, and by node those of the last
        :data:`RECENT_LOSS_SECONDS` (what makes the aggregator degraded)."""
        since = utcnow() - timedelta(seconds=RECENT_LOSS_SECONDS)
        figures = await asyncio.to_thread(self.fleet.agent_loss_figures, since)
        return sum(t for t, _ in figures.values()), {node: n for node, (_, n) in figures.items() if n}

    async def losses(self, window_seconds: int) -> dict[str, int]:
        """What the agents said they saw and could not forward in the window (shed under load, lost on their node:
        the fleet's counts lack them); events refused here are answered to the agent that sent them."""
        since = utcnow() - timedelta(seconds=window_seconds)
        n = sum((await asyncio.to_thread(self.fleet.agent_losses, since)).values())
        return {"agent_unforwarded": n} if n else {}

    async def aclose(self) -> None:
        return None


#: agents' losses this recent make the aggregator "degraded" (as an embedded source's own)
RECENT_LOSS_SECONDS = 60


def agent_losses_text(by_node: dict[str, int], seconds: int) -> str:
    """``3,949 events agents could not forward in the last 60 s (node-a 3,900, node-b 49)``."""
    total = sum(by_node.values())
    top = sorted(by_node.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    nodes = ", ".join(f"{clean(node, 60)} {k:,}" for node, k in top) + (", ..." if len(by_node) > 3 else "")
    return f"{total:,} events agents could not forward in the last {seconds} s ({nodes}): counts are short by them"
