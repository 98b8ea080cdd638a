"""The tools' ``node`` and ``workload`` filters, on any source.

A source narrows a :class:`~netspy_tui.models.Scope` by node and workload itself where its events
say them (an aggregator's per-node stores, an eBPF server's ``k8s_node_name``, events with a
``workload``). This host's own collector stores neither: every event is this node's, and a
process's workload is read from its cgroup. So here:

- ``node`` is checked against the nodes the source has (an aggregator's, this host's own name, or the
  name a netspy-tui ``serve`` says is its own); an unknown node is an error naming the known ones. On one
  host the filter is then dropped (it keeps everything) — on an aggregator it is passed down.
- ``workload`` on this host's live collector becomes the pids that run in it (of the processes in
  the window), and the figures are the sums of those pids' exact ones (:class:`PidsView`). A remote
  one-host server's events do not say their workload: the filter is refused there (its own ``/mcp`` has it).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any, TypeVar, cast

from mcp.server.mcpserver.exceptions import ToolError

from netspy_tui.fleet.merge import NODE_TOP_N, merge_pages, merge_stats
from netspy_tui.models import EventPage, EventQuery, Scope, SourceInfo, WindowStats
from netspy_tui.names.workload import host_node
from netspy_tui.telemetry.source import TelemetrySource
from netspy_tui.textsafe import clean

__all__ = [
    "PidsView",
    "host_node",
    "known_nodes",
    "one_info",
    "source_info",
    "source_label",
    "source_losses",
    "source_started",
]

T = TypeVar("T")

#: most pids a workload filter fans out to
MAX_PIDS = 200

#: inside :func:`one_info`: (source id, what was asked) -> (the source, its answer)
_ASKED: ContextVar[dict[tuple[int, Any], tuple[TelemetrySource, Any]] | None] = ContextVar("netspy_asked", default=None)


@contextmanager
def one_info() -> Iterator[None]:
    """Inside: :func:`source_info` asks each source once (``dashboard_snapshot``'s parts each read the source's
    info: its label, health and counts; on this host's store a thread hop and two queries, four times a refresh),
    and :func:`source_losses` each source once per window (the connection and drop patterns and the process ranking
    each carry the window's losses: over HTTP three ``/api/losses`` requests a refresh, the same answer)."""
    token = _ASKED.set({})
    try:
        yield
    finally:
        _ASKED.reset(token)


async def _once(source: TelemetrySource, what: Any, ask: Callable[[], Awaitable[T]]) -> T:
    """``ask()``; inside :func:`one_info`, the first answer for this source and ``what``."""
    memo = _ASKED.get()
    if memo is None:
        return await ask()
    kept = memo.get((id(source), what))
    if kept is None or kept[0] is not source:
        kept = memo[(id(source), what)] = (source, await ask())
    return cast(T, kept[1])


async def source_info(source: TelemetrySource) -> SourceInfo:
    """``source.info()``; inside :func:`one_info`, the first answer for this source."""
    return await _once(source, "info", source.info)


async def source_losses(source: TelemetrySource, window: int) -> dict[str, int]:
    """``source.losses(window)``; inside :func:`one_info`, the first answer for this source and window (a copy)."""
    return dict(await _once(source, ("losses", window), lambda: source.losses(window)))


async def source_label(source: TelemetrySource) -> str:
    """``source_info(source).label``: the source's own ``source_label`` where it has one (this host's store: no
    thread hop and two queries for a name), else its info's."""
    label = getattr(source, "source_label", None)
    return label if isinstance(label, str) else (await source_info(source)).label


def source_started(source: TelemetrySource) -> datetime | None:
    """When ``source`` started observing, where it says so without a round trip (this host's collector or store,
    an aggregator: their ``started_at``); None when it cannot tell (a remote server)."""
    started = getattr(source, "started_at", None)
    return started if isinstance(started, datetime) else None


async def known_nodes(source: TelemetrySource) -> list[str] | None:
    """The nodes ``source`` has events of: an aggregator's (sorted), this host's for the embedded
    collector, a netspy-tui ``serve``'s own (its ``/health`` says it), None when another remote server
    cannot say (its events carry their node, or none)."""
    method = getattr(source, "known_nodes", None)
    if callable(method):
        return list(method())
    stats_of = getattr(source, "aggregator_stats", None)
    info = await source_info(source)
    if info.generation == "aggregator" and callable(stats_of):
        stats = await stats_of()
        return sorted(stats.events_by_node) if stats is not None else []
    if info.kind == "embedded":
        return [host_node()]
    if info.node is not None and info.generation != "aggregator":
        return [info.node]
    return None


async def check_node(source: TelemetrySource, node: str | None) -> bool:
    """True when ``node`` must be passed down to the source (it keeps events of several nodes);
    False when there is no filter or the source is that one node. ToolError for an unknown node."""
    if node is None:
        return False
    nodes = await known_nodes(source)
    if nodes is None:
        return True
    if node not in nodes:
        shown = ", ".join(clean(n, 60) for n in nodes[:20]) + (", …" if len(nodes) > 20 else "")
        raise ToolError(f"node '{clean(node, 60)}' is not a node of this source (its nodes: {shown or 'none yet'}); "
                        "pass one of those, or leave node out for all.")  # fmt: skip
    info = await source_info(source)
    return info.generation == "aggregator" or len(nodes) > 1


class PidsView:
    """``source``'s figures for a set of pids (a workload's): each pid's exact figures, summed."""

    def __init__(self, source: TelemetrySource, pids: Sequence[int]) -> None:
        self.source = source
        self.pids = list(pids)[:MAX_PIDS]

    def __getattr__(self, name: str) -> Any:  # info, losses, programs, traffic ... as the source's
        return getattr(self.source, name)

    def _scopes(self, scope: Scope) -> list[Scope]:
        pids = [p for p in self.pids if scope.pid is None or p == scope.pid]
        return [dataclasses.replace(scope, pid=p, workload=None) for p in pids]

    async def count(self, scope: Scope) -> int:
        return sum(await asyncio.gather(*(self.source.count(s) for s in self._scopes(scope))))

    async def stats(self, scope: Scope, top_n: int = 10, buckets: int = 60) -> WindowStats:
        template = await self.source.stats(dataclasses.replace(scope, pid=0, workload=None), top_n, buckets)
        empty = template.model_copy(update={"pid": scope.pid, "total": 0})
        parts = [await self.source.stats(s, max(top_n, NODE_TOP_N), buckets) for s in self._scopes(scope)]
        return merge_stats(parts, empty, top_n)

    async def query(self, q: EventQuery) -> EventPage:
        pids = [p for p in self.pids if q.pid is None or p == q.pid]
        pages = [await self.source.query(dataclasses.replace(q, pid=p, workload=None)) for p in pids]
        return merge_pages(pages, q.limit)

    async def inbound(self, q: EventQuery) -> EventPage | None:
        reader = getattr(self.source, "inbound", None)
        if reader is None:
            return None
        pids = [p for p in self.pids if q.pid is None or p == q.pid]
        pages = [await reader(dataclasses.replace(q, pid=p, workload=None)) for p in pids]
        if any(page is None for page in pages):
            return None
        return merge_pages([page for page in pages if page is not None], q.limit)
