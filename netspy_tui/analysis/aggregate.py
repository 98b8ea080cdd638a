"""Filtering and aggregation of events in Python.

Used where the data arrives as events (an eBPF server over HTTP). The store computes the same
:class:`WindowStats` from its rollups (:mod:`netspy_tui.store.rollups`); tests hold the two to
the same answers, so these functions are also the executable definition of every figure the tools
report.

A window is whole seconds: "the last W seconds" at ``now`` are the wall-clock seconds ``s`` with
``floor(now) - W < s <= floor(now)`` (:func:`window_seconds`); an event is in it when the second
it happened in is. Rate buckets are ``bucket_seconds`` whole seconds each, the last one ending
with ``now``'s second.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime

from netspy_tui.models import (
    FAILED_OUTCOMES,
    ConnectionEvent,
    Counted,
    EventQuery,
    PacketDropEvent,
    ProcessStat,
    Scope,
    WindowStats,
    time_to_ns,
)

AnyEvent = ConnectionEvent | PacketDropEvent

#: At most this many rows in ``WindowStats.processes``.
PROCESS_LIMIT = 200


def in_scope(event: AnyEvent, scope: Scope | EventQuery) -> bool:
    """True when ``event`` is of the kind, process, node and workload ``scope`` names (its window or
    times aside)."""
    if event.type != scope.kind:
        return False
    if scope.pid is not None and event.pid != scope.pid:
        return False
    if scope.node is not None and event.k8s_node_name != scope.node:
        return False
    if scope.workload is not None and getattr(event, "workload", None) != scope.workload:
        return False
    return scope.command is None or event.command == scope.command


def matches(event: AnyEvent, q: EventQuery) -> bool:
    """True when ``event`` passes every filter of ``q`` (limit aside)."""
    if not in_scope(event, q):
        return False
    if q.since is not None and event.time <= q.since:
        return False
    return not (q.until is not None and event.time > q.until)


def filter_events(events: Iterable[AnyEvent], q: EventQuery) -> tuple[list[AnyEvent], int]:
    """Matching events newest first (at most ``q.limit``) and the total number that matched."""
    hits = [e for e in events if matches(e, q)]
    hits.sort(key=lambda e: (e.time, e.timestamp), reverse=True)
    return hits[: q.limit], len(hits)


def destination_key(event: AnyEvent) -> str:
    return event.destination or "unknown"


def outcome_key(event: AnyEvent) -> str:
    if isinstance(event, ConnectionEvent):
        return event.effective_outcome
    return event.drop_reason or "UNKNOWN"


def protocol_key(event: AnyEvent) -> str:
    return event.protocol or "unknown"


def is_failure(event: AnyEvent) -> bool:
    """Connections: a failed outcome. Packet drops: every drop counts."""
    if isinstance(event, ConnectionEvent):
        return event.effective_outcome in FAILED_OUTCOMES
    return True


def _top(counter: Counter[str], n: int) -> list[Counted]:
    items = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    return [Counted(key=k, count=c) for k, c in items[:n]]


def second_of(value: datetime) -> int:
    """The wall-clock second (since the epoch) a time falls in."""
    return time_to_ns(value) // 1_000_000_000


def window_seconds(now: datetime, window: int) -> tuple[int, int]:
    """(first, last) wall-clock second of the last ``window`` seconds at ``now``."""
    hi = second_of(now)
    return hi - max(1, window) + 1, hi


def observed_seconds(window: int, until: datetime, first: datetime | None, started: datetime | None) -> int:
    """The whole seconds of the last ``window`` at ``until`` that the source observed: what a rate is averaged
    over. From when the source ``started`` observing (None: it does not say; a remote server is taken to have
    observed the whole window), or from the ``first`` event of the window when that is earlier (a recording
    replayed, a store reopened: data older than the source), to the window's last second; never before the
    window's first. A steady rate averaged over the whole window instead was diluted by time before the data."""
    lo, hi = window_seconds(until, window)
    if started is None:
        return hi - lo + 1
    begin = second_of(started) if first is None else min(second_of(started), second_of(first))
    return hi - min(hi, max(lo, begin)) + 1


def bucket_layout(window_seconds: int, buckets: int) -> tuple[int, int]:
    """(bucket_seconds, bucket_count) covering the window with at most ``buckets`` buckets."""
    buckets = max(1, buckets)
    size = max(1, math.ceil(window_seconds / buckets))
    return size, max(1, math.ceil(window_seconds / size))


def aggregate(
    events: Sequence[AnyEvent],
    scope: Scope,
    now: datetime,
    top_n: int = 10,
    buckets: int = 60,
) -> WindowStats:
    """Aggregate the ``events`` in ``scope``: its kind and process, in the last ``scope.window``
    whole seconds at ``now`` (see the module docstring)."""
    kind, pid, command, window = scope.kind, scope.pid, scope.command, scope.window
    lo, hi = window_seconds(now, window)
    hits = [e for e in events if in_scope(e, scope) and lo <= second_of(e.time) <= hi]
    size, count = bucket_layout(window, buckets)
    rate = [0] * count
    dests: Counter[str] = Counter()
    protos: Counter[str] = Counter()
    ports: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    per_proc: dict[str, list[AnyEvent]] = defaultdict(list)
    for e in hits:
        dests[destination_key(e)] += 1
        protos[protocol_key(e)] += 1
        if isinstance(e, ConnectionEvent):
            ports[str(e.destination_port)] += 1
        outcomes[outcome_key(e)] += 1
        per_proc[e.command].append(e)
        rate[count - 1 - (hi - second_of(e.time)) // size] += 1
    processes = [
        ProcessStat(
            command=cmd,
            pids=sorted({e.pid for e in evs}),
            attempts=len(evs),
            distinct_destinations=len({e.destination for e in evs if e.destination}),
            failures=sum(1 for e in evs if is_failure(e)),
            first_seen=min(e.time for e in evs),
            last_seen=max(e.time for e in evs),
            nodes=sorted({e.k8s_node_name for e in evs if e.k8s_node_name}),
        )
        for cmd, evs in per_proc.items()
    ]
    processes.sort(key=lambda p: (-p.attempts, p.command))
    return WindowStats(
        kind=kind,
        window_seconds=window,
        pid=pid,
        command=command,
        total=len(hits),
        first_seen=min((e.time for e in hits), default=None),
        last_seen=max((e.time for e in hits), default=None),
        top_destinations=_top(dests, top_n),
        protocols=_top(protos, top_n),
        ports=_top(ports, top_n),
        outcomes=_top(outcomes, top_n),
        processes=processes[:PROCESS_LIMIT],
        bucket_seconds=size,
        rate_buckets=rate,
        until=now,
    )
