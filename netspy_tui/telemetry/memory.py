"""A telemetry source over events held in memory (a bounded ring).

The product does not use it: live collection, ``--replay`` and ``--db`` history all run on
:class:`~netspy_tui.telemetry.embedded.EmbeddedSource` over the event store (runtime.open_source),
and nothing under netspy_tui/ imports this module. Its users are tests — the dashboard (with its AI
pane), serve, MCP and hardening suites run on it as a stand-in source — and
scripts/export_screenshots.py, through tests/tui/scenes.py. It is a reference implementation of
:class:`TelemetrySource` semantics: every figure comes from ``analysis.aggregate``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from netspy_tui.analysis.aggregate import AnyEvent, aggregate, filter_events, matches
from netspy_tui.models import (
    ConnectionEvent,
    EventPage,
    EventQuery,
    ProgramInfo,
    Scope,
    SourceInfo,
    WindowStats,
    page_token,
    time_to_ns,
    utcnow,
)


class MemorySource:
    #: its events are numbered in insertion order, as the store's are: a page's ``before`` token pages on (see
    #: :attr:`~netspy_tui.telemetry.embedded.EmbeddedSource.pages_by_token`)
    pages_by_token = True

    def __init__(
        self,
        events: Iterable[AnyEvent] = (),
        *,
        label: str = "events in memory",
        max_events: int = 1_000_000,
        clock: Callable[[], datetime] = utcnow,
        inbound: Iterable[ConnectionEvent] | None = None,
        started_at: datetime | None = None,
    ) -> None:
        self._accepted = None if inbound is None else list(inbound)
        """Connections local processes accepted (None: this source does not see them, as a remote server)."""
        self._events: deque[AnyEvent] = deque(events, maxlen=max_events)
        self._added = len(self._events)
        """Events ever added: the newest one's position in insertion order (``EventQuery.after``)."""
        self._lock = threading.Lock()
        self._listeners: dict[object, Callable[[], None]] = {}
        self._label = label
        self._clock = clock
        self.started_at = started_at
        """When it started observing (as this host's collector says it; None: not said, as a remote server)."""

    def add_events(self, events: Sequence[AnyEvent]) -> None:
        """A collector sink: append a batch (thread-safe)."""
        with self._lock:
            self._events.extend(events)
            self._added += len(events)
            listeners = list(self._listeners.values())
        for listener in listeners:
            listener()

    def on_change(self, listener: Callable[[], None]) -> Callable[[], None]:
        """``listener`` after each :meth:`add_events` (see :class:`~netspy_tui.telemetry.source.ChangingSource`)."""
        token = object()
        with self._lock:
            self._listeners[token] = listener

        def stop() -> None:
            with self._lock:
                self._listeners.pop(token, None)

        return stop

    def _snapshot(self) -> list[AnyEvent]:
        with self._lock:
            return list(self._events)

    async def info(self) -> SourceInfo:
        return SourceInfo(
            label=self._label,
            kind="embedded",
            generation="embedded",
            stored_events=len(self._events),
            events_seen=len(self._events),
        )

    async def query(self, q: EventQuery) -> EventPage:
        with self._lock:
            held, cursor = list(self._events), self._added
        first = cursor - len(held) + 1  # the i-th held event was added as number first + i
        if q.after is not None:
            skip = max(0, q.after - first + 1)
            held, first = held[skip:], first + skip
        # newest first, equal times by timestamp descending, then in insertion order: the store's order and keys
        keyed = [((-time_to_ns(e.time), -e.timestamp, n), e) for n, e in enumerate(held, first) if matches(e, q)]
        if q.before is not None:
            t_ns, ts, seq = q.before
            keyed = [(k, e) for k, e in keyed if k > (-t_ns, -ts, seq)]
        keyed.sort(key=lambda ke: ke[0])
        page, total = keyed[: q.limit], len(keyed)
        before = page_token(-page[-1][0][0], -page[-1][0][1], page[-1][0][2]) if page else None
        return EventPage(events=[e for _, e in page], total_count=total, truncated=total > len(page), cursor=cursor,
                         before=before)  # fmt: skip

    async def inbound(self, q: EventQuery) -> EventPage | None:
        """The accepted connections given, as ``list_connections(direction="inbound")`` pages them."""
        if self._accepted is None:
            return None
        events, total = filter_events(self._accepted, q)
        return EventPage(events=events, total_count=total, truncated=total > len(events))

    async def count(self, scope: Scope) -> int:
        return (await self.stats(scope, top_n=1, buckets=1)).total

    async def stats(self, scope: Scope, top_n: int = 10, buckets: int = 60) -> WindowStats:
        return aggregate(self._snapshot(), scope, self._clock(), top_n, buckets)

    async def losses(self, window_seconds: int) -> dict[str, int]:
        """Nothing to tell: events arrive here as they are (a remote server's losses show in info)."""
        return {}

    async def programs(self) -> list[ProgramInfo]:
        return []

    async def aclose(self) -> None:
        return None
