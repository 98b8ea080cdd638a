"""The fleet's figures from its nodes' figures: pure functions, no IO.

Totals, outcome/protocol/port mixes and rate buckets are sums of the nodes' (exact when each node
was asked for all its keys: :data:`NODE_TOP_N`); per-process rows are merged by command (pids
joined, attempts and failures summed, first/last seen the earliest/latest); a process's
``distinct_destinations`` is the largest of its nodes' (the union is not known from the parts:
a lower bound, said in the field's note where it is shown). Pages of events are merged newest
first.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from datetime import datetime
from itertools import islice
from typing import Any

from netspy_tui.models import Counted, EventPage, ProcessStat, WindowStats

__all__ = [
    "NODE_TOP_N",
    "merge_counted",
    "merge_pages",
    "merge_processes",
    "merge_stats",
    "merge_stored",
    "merge_stored_items",
]

#: how many keys to ask each node for, so that the fleet's top N is exact in all but extreme cases
NODE_TOP_N = 200


def merge_counted(parts: Sequence[Sequence[Counted]], top_n: int | None = None) -> list[Counted]:
    totals: dict[str, int] = {}
    for part in parts:
        for c in part:
            totals[c.key] = totals.get(c.key, 0) + c.count
    ranked = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
    return [Counted(key=k, count=n) for k, n in (ranked[:top_n] if top_n is not None else ranked)]


def _earliest(values: Sequence[datetime | None]) -> datetime | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _latest(values: Sequence[datetime | None]) -> datetime | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _shares(same: Sequence[ProcessStat]) -> list[ProcessStat]:
    """Each node's row of one command that ran on several nodes (each part one node's), by node; else none."""
    if len(same) < 2 or any(len(p.nodes) != 1 or p.by_node for p in same):
        return []
    return sorted(same, key=lambda p: p.nodes[0])


def merge_processes(parts: Sequence[Sequence[ProcessStat]]) -> list[ProcessStat]:
    rows: dict[str, list[ProcessStat]] = {}
    for part in parts:
        for p in part:
            rows.setdefault(p.command, []).append(p)
    merged = []
    for command, same in rows.items():
        pids = sorted({pid for p in same for pid in p.pids})
        merged.append(ProcessStat(
            command=command,
            pids=pids,
            attempts=sum(p.attempts for p in same),
            distinct_destinations=max(p.distinct_destinations for p in same),
            failures=sum(p.failures for p in same),
            first_seen=min(p.first_seen for p in same),
            last_seen=max(p.last_seen for p in same),
            workloads=list(dict.fromkeys(w for p in same for w in p.workloads)),
            nodes=sorted({n for p in same for n in p.nodes}),
            by_node=_shares(same),
        ))  # fmt: skip
    merged.sort(key=lambda p: (-p.attempts, p.command))
    return merged


def merge_stats(parts: Sequence[WindowStats], template: WindowStats, top_n: int) -> WindowStats:
    """The fleet's :class:`WindowStats` from its nodes' (``template``: the empty stats of the same
    scope and window, used when no node has any)."""
    if not parts:
        return template
    width = max(len(p.rate_buckets) for p in parts)
    buckets = [0] * width
    for p in parts:
        offset = width - len(p.rate_buckets)  # aligned on the newest bucket
        for i, n in enumerate(p.rate_buckets):
            buckets[offset + i] += n
    return template.model_copy(update={
        "total": sum(p.total for p in parts),
        "first_seen": _earliest([p.first_seen for p in parts]),
        "last_seen": _latest([p.last_seen for p in parts]),
        "top_destinations": merge_counted([p.top_destinations for p in parts], top_n),
        "protocols": merge_counted([p.protocols for p in parts]),
        "ports": merge_counted([p.ports for p in parts], top_n),
        "outcomes": merge_counted([p.outcomes for p in parts]),
        "processes": merge_processes([p.processes for p in parts]),
        "bucket_seconds": max(p.bucket_seconds for p in parts),
        "rate_buckets": buckets,
        "until": _latest([p.until for p in parts]),
        "not_events": sum(p.not_events for p in parts),
    })  # fmt: skip


def merge_pages(pages: Sequence[EventPage], limit: int) -> EventPage:
    """The newest ``limit`` events of all pages (each newest first), and the totals summed."""
    events = sorted((e for p in pages for e in p.events), key=lambda e: (e.time, e.timestamp), reverse=True)
    return _merged(pages, events[:limit], len(events), limit)


def merge_stored(parts: Sequence[tuple[EventPage, Sequence[tuple[int, int, Any]]]], limit: int) -> EventPage:
    """:func:`merge_pages` of pages as ``EventStore.query_stored`` gives them (each page's events as
    ``(t ns, timestamp, event or its stored JSON)``, newest first): the same page, with only the
    events it keeps built."""
    from netspy_tui.store.sqlite import build_stored  # noqa: PLC0415 (the store, numpy: not for a client's merges)

    page, items = merge_stored_items(parts, limit)
    return page.model_copy(update={"events": build_stored([item for _, _, item in items])})


def merge_stored_items(
    parts: Sequence[tuple[EventPage, Sequence[tuple[int, int, Any]]]], limit: int
) -> tuple[EventPage, list[tuple[int, int, Any]]]:
    """:func:`merge_stored` without building: the merged page without its events, and them as stored."""
    found = sum(len(items) for _, items in parts)
    # each page newest first: merged, the newest ``limit`` taken (ties as merge_pages leaves them: in page order, then
    # in each page's), not every item keyed and sorted (an aggregator's poll merges three nodes' 1,000 for 1,000)
    merged = heapq.merge(*(items for _, items in parts), key=_newest_first)
    kept = list(islice(merged, max(0, limit)))
    return _merged([page for page, _ in parts], [], found, limit), kept


def _newest_first(item: tuple[int, int, Any]) -> tuple[int, int]:
    return -item[0], -item[1]


def _merged(pages: Sequence[EventPage], events: list[Any], found: int, limit: int) -> EventPage:
    total = sum(p.total_count for p in pages)
    not_kept = sum(p.not_kept for p in pages)
    return EventPage(events=events, total_count=total, truncated=total > min(limit, found),
                     not_kept=not_kept,
                     not_kept_since=_earliest([p.not_kept_since for p in pages]) if not_kept else None,
                     not_kept_until=_latest([p.not_kept_until for p in pages]) if not_kept else None,
                     not_events=sum(p.not_events for p in pages))  # fmt: skip
