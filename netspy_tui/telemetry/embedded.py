"""The embedded telemetry source: an in-process collector writing to the SQLite event store.

:class:`EmbeddedSource` is a :class:`~netspy_tui.telemetry.source.TelemetrySource` whose queries
run in the store (on a worker thread, so the event loop never blocks) while the collector's own
thread keeps writing to it. What the store refuses (disk full, malformed events) is counted as
lost, never raised into the collector.

:func:`open_embedded` (collector chosen from the settings, ``auto`` falling back from eBPF to
procfs sampling) and :func:`open_history` (a store file read back, no collector) are what
``netspy_tui.runtime`` opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netspy_tui import safefs
from netspy_tui.collector.auto import CollectorKind, start_collector
from netspy_tui.collector.base import Batch, Collector, Sink
from netspy_tui.collector.replay import Recorder
from netspy_tui.errors import NetspyError, NoData
from netspy_tui.models import (
    ConnectionEvent,
    EventPage,
    EventQuery,
    LatencyStats,
    PacketDropEvent,
    ProgramInfo,
    Scope,
    SourceInfo,
    TrafficStats,
    WindowStats,
    describe_losses,
    ns_to_time,
    utcnow,
)
from netspy_tui.store.sqlite import FOLLOWED, FOLLOWED_SINCE, EventStore, StoreError, window_seconds_of

if TYPE_CHECKING:
    from netspy_tui.config import Settings

logger = logging.getLogger(__name__)

#: At most one warning per this many seconds about events the store refused.
_WARN_EVERY = 30.0
#: Losses this recent make the source "degraded".
RECENT_LOSS_SECONDS = 60
#: ``serve --forward`` failing for this many post intervals (30 s at the default 2 s), at most
#: :data:`FORWARD_STALL_MAX_SECONDS`, since its last accepted batch (or its start) makes the source "degraded".
FORWARD_STALL_INTERVALS = 15
FORWARD_STALL_MAX_SECONDS = 60.0


def forwarding_problem(status: Mapping[str, Any], running_seconds: float | None) -> str:
    """What is wrong with ``serve --forward`` (its :class:`~netspy_tui.serve.forward.ForwardStatus` as a dict), in
    one line, when its batches have been failing for a while: the aggregator down, or refusing every batch (a
    421 for a Host it does not answer, a 401 for a wrong token), while the events wait in the store; "" else."""
    error = str(status.get("last_error") or "")
    # (cleared by each accepted batch; an accepted batch the aggregator refused events of says so, and is no failure)
    if not error or error.startswith(("the aggregator rejected", "HTTP 413: batches of")):
        return ""
    interval = status.get("interval")
    interval = float(interval) if isinstance(interval, int | float) and interval > 0 else 2.0
    limit = min(FORWARD_STALL_MAX_SECONDS, FORWARD_STALL_INTERVALS * interval)
    last = status.get("last_success")
    try:
        since = (utcnow() - datetime.fromisoformat(last)).total_seconds() if last else running_seconds
    except (TypeError, ValueError):
        since = running_seconds
    if since is None or since < limit:
        return ""
    failures, waiting = status.get("failures", 0), status.get("waiting", 0)
    when = "its last accepted batch" if last else "it started"
    return (f"forwarding to {status.get('url')} has failed since {when} {int(since)} s ago ({failures:,} failed "
            f"batches, {waiting:,} events waiting in the store): {error}")  # fmt: skip


class StoreSink:
    """The collector sink: ``store.add_events``, counting (not raising) what the store refuses."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.lost = 0
        self.errors = 0
        self.last_error = ""
        self.last_error_at: float | None = None
        self._warned_at = -_WARN_EVERY

    def ingest(self, batch: Batch) -> None:
        """eBPF batches: queued for the store's writer thread (it sheds raw events, never counts)."""
        try:
            self.store.ingest(batch)
        except Exception as exc:  # the store is closing: what it could not take is lost, and counted
            n = len(batch.records) if batch.records is not None else 0
            self._failed(n, f"{type(exc).__name__}: {exc}")

    def __call__(self, events: Sequence[ConnectionEvent | PacketDropEvent]) -> None:
        try:
            self.store.add_events(events)
        except StoreError as exc:  # (kept: their counts go with the next write; the store counts the raw loss)
            self._failed(0 if exc.kept else exc.lost, str(exc))
        except Exception as exc:  # never let a store bug stop the collector thread
            self._failed(len(events), f"{type(exc).__name__}: {exc}")
            logger.debug("storing events failed", exc_info=True)

    def _failed(self, lost: int, message: str) -> None:
        self.lost += lost
        self.errors += 1
        self.last_error = message
        now = time.monotonic()
        self.last_error_at = now
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            so_far = f" ({self.lost:,} events lost so far)" if self.lost else ""  # (none: a failed write keeps counts)
            logger.warning("event store: %s%s", message, so_far)


