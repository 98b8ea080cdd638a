"""Soak: hours of product life in minutes — steady load through the collector path, store, serve and dashboard.

    python bench/soak.py                    # 10 minutes at 5,000 events/s
    python bench/soak.py --minutes 2        # a shorter run
    python bench/soak.py --quick            # 10-second smoke (CI-safe; not a measurement)

One process, as the product runs it. A synthetic collector (a real ``Collector`` on its own thread,
paced to ``--rate`` events/s) hands the store what the eBPF collector's reader hands it, at its
default pace: every 50 ms (its ring poll) one :class:`~netspy_tui.collector.base.Batch` through
``sink.ingest`` with the ring records made since (``programs.RECORD``, by :mod:`bench.synth`, wall
times in the tick that just ended: ~40 commands, ~2,000 destinations, 10% packet drops), and
every second (its count drain) in the same batch the exact counts the kernel would have kept for
every record made since the last drain (``synth.counts`` of the same records). Like the ring, the
collector never waits for the store: ``ingest`` queues to the store's writer thread, which sheds
raw records (counted per second as ``shed``, never the counts) when more than ``--max-queued``
wait. The store (``EmbeddedSource``'s) is a SQLite file with ``--retention`` seconds of history;
``serve`` answers on 127.0.0.1 (uvicorn thread); the dashboard runs headless and polls ``serve``
over HTTP through the product's client and MCP gateway, once a second. Every ``--sample``
seconds: RSS (anon and total), database size (file + WAL), events generated / raw rows kept /
shed / pruned, the writer's backlog, dashboard polls.

Reported, and checked:

- counts exact: the events counted in the store's rollups (``store.count`` for both kinds over a
  window covering the run, plus what retention deleted from the rollups, read just before each
  deletion) equal the events generated;
- raw balance: raw rows kept + shed + pruned by retention (age or ``max_rows``) equal the events
  generated — the store may forget raw rows only by shedding (counted) or retention;
- the shed figure, the RSS slopes (anon and total) and the DB size and its slope after warm-up
  (MB/min, least squares), and dashboard polls per interval (polls made / run time / interval).

Connects reported in progress are never resolved here (no OUTCOME records follow). Bounded (stops
by itself), loopback only. Prints a table, writes JSON (bench/results/soak.json by default). Exit
code 1 when the counts are not exact, when the raw balance does not hold, or when the anon RSS
slope exceeds ``--max-rss-slope`` — judged only when the warm-up (20% of the run, at most half)
lasts until the store holds a full ``--retention`` (+ 15 s), since RSS and DB size grow by design
before that: at least 2.5 minutes with the default 60 s retention; never with ``--quick``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/soak.py`: bench/ itself must not shadow packages (bench/mcp.py)
    _here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != Path(_here)]
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from bench import synth  # noqa: E402
from bench.common import REPO, FailedPolls, Metric, machine_info, table, write_json  # noqa: E402
from netspy_tui.collector.base import Batch, Collector, Sink  # noqa: E402
from netspy_tui.errors import CollectorError  # noqa: E402
from netspy_tui.models import Scope, ns_to_time, time_to_ns, utcnow  # noqa: E402
from netspy_tui.store.sqlite import EventStore  # noqa: E402
from netspy_tui.telemetry.embedded import EmbeddedSource  # noqa: E402

DEFAULT_JSON = REPO / "bench" / "results" / "soak.json"
MB = 1024 * 1024
NS = 1_000_000_000
#: A window (seconds) reaching back before any event of the run.
FOREVER = 10**8


class SyntheticCollector(Collector):
    """``rate`` events/s delivered as the eBPF collector's reader delivers them: every ``tick``
    (its ring poll, 50 ms) one ``sink.ingest(Batch)`` with the ring records made since, and every
    ``drain`` seconds (its count drain, 1 s) the exact counts of every record made since the last
    drain in the same batch; at stop a last drain. Never waits for the store (the store sheds).

    Falls behind its schedule (and says so) only if this thread itself cannot get the CPU."""

    name = "synthetic"
    label = "synthetic soak load (eBPF-shaped records)"

    def __init__(self, rate: float, tick: float = 0.05, drain: float = 1.0, seed: int = 7) -> None:
        super().__init__()
        self.rate, self.tick, self.drain = rate, tick, drain
        self.rng = np.random.default_rng(seed)
        self.codec = synth.codec()
        # ring records carry "ns since boot" beside the wall clock, as the kernel's do
        self._boot_ns = time.time_ns() - time.monotonic_ns()
        self._stop.set()
        self._thread: threading.Thread | None = None
        self._undrained: list[np.ndarray] = []
        self.generated = 0
        """Events (CONNECT/DROP records) made, delivered or not."""
        self.ingest_seconds_max = 0.0
        """The longest a ``sink.ingest`` call took (the collector must never wait on the store)."""
        self.behind_seconds = 0.0
        """How far the collector lagged its schedule at worst (this thread starved of CPU)."""

    def start(self, sink: Sink) -> None:
        ingest = getattr(sink, "ingest", None)
        if ingest is None:
            raise CollectorError("the soak's collector needs a batch sink (sink.ingest), as the eBPF collector uses")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(ingest,), name="soak-collector", daemon=True)
        self._thread.start()

    def _records(self, n: int) -> np.ndarray:
        """``n`` ring records with wall times in the tick that just ended."""
        recs = synth.records(n, self.tick, self.rng, now_wall_ns=time.time_ns())
        recs["ts"] = recs["wall"] - np.uint64(self._boot_ns)
        self.generated += n
        self._undrained.append(recs)
        return recs

    def _counts(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The kernel's counts of every record made since the last drain (what the drain reads)."""
        if not self._undrained:
            return None
        recs = np.concatenate(self._undrained) if len(self._undrained) > 1 else self._undrained[0]
        self._undrained = []
        return synth.counts(recs)

    def _deliver(self, ingest: Any, records: np.ndarray | None, counts: tuple[np.ndarray, np.ndarray] | None) -> None:
        n = len(records) if records is not None else 0
        batch = Batch(records=records, counts=counts, second=time.time_ns() // NS, codec=self.codec)
        t0 = time.monotonic()
        try:
            ingest(batch)
        except Exception as exc:  # as the eBPF collector: counted, never raised
            self.stats.losses["sink_rejected"] = self.stats.losses.get("sink_rejected", 0) + n
            self.stats.lost += n
            self.stats.errors += 1
            self.stats.last_error = f"sink rejected {n} events: {exc!r}"
        else:
            self.stats.events += n
        self.ingest_seconds_max = max(self.ingest_seconds_max, time.monotonic() - t0)

    def _run(self, ingest: Any) -> None:
        started = time.monotonic()
        next_drain = started + self.drain
        tick = 0
        while not self._stop.is_set():
            tick += 1
            target = int(self.rate * tick * self.tick)  # every event due by the end of this tick
            n = max(0, target - self.generated)
            records = self._records(n) if n else None
            counts = None
            if time.monotonic() >= next_drain:
                next_drain += self.drain
                counts = self._counts()
            if records is not None or counts is not None:
                self._deliver(ingest, records, counts)
            elapsed = time.monotonic() - started
            # how long ago the last event made was due (0 while on schedule)
            self.behind_seconds = max(self.behind_seconds, elapsed - self.generated / self.rate)
            wait = tick * self.tick - elapsed
            if wait > 0:
                self._stop.wait(wait)
        counts = self._counts()  # the last drain, as the eBPF reader does at stop
        if counts is not None:
            self._deliver(ingest, None, counts)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


class CountingStore(EventStore):
    """The product store, counting what retention deletes, so that loss can be told apart from
    pruning: raw rows (what :meth:`EventStore.prune` returns) and the events counted in the rollup
    seconds it deletes (read with :meth:`EventStore.count` just before; only the writer thread
    writes and prunes, so nothing lands in between)."""

    pruned = 0
    """Raw rows deleted by retention (age or ``max_rows``)."""
    counted_pruned = 0
    """Events counted in the rollup seconds retention deleted."""

    def prune(self, now: datetime | None = None) -> int:
        now = now or utcnow()
        counted = 0
        if self.retention_seconds is not None:
            last = (time_to_ns(now) - int(self.retention_seconds * 1e9)) // NS - 1  # newest second it deletes
            at = ns_to_time(last * NS)
            counted = sum(self.count(Scope(kind, window=FOREVER), now=at) for kind in ("connection", "packet_drop"))
        deleted = super().prune(now)
        self.pruned += deleted
        self.counted_pruned += counted
        return deleted


@dataclass
class Sample:
    t: float
    rss_mb: float
    rss_anon_mb: float
    """Heap and other private memory: what a leak would grow."""
    rss_file_mb: float
    """File pages mapped into the process (SQLite's mmap of the store): page cache, reclaimable."""
    db_mb: float
    generated: int
    kept: int
    """Raw rows in the store."""
    shed: int
    """Raw records the writer shed so far."""
    pruned: int
    queued: int
    """Raw records waiting for the writer thread."""
    polls: int
    poll_failures: int
    cpu_percent: float


def rss_parts() -> tuple[float, float]:
    """(RssAnon, RssFile) in MB from /proc/self/status (0, 0 where it does not exist)."""
    parts = {"RssAnon:": 0.0, "RssFile:": 0.0}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[0] in parts:
                parts[fields[0]] = int(fields[1]) / 1024
    except OSError:
        pass
    return parts["RssAnon:"], parts["RssFile:"]


def db_size(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope (per second) of (t, value) points; None with fewer than 3."""
    if len(points) < 3:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (v - mv) for t, v in points) / var if var else None


def _writer(store: EventStore) -> Any:
    return store._writer_thread  # the store's Writer (created by the first ingest)


def _queued(store: EventStore) -> int:
    w = _writer(store)
    return int(getattr(w, "_queued", 0)) if w is not None else 0


def _shed(store: EventStore) -> int:
    w = _writer(store)
    return int(w.shed) if w is not None else 0


def thread_cpu(proc: psutil.Process) -> dict[str, float]:
    """CPU seconds (user + system) of each live thread of this process, by thread name."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for t in proc.threads():
        name = names.get(t.id, "other (not a Python thread)")
        out[name] = round(out.get(name, 0.0) + t.user_time + t.system_time, 2)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _mb_per_min(points: list[tuple[float, float]]) -> float | None:
    s = slope(points)
    return None if s is None else round(s * 60, 3)


async def soak(args: argparse.Namespace, workdir: Path, log: Any) -> dict[str, Any]:
    from netspy_tui.mcp_tools.gateway import open_gateway
    from netspy_tui.serve import BackgroundServer, create_app
    from netspy_tui.telemetry.client import HttpSource
    from netspy_tui.tui.app import NetspyApp

    duration = args.minutes * 60
    interval = 1.0
    db = workdir / "soak.db"
    extra = {} if args.max_queued is None else {"max_queued": args.max_queued}
    store = CountingStore(db, retention_seconds=args.retention, **extra)
    collector = SyntheticCollector(args.rate)
    source = EmbeddedSource(collector, store, reason="soak")
    proc = psutil.Process()
    proc.cpu_percent()
    samples: list[Sample] = []
    started = time.monotonic()
    await source.start()
    server = BackgroundServer(create_app(source), host="127.0.0.1", port=0).start()
    log(
        f"serve on {server.url}; {args.rate:g} events/s for {duration:g} s, retention {args.retention:g} s, "
        f"writer sheds beyond {store.max_queued:,} queued records"
    )
    client = HttpSource(server.url, read_timeout=30, retries=0)
    try:
        async with open_gateway(client) as gateway:
            app = NetspyApp(gateway, interval=interval, window=60)
            failed = FailedPolls(app)
            async with app.run_test(headless=True, size=(160, 45)):
                app_started = time.monotonic()
                next_sample = 0.0
                baseline = None
                if args.trace_memory:
                    tracemalloc.start(6)
                while (elapsed := time.monotonic() - started) < duration:
                    if elapsed >= next_sample:
                        kept = await asyncio.to_thread(store.row_count)
                        s = Sample(
                            round(elapsed, 2),
                            proc.memory_info().rss / MB,
                            *rss_parts(),
                            db_size(db) / MB,
                            collector.generated,
                            kept,
                            _shed(store),
                            store.pruned,
                            _queued(store),
                            app.polls,
                            failed.n,
                            proc.cpu_percent(),
                        )
                        samples.append(s)
                        log(
                            f"t={s.t:6.0f}s rss={s.rss_mb:6.0f} MB (anon {s.rss_anon_mb:5.0f}) db={s.db_mb:6.0f} MB "
                            f"generated={s.generated:>9,} kept={s.kept:>9,} shed={s.shed:>9,} "
                            f"pruned={s.pruned:>9,} queued={s.queued:>7,} polls={s.polls} cpu={s.cpu_percent:.0f}%"
                        )
                        next_sample += args.sample
                        if args.trace_memory and baseline is None and elapsed >= args.retention + 15.0:
                            baseline = tracemalloc.take_snapshot()
                    await asyncio.sleep(min(0.25, max(0.0, started + next_sample - time.monotonic())))
                if baseline is not None:  # a diagnosis: where the heap grew after warm-up
                    growth = tracemalloc.take_snapshot().compare_to(baseline, "traceback")
                    for stat in growth[:12]:
                        log(f"heap growth {stat.size_diff / 1024:+.0f} KiB in {stat.count_diff:+d} blocks:")
                        for line in stat.traceback.format()[-6:]:
                            log(f"    {line}")
                polled_seconds = time.monotonic() - app_started
                threads = thread_cpu(proc)  # before anything stops: where the run's CPU went
                polls = app.polls
                rendered_rows = app.dashboard.connections.row_count
    finally:
        await client.aclose()
        server.stop()
        collector.stop()  # no more events: the final figures are exact once the writer is done
    flushed = await asyncio.to_thread(store.flush, 120)
    elapsed = time.monotonic() - started
    generated = collector.generated
    kept = store.row_count()
    pruned = store.pruned
    shed_written = store.totals.get("shed", 0)
    shed = _shed(store)
    window = int(elapsed) + 10  # every second of the run
    held = {kind: store.count(Scope(kind, None, None, window)) for kind in ("connection", "packet_drop")}
    counted = sum(held.values()) + store.counted_pruned
    other_losses = {cause: n for cause, n in store.totals.items() if cause not in ("raw", "shed") and n}
    other_losses.update({f"collector {c}": n for c, n in collector.stats.losses.items() if n})
    if source.store_sink.lost:
        other_losses["sink lost"] = source.store_sink.lost
    writer = _writer(store)
    writer_cpu = float(writer.cpu_seconds) if writer is not None else 0.0
    final = Sample(
        round(elapsed, 2),
        proc.memory_info().rss / MB,
        *rss_parts(),
        db_size(db) / MB,
        generated,
        kept,
        shed,
        pruned,
        _queued(store),
        polls,
        failed.n,
        proc.cpu_percent(),
    )
    samples.append(final)
    await source.aclose()

    warm = min(max(args.retention + 15.0, 0.2 * duration), 0.5 * duration)
    steady = [s for s in samples if s.t >= warm]
    # Before the store holds a full retention of rows (+ a prune cycle) RSS and DB size grow by
    # design: a slope is a leak only when measured after that, over at least 3 samples.
    steady_state = warm >= args.retention + 15.0 and len(steady) >= 3
    unaccounted = generated - (kept + shed + pruned)
    expected_polls = polled_seconds / interval
    return {
        "duration_seconds": round(elapsed, 1),
        "warmup_seconds": warm,
        "steady_state_reached": steady_state,
        "rate_target": args.rate,
        "rate_achieved": round(generated / elapsed, 1),
        "collector_behind_seconds_max": round(collector.behind_seconds, 3),
        "collector_ingest_ms_max": round(collector.ingest_seconds_max * 1000, 3),
        "retention_seconds": args.retention,
        "max_queued": store.max_queued,
        "writer_flushed": flushed,
        "generated": generated,
        "counted": counted,
        "counted_held": held,
        "counted_pruned_by_retention": store.counted_pruned,
        "counts_exact": counted == generated,
        "kept": kept,
        "shed": shed,
        "shed_written": shed_written,
        "pruned_by_retention": pruned,
        "unaccounted": unaccounted,
        "balance_holds": unaccounted == 0,
        "other_losses": other_losses,
        "writer_queued_max": max(s.queued for s in samples),
        "writer_cpu_seconds": round(writer_cpu, 2),
        "writer_cpu_per_100k": round(writer_cpu / generated * 1e5, 3) if generated else None,
        "process_cpu_seconds": round(sum(proc.cpu_times()[:2]), 2),
        "thread_cpu_seconds": threads,
        "rss_slope_mb_per_min": _mb_per_min([(s.t, s.rss_mb) for s in steady]),
        "rss_anon_slope_mb_per_min": _mb_per_min([(s.t, s.rss_anon_mb) for s in steady]),
        "rss_anon_mb_end": round(final.rss_anon_mb, 1),
        "rss_file_mb_end": round(final.rss_file_mb, 1),
        "db_slope_mb_per_min": _mb_per_min([(s.t, s.db_mb) for s in steady]),
        "rss_mb_start": round(samples[0].rss_mb, 1),
        "rss_mb_end": round(final.rss_mb, 1),
        "rss_mb_max": round(max(s.rss_mb for s in samples), 1),
        "db_mb_end": round(final.db_mb, 1),
        "db_mb_max": round(max(s.db_mb for s in samples), 1),
        "db_mb_steady_mean": round(sum(s.db_mb for s in steady) / len(steady), 1) if steady else None,
        "dashboard_interval_seconds": interval,
        "dashboard_seconds": round(polled_seconds, 1),
        "dashboard_polls": polls,
        "dashboard_polls_expected": round(expected_polls, 1),
        "dashboard_polls_per_interval": round(polls / expected_polls, 3) if expected_polls else None,
        "dashboard_poll_failures": failed.n,
        "dashboard_rows_at_end": rendered_rows,
        "samples": [asdict(s) for s in samples],
    }


def metrics(r: dict[str, Any], max_rss_slope: float) -> list[Metric]:
    area = "soak"
    generated = r["generated"] or 1
    return [
        Metric(
            area,
            "events generated (ring records via sink.ingest)",
            r["generated"],
            "events",
            note=f"{r['rate_achieved']:,.0f}/s of {r['rate_target']:,.0f}/s target",
        ),
        Metric(area, "achieved rate", r["rate_achieved"], "ev/s", target=r["rate_target"] * 0.95, op=">="),
        Metric(
            area,
            "collector behind its schedule, worst",
            r["collector_behind_seconds_max"],
            "s",
            note=f"longest sink.ingest call {r['collector_ingest_ms_max']} ms (the collector never waits)",
        ),
        Metric(
            area,
            "counted in the store's rollups",
            r["counted"],
            "events",
            note=f"held {r['counted_held']}, + {r['counted_pruned_by_retention']:,} in seconds retention "
            f"deleted; generated {r['generated']:,}",
        ),
        Metric(area, "counts: |counted - generated|", abs(r["counted"] - r["generated"]), "events", target=0),
        Metric(
            area,
            "raw: |generated - (kept + shed + pruned)|",
            abs(r["unaccounted"]),
            "events",
            target=0,
            note=f"other losses: {r['other_losses'] or 'none'}",
        ),
        Metric(area, "raw rows kept at the end", r["kept"], "events", note=f"retention {r['retention_seconds']:g} s"),
        Metric(
            area,
            "raw records shed by the store's writer",
            r["shed"],
            "events",
            note=f"{r['shed'] / generated:.2%} of generated; sheds beyond {r['max_queued']:,} queued; "
            f"{r['shed_written']:,} recorded in the losses table",
        ),
        Metric(area, "raw rows pruned by retention", r["pruned_by_retention"], "events"),
        Metric(
            area,
            "writer backlog, worst sample",
            r["writer_queued_max"],
            "records",
            note=f"sheds beyond {r['max_queued']:,}",
        ),
        Metric(
            area,
            "writer thread CPU per 100k events",
            r["writer_cpu_per_100k"],
            "s",
            note=f"{r['writer_cpu_seconds']} s over the run",
        ),
        Metric(
            area,
            "process CPU, share of one core",
            r["process_cpu_seconds"] / r["duration_seconds"] * 100,
            "%",
            note="by thread: " + ", ".join(f"{k} {v:g} s" for k, v in list(r["thread_cpu_seconds"].items())[:6]),
        ),
        Metric(
            area,
            "RSS slope after warm-up (anon: heap)",
            r["rss_anon_slope_mb_per_min"],
            "MB/min",
            target=max_rss_slope if r["steady_state_reached"] else None,
            note=f"warm-up {r['warmup_seconds']:g} s"
            + (
                ""
                if r["steady_state_reached"]
                else f"; not judged: the run ends before retention ({r['retention_seconds']:g} s) + 15 s "
                "fills the store and then gives 3 samples"
            ),
        ),
        Metric(
            area,
            "RSS slope after warm-up (total)",
            r["rss_slope_mb_per_min"],
            "MB/min",
            note="includes the store file mapped by SQLite (mmap), which follows the DB size",
        ),
        Metric(
            area,
            "RSS at end",
            r["rss_mb_end"],
            "MB",
            note=f"anon {r['rss_anon_mb_end']} MB, file {r['rss_file_mb_end']} MB; start {r['rss_mb_start']} MB, "
            f"max {r['rss_mb_max']} MB",
        ),
        Metric(
            area,
            "DB size (file + WAL) under retention, at end",
            r["db_mb_end"],
            "MB",
            note=f"max {r['db_mb_max']} MB, mean after warm-up {r['db_mb_steady_mean']} MB",
        ),
        Metric(area, "DB size slope after warm-up", r["db_slope_mb_per_min"], "MB/min"),
        Metric(
            area,
            "dashboard polls per interval (polls / expected)",
            r["dashboard_polls_per_interval"],
            target=0.9,
            op=">=",
            note=f"{r['dashboard_polls']} polls in {r['dashboard_seconds']:g} s at "
            f"{r['dashboard_interval_seconds']:g} s; {r['dashboard_rows_at_end']} rows at the end",
        ),
        Metric(area, "dashboard poll failures", r["dashboard_poll_failures"], "polls", target=0),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/soak.py", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="how long to run (10)")
    p.add_argument("--rate", type=float, default=5000.0, help="events per second (5000)")
    p.add_argument("--retention", type=float, default=60.0, help="seconds of history the store keeps (60)")
    p.add_argument("--sample", type=float, default=5.0, help="seconds between samples (5)")
    p.add_argument(
        "--max-queued",
        type=int,
        default=None,
        metavar="N",
        help="raw records the store's writer lets wait before it sheds (default: the product's)",
    )
    p.add_argument(
        "--max-rss-slope",
        type=float,
        default=2.0,
        help="growth of private (anon) RSS after warm-up that fails (2 MB/min)",
    )
    p.add_argument("--trace-memory", action="store_true",
                   help="diagnosis: log where the Python heap grew after warm-up (slow)")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="10-second smoke: 1,000 events/s, 3 s retention, 1 s samples")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH", help=f"results file ({DEFAULT_JSON})")
    p.add_argument("--dir", type=Path, help="where the store file goes (default: a temporary directory)")
    ns = p.parse_args(argv)
    if ns.quick:
        ns.minutes, ns.rate, ns.retention, ns.sample = 10 / 60, 1000.0, 3.0, 1.0
    if not (0 < ns.minutes <= 24 * 60 and 0 < ns.rate <= 1_000_000 and ns.retention > 0 and ns.sample > 0):
        p.error("--minutes, --rate, --retention and --sample must be positive (at most a day, a million events/s)")
    if ns.max_queued is not None and ns.max_queued < 1:
        p.error("--max-queued must be at least 1")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="netspy-soak-", dir=ns.dir) as tmp:
        result = asyncio.run(soak(ns, Path(tmp), log))
    got = metrics(result, ns.max_rss_slope)
    text = table(got)
    print(text)
    write_json(
        ns.json,
        {
            "generated": datetime.now(UTC).isoformat(timespec="seconds"),
            "quick": ns.quick,
            "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(ns).items()},
            "machine": machine_info(),
            "result": result,
            "metrics": [m.to_json() for m in got],
            "table": text.splitlines(),
        },
    )
    print(f"\nwrote {ns.json}")
    anon = result["rss_anon_slope_mb_per_min"]
    leaked = anon is not None and anon > ns.max_rss_slope and result["steady_state_reached"] and not ns.quick
    if not result["steady_state_reached"]:
        print(
            f"note: RSS slope not judged: warm-up {result['warmup_seconds']:g} s ends before the store holds "
            f"{ns.retention:g} s of retention + 15 s (run at least {2 * (ns.retention + 15) / 60:g} minutes)",
            file=sys.stderr,
        )
    failed = [why for bad, why in ((not result["counts_exact"], "counts are not exact"),
                                   (not result["balance_holds"], "kept + shed + pruned != generated"),
                                   (leaked, f"anon RSS grows {anon} MB/min after warm-up")) if bad]  # fmt: skip
    for why in failed:
        print(f"FAIL: {why}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