class EmbeddedSource:
    """Telemetry from an in-process ``collector`` kept in ``store``.

    ``reason`` says why this collector was chosen; ``record`` also writes every event to a
    JSON-lines file. ``collector`` None makes a read-only view of the history in ``store``.
    """

    #: its store numbers its events: a page's :attr:`~netspy_tui.models.EventPage.before` token, given back as
    #: :attr:`~netspy_tui.models.EventQuery.before`, pages on inside a run of equal times (a source without this
    #: attribute has no such token: the tools refuse ``before`` for it)
    pages_by_token = True

    def __init__(
        self,
        collector: Collector | None,
        store: EventStore,
        *,
        reason: str = "",
        record: str | Path | None = None,
        record_log_failure: bool = True,
    ) -> None:
        self.collector = collector
        self.store = store
        self.reason = reason
        self.store_sink = StoreSink(store)
        self.recorder = (
            Recorder(self.store_sink, record, log_failure=record_log_failure) if record is not None else None
        )
        self._started_at: float | None = None
        self._closed = False
        self.forwarding: Callable[[], dict[str, Any]] | None = None
        """``serve --forward``'s status, when it forwards this source's events."""

    @property
    def sink(self) -> Sink:
        """What the collector feeds: the recorder (when recording), then the store."""
        return self.recorder if self.recorder is not None else self.store_sink

    def on_change(self, listener: Callable[[], None]) -> Callable[[], None]:
        """New events or counts in the store (see :class:`~netspy_tui.telemetry.source.ChangingSource`)."""
        return self.store.on_change(listener)

    async def start(self) -> None:
        """Start the collector on its own thread, feeding the store."""
        if self._started_at is not None:
            return
        if self.collector is not None:
            await asyncio.to_thread(self._settle_previous_run)
            await asyncio.to_thread(self.collector.start, self.sink)
            await asyncio.to_thread(self._note_follower, self.collector)
        self._started_at = time.monotonic()

    def _settle_previous_run(self) -> None:
        """Before the collector starts: the connects a previous run left in progress in the store are settled
        (outcome unknown, counted as a loss; see :meth:`EventStore.settle_in_progress`): none of this run's is
        stored yet, and no one will report theirs. A store that cannot be written says so when it is written."""
        try:
            self.store.settle_in_progress()
            if self.store.path is not None:  # (this run's rows start now: the next run settles only those)
                self.store.set_meta(FOLLOWED_SINCE, str(int(time.time())))
        except (NetspyError, sqlite3.Error) as exc:
            logger.warning("event store %s: connects left in progress not settled: %s", self.store.location, exc)

    def _note_follower(self, collector: Collector) -> None:
        """Whether this run's collector follows connects to their outcome (the next run settles what it leaves)."""
        try:
            self.store.set_meta(FOLLOWED, "1" if collector.name == "ebpf" else "0")
        except (NetspyError, sqlite3.Error) as exc:
            logger.warning("event store %s: %s", self.store.location, exc)

    @classmethod
    async def launch(
        cls,
        kind: CollectorKind,
        store: EventStore,
        *,
        record: str | Path | None = None,
        record_log_failure: bool = True,
        replay_path: str | Path | None = None,
        replay_speed: float = 1.0,
        replay_times: str = "now",
        procfs_interval: float = 1.0,
        raw_rate: int | None = None,
    ) -> EmbeddedSource:
        """Choose and start a collector of ``kind`` (``auto``: eBPF, else procfs) feeding ``store``."""
        source = cls(None, store, record=record, record_log_failure=record_log_failure)
        await asyncio.to_thread(source._settle_previous_run)
        try:
            collector, reason = await asyncio.to_thread(
                start_collector,
                kind,
                source.sink,
                replay_path=replay_path,
                replay_speed=replay_speed,
                replay_times=replay_times,
                procfs_interval=procfs_interval,
                raw_rate=raw_rate,
            )
        except BaseException:
            if source.recorder is not None:
                source.recorder.close()
            raise
        source.collector = collector
        await asyncio.to_thread(source._note_follower, collector)
        source.reason = reason
        source._started_at = time.monotonic()
        logger.info("embedded collector: %s", reason)
        return source

    # --- TelemetrySource -------------------------------------------------------------

    async def info(self) -> SourceInfo:
        collector = self.collector
        problems: list[str] = []
        stored: int | None = None
        recent: dict[str, int] = {}
        healthy = not self._closed
        try:
            stored, recent = await asyncio.to_thread(self._stored_and_recent)  # (one thread hop: a list asks too)
        except NetspyError as exc:
            healthy = False
            problems.append(str(exc))
        seen = 0
        losses: dict[str, int] = {}
        if collector is not None:
            seen = collector.events_made  # (made, each once: not the raw records kept, fewer under load)
            losses.update({k: v for k, v in collector.stats.losses.items() if v})
            # a collector that only keeps the overall figure (records it could not deliver)
            named = sum(losses.get(k, 0) for k in ("ring_full", "sink_rejected", "bad_records"))
            unnamed = collector.stats.lost - named
            if unnamed > 0:
                losses["ring_full"] = losses.get("ring_full", 0) + unnamed
            if self._started_at is None or not collector.running:
                healthy = False
                problems.append("the collector is not running")
            if collector.stats.last_error:
                problems.append(f"collector: {collector.stats.last_error}")
        # what the store saw (shed, store errors) and what the collector delivered with its batches
        for cause, n in self.store.totals.items():
            if cause != "raw" and n:
                losses[cause] = max(losses.get(cause, 0), n)
        sink = self.store_sink
        if sink.lost:  # (the same events the store counted when it refused them, or more)
            losses["store_error"] = max(losses.get("store_error", 0), sink.lost)
        writer = self.store._writer_thread
        errors_at = [t for t in (sink.last_error_at, writer.last_error_at if writer else None) if t is not None]
        last_error = sink.last_error or (writer.last_error if writer else "")
        failing = self.store.last_write_error
        if failing is not None:  # (the last write failed: nothing can be stored right now)
            healthy = False
            problems.append(f"store: {failing}")
            connects, drops = self.store.unwritten_events()
            if connects or drops:
                problems.append(f"the counts of {connects:,} connects and {drops:,} drops are held in memory until "
                                "the store takes them (lost if it does not before exit)")  # fmt: skip
        elif last_error and (failed_at := max(errors_at, default=-float("inf"))) > self.store.written_at:
            # (not once a write succeeded since: the store takes writes again)
            problems.append(f"store: {last_error}")
            if time.monotonic() - failed_at < RECENT_LOSS_SECONDS:
                if losses.get("store_error"):
                    recent["store_error"] = max(recent.get("store_error", 0), losses["store_error"])
                healthy = False  # nothing can be stored right now
        if self.recorder is not None and self.recorder.error is not None:
            problems.append(str(self.recorder.error))
        if recent:
            problems.append(describe_losses(recent, f"in the last {RECENT_LOSS_SECONDS} s"))
        running = None if self._started_at is None else time.monotonic() - self._started_at
        forwarding = dict(self.forwarding()) if self.forwarding is not None else None
        if forwarding is not None:
            stalled = forwarding_problem(forwarding, running)
            if stalled:
                forwarding["problem"] = stalled  # (/health's detail says it)
                problems.append(stalled)
        # (unhealthy: why first, the collector's reason after: a header shows the start)
        detail = "; ".join(
            problems if not self.reason else [self.reason, *problems] if healthy else [*problems, self.reason]
        )
        return SourceInfo(
            label=self.source_label,
            kind="embedded",
            generation="embedded",
            healthy=healthy,
            degraded=bool(recent) or bool(forwarding and forwarding.get("problem")),
            detail=" ".join(detail.split()),
            collector=collector.name if collector is not None else None,
            sampled=collector.sampled if collector is not None else False,
            events_seen=seen,
            events_lost=sum(losses.values()),
            losses=losses,
            recent_losses=recent,
            stored_events=stored,
            uptime_seconds=running,
            forwarding=forwarding,
            recording=self.recorder.status if self.recorder is not None else None,
            notes=list(getattr(collector, "notes", None) or []),
        )

    @property
    def started_at(self) -> datetime | None:
        """When it started observing (wall clock; None: not started): rates are averaged from then, or from the
        first event of a window when the store holds older ones (a recording replayed, a ``--db`` reopened)."""
        if self._started_at is None:
            return None
        return utcnow() - timedelta(seconds=time.monotonic() - self._started_at)

    @property
    def source_label(self) -> str:
        """:meth:`info`'s label, read without the thread hop :meth:`info` takes (a summary tool names its source
        and needs nothing else of the info: see :func:`netspy_tui.mcp_tools.narrow.source_label`)."""
        collector = self.collector
        return f"{collector.label} (embedded)" if collector is not None else f"history in {self.store.location}"

    def _stored_and_recent(self) -> tuple[int, dict[str, int]]:
        return self.store.row_count(), self.store.losses(utcnow() - timedelta(seconds=RECENT_LOSS_SECONDS))

    async def query(self, q: EventQuery) -> EventPage:
        return await asyncio.to_thread(self.store.query, q)

    async def count(self, scope: Scope) -> int:
        return await asyncio.to_thread(self.store.count, scope)

    async def stats(self, scope: Scope, top_n: int = 10, buckets: int = 60) -> WindowStats:
        return await asyncio.to_thread(self.store.stats, scope, top_n, buckets)

    async def traffic(self, pid: int | None, command: str | None, window_seconds: int, limit: int = 20
                      ) -> TrafficStats:  # fmt: skip
        """From the store; ``available`` False when a running collector does not count bytes."""
        collector = self.collector
        if collector is not None and not getattr(collector, "counts_traffic", False):
            # (a replay's own reason: "needs eBPF, Linux 6.3+" blamed the kernel for a recording's)
            why = "a recording holds no byte counts (replay)" if collector.name == "replay" else ""
            return TrafficStats(window_seconds=window_seconds, pid=pid, command=command, until=utcnow(),
                                available=False, unavailable_reason=why)  # fmt: skip
        stats = await asyncio.to_thread(self.store.traffic, pid, command, window_seconds, limit)
        return stats.model_copy(update={"sampled": True}) if collector is not None and collector.sampled else stats

    async def inbound(self, q: EventQuery) -> EventPage | None:
        """Accepted connections from the store's traffic rows; None when a running collector does not count
        them (the replay of a recording)."""
        collector = self.collector
        if collector is not None and not getattr(collector, "counts_traffic", False):
            return None
        return await asyncio.to_thread(self.store.inbound, q)

    async def connect_latency(self, pid: int | None, command: str | None, window_seconds: int, limit: int = 20
                              ) -> LatencyStats:  # fmt: skip
        """From the store; ``available`` False when a running collector does not measure connects."""
        collector = self.collector
        if collector is not None and collector.name != "ebpf":
            why = "a recording holds no connect timings (replay)" if collector.name == "replay" else ""
            return LatencyStats(window_seconds=window_seconds, pid=pid, command=command, until=utcnow(),
                                available=False, unavailable_reason=why)  # fmt: skip
        return await asyncio.to_thread(self.store.connect_latency, pid, command, window_seconds, limit)

    async def losses(self, window_seconds: int) -> dict[str, int]:
        lo, _ = window_seconds_of(utcnow(), window_seconds)
        return await asyncio.to_thread(self.store.losses, ns_to_time(lo * 1_000_000_000))

    def counted_since_open(self) -> dict[tuple[str, str, str], int]:
        """Exact counts since the store opened, by (kind, command, outcome) (``serve``'s /metrics)."""
        return self.store.counted_since_open()

    async def programs(self) -> list[ProgramInfo]:
        if self.collector is None:
            return []
        return [
            ProgramInfo(name=name, type=kind, status=status, id=prog_id)
            for name, kind, status, prog_id in self.collector.programs()
        ]

    async def aclose(self) -> None:
        """Stop the collector, then close the recording and the store (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.collector is not None:
                await asyncio.to_thread(self.collector.stop)
        finally:
            if self.recorder is not None:
                self.recorder.close()
            await asyncio.to_thread(self.store.close)


@asynccontextmanager
async def _scratch_db() -> AsyncIterator[Path]:
    """A private SQLite file for a session without ``--db``, removed (with its directory) on exit.

    A file rather than ``:memory:``: with a million events the in-memory database held ~880 MB
    resident against ~124 MB for a file (bench/README.md), and the page cache can give it back.
    It lives in a fresh 0700 directory (no other user can plant a link at its name or its
    ``-wal``/``-shm``), created 0600.
    """
    directory = await asyncio.to_thread(safefs.scratch_dir)
    try:
        yield directory / "events.sqlite3"
    finally:
        await asyncio.to_thread(safefs.remove_tree, directory)


@asynccontextmanager
async def open_embedded(settings: Settings, *, oneshot: bool = False) -> AsyncIterator[EmbeddedSource]:
    """The collector the settings ask for (``auto``: eBPF, else procfs), its store, closed on exit.

    Without ``--db`` the store is a scratch file in a private directory, deleted on exit (the CLI
    turns SIGTERM and SIGHUP into the same exit: netspy_tui.signals).
    """
    async with contextlib.AsyncExitStack() as stack:
        db = settings.db if settings.db is not None else await stack.enter_async_context(_scratch_db())
        yield await stack.enter_async_context(_open_embedded(settings, db, oneshot))


@asynccontextmanager
async def _open_embedded(settings: Settings, db: Path | None, oneshot: bool = False) -> AsyncIterator[EmbeddedSource]:
    # (a scratch store is removed at exit: it keeps no memory for a next open)
    opening = asyncio.ensure_future(
        asyncio.to_thread(EventStore, db, retention_seconds=settings.retention, keep_memory=settings.db is not None)
    )
    try:
        store = await asyncio.shield(opening)
    except asyncio.CancelledError:
        # (a signal during start-up) the thread goes on creating the files: let it finish and close
        # the store, so that removing the scratch directory afterwards removes everything
        with contextlib.suppress(Exception):
            (await opening).close()
        raise
    kind: CollectorKind = "replay" if settings.replay is not None else settings.collector
    try:
        source = await EmbeddedSource.launch(
            kind,
            store,
            record=settings.record,
            record_log_failure=not oneshot,  # (a one-shot says a failed recording once, as its exit's one line)
            replay_path=settings.replay,
            replay_speed=settings.replay_speed,
            replay_times=settings.replay_times,
            procfs_interval=settings.procfs_interval,
            raw_rate=settings.raw_rate,
        )
    except BaseException:
        store.close()
        raise
    try:
        yield source
    finally:
        await source.aclose()


@asynccontextmanager
async def open_history(settings: Settings) -> AsyncIterator[EmbeddedSource]:
    """The events stored in ``settings.db`` by an earlier run, read-only, no collector."""
    path = settings.db
    if path is None or not await asyncio.to_thread(Path(path).is_file):
        raise NoData(
            f"there is no event history at {path}",
            "record some first: run `netspy-tui serve --db FILE` or the dashboard with --db FILE",
        )
    store = await asyncio.to_thread(EventStore, path, readonly=True)
    source = EmbeddedSource(None, store, reason=f"history recorded in {path}")
    await source.start()
    try:
        yield source
    finally:
        await source.aclose()
