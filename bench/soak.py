"""Soak: hours of product life in minutes — steady load through the embedded store, ``serve`` and the dashboard.

    python bench/soak.py                    # 10 minutes at 5,000 events/s
    python bench/soak.py --minutes 2        # a shorter run
    python bench/soak.py --quick            # 10-second smoke (CI-safe; not a measurement)

One process, as the product runs it: a synthetic collector (a real ``Collector`` on its own thread,
paced to ``--rate`` events/s, 10% packet drops, ~40 commands, ~2,000 destinations) feeds an
``EmbeddedSource`` whose SQLite store is a file with ``--retention`` seconds of history; ``serve``
answers on 127.0.0.1 (uvicorn thread); the dashboard runs headless and polls ``serve`` over HTTP
through the product's client and MCP gateway, once a second. Every ``--sample`` seconds: RSS,
database size (file + WAL), events generated / stored / pruned / lost, dashboard polls.

Reported: the RSS and database-size slopes after warm-up (MB/min, least squares), the achieved rate,
and lost events = generated - (stored + pruned by retention) — the store may forget only what
retention removes. Bounded (stops by itself), loopback only. Prints a table, writes JSON
(bench/results/soak.json by default). Exit code 1 when events were lost or the RSS slope exceeds
``--max-rss-slope``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/soak.py`: bench/ itself must not shadow packages (bench/mcp.py)
    _here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != Path(_here)]
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402

from bench.common import REPO, Metric, machine_info, table, write_json  # noqa: E402
from netspy_tui.collector.base import Collector, Sink  # noqa: E402
from netspy_tui.models import ConnectionEvent, PacketDropEvent  # noqa: E402
from netspy_tui.store.sqlite import EventStore  # noqa: E402
from netspy_tui.telemetry.embedded import EmbeddedSource  # noqa: E402

DEFAULT_JSON = REPO / "bench" / "results" / "soak.json"
MB = 1024 * 1024
COMMANDS = ["curl", "nginx", "python3", "postgres", "chrome", "sshd", "node", "java", "redis-server", "dockerd",
            "kubelet", "coredns", "apt-get", "wget", "git", "envoy", "haproxy", "mysqld", "prometheus", "backup"]
COMMANDS += [f"worker-{i}" for i in range(20)]
OUTCOMES = [("ok", 0)] * 17 + [("refused", -111), ("unreachable", -101), ("timeout", -110)]
REASONS = ["NO_SOCKET", "TCP_INVALID_SEQUENCE", "NETFILTER_DROP", "TCP_CSUM", "OTHERHOST"]


class SyntheticCollector(Collector):
    """``rate`` events/s in batches every ``tick`` seconds; falls behind (and says so) if the sink is slower."""

    name = "synthetic"
    label = "synthetic soak load"

    def __init__(self, rate: float, tick: float = 0.05, seed: int = 7) -> None:
        super().__init__()
        self.rate, self.tick = rate, tick
        self.rng = random.Random(seed)
        self._stop.set()
        self._thread: threading.Thread | None = None
        self._n = 0
        self.behind_seconds = 0.0
        """How far the collector lagged its schedule at worst (the sink could not keep up)."""

    def start(self, sink: Sink) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(sink,), name="soak-collector", daemon=True)
        self._thread.start()

    def _event(self) -> ConnectionEvent | PacketDropEvent:
        self._n += 1
        rng = self.rng
        cmd_i = min(int(rng.paretovariate(1.2)) - 1, len(COMMANDS) - 1)
        dest_i = min(int(rng.paretovariate(1.05)), 2000)
        ip = f"10.{dest_i >> 8}.{dest_i & 0xFF}.{1 + dest_i % 250}"
        common = {"id": f"{self._n:016x}", "pid": 1000 + cmd_i * 10 + rng.randrange(4), "command": COMMANDS[cmd_i],
                  "timestamp": self._n, "time": datetime.now(UTC), "source": self.name}
        if rng.random() < 0.1:
            return PacketDropEvent.model_construct(
                **common, type="packet_drop", drop_reason=rng.choice(REASONS), drop_reason_code=3,
                skb_length=60, packet_size_bytes=60, protocol="TCP", destination=f"{ip}:443")
        outcome, code = rng.choice(OUTCOMES)
        port = rng.choice((443, 80, 53, 5432, 6379))
        return ConnectionEvent.model_construct(
            **common, type="connection", destination_ip=ip, destination_port=port, destination=f"{ip}:{port}",
            address_family=2, protocol="UDP" if port == 53 else "TCP", socket_type="STREAM", return_code=code,
            raw_ipv4=0, raw_ipv6=[0] * 16, raw_protocol=6, raw_socktype=1, outcome=outcome)

    def _run(self, sink: Sink) -> None:
        started = time.monotonic()
        tick = 0
        while not self._stop.is_set():
            tick += 1
            target = int(self.rate * tick * self.tick)  # every event due by the end of this tick
            batch = [self._event() for _ in range(max(0, target - self.stats.events))]
            if batch:
                sink(batch)
                self.stats.events += len(batch)
            elapsed = time.monotonic() - started
            # how long ago the last event handed over was due (0 while on schedule)
            self.behind_seconds = max(self.behind_seconds, elapsed - self.stats.events / self.rate)
            wait = tick * self.tick - elapsed
            if wait > 0:
                self._stop.wait(wait)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


class CountingStore(EventStore):
    """The product store, counting what retention deletes (so loss can be told apart from pruning)."""

    pruned = 0

    def prune(self, now: datetime | None = None) -> int:
        deleted = super().prune(now)
        self.pruned += deleted
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
    stored: int
    pruned: int
    lost: int
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


async def soak(args: argparse.Namespace, workdir: Path, log: Any) -> dict[str, Any]:
    from netspy_tui.mcp_tools.gateway import open_gateway
    from netspy_tui.serve import BackgroundServer, create_app
    from netspy_tui.telemetry.client import HttpSource
    from netspy_tui.tui.app import NetspyApp

    duration = args.minutes * 60
    db = workdir / "soak.db"
    store = CountingStore(db, retention_seconds=args.retention)
    collector = SyntheticCollector(args.rate)
    source = EmbeddedSource(collector, store, reason="soak")
    proc = psutil.Process()
    proc.cpu_percent()
    samples: list[Sample] = []
    failures = 0
    started = time.monotonic()
    await source.start()
    server = BackgroundServer(create_app(source), host="127.0.0.1", port=0).start()
    log(f"serve on {server.url}; {args.rate:g} events/s for {duration:g} s, retention {args.retention:g} s")
    client = HttpSource(server.url, read_timeout=30, retries=0)
    try:
        async with open_gateway(client) as gateway:
            app = NetspyApp(gateway, interval=1.0, window=60)
            poll = app.poller.poll

            async def counted_poll() -> Any:
                nonlocal failures
                try:
                    return await poll()
                except Exception:
                    failures += 1
                    raise

            app.poller.poll = counted_poll  # type: ignore[method-assign]
            async with app.run_test(headless=True, size=(160, 45)):
                next_sample = 0.0
                while (elapsed := time.monotonic() - started) < duration:
                    if elapsed >= next_sample:
                        stored = await asyncio.to_thread(store.row_count)
                        lost = source.store_sink.lost + collector.stats.lost
                        s = Sample(round(elapsed, 2), proc.memory_info().rss / MB, *rss_parts(), db_size(db) / MB,
                                   collector.stats.events, stored, store.pruned, lost, app.polls, failures,
                                   proc.cpu_percent())
                        samples.append(s)
                        log(f"t={s.t:6.0f}s rss={s.rss_mb:6.0f} MB (anon {s.rss_anon_mb:5.0f}) db={s.db_mb:6.0f} MB "
                            f"generated={s.generated:>9,} "
                            f"stored={s.stored:>9,} pruned={s.pruned:>9,} lost={s.lost} polls={s.polls} "
                            f"cpu={s.cpu_percent:.0f}%")
                        next_sample += args.sample
                    await asyncio.sleep(min(0.25, max(0.0, started + next_sample - time.monotonic())))
                rendered_rows = app.dashboard.connections.row_count
    finally:
        await client.aclose()
        server.stop()
        collector.stop()  # no more events: the final counts are exact
    stored = store.row_count()
    generated, pruned = collector.stats.events, store.pruned
    reported_lost = source.store_sink.lost + collector.stats.lost
    elapsed = time.monotonic() - started
    final = Sample(round(elapsed, 2), proc.memory_info().rss / MB, *rss_parts(), db_size(db) / MB, generated,
                   stored, pruned,
                   reported_lost, samples[-1].polls if samples else 0, failures, proc.cpu_percent())
    samples.append(final)
    await source.aclose()

    warm = min(max(args.retention + 15.0, 0.2 * duration), 0.5 * duration)
    steady = [s for s in samples if s.t >= warm]
    rss_slope = slope([(s.t, s.rss_mb) for s in steady])
    anon_slope = slope([(s.t, s.rss_anon_mb) for s in steady])
    db_slope = slope([(s.t, s.db_mb) for s in steady])
    unaccounted = generated - (stored + pruned)
    return {
        "duration_seconds": round(elapsed, 1),
        "warmup_seconds": warm,
        "rate_target": args.rate,
        "rate_achieved": round(generated / elapsed, 1),
        "collector_behind_seconds_max": round(collector.behind_seconds, 3),
        "retention_seconds": args.retention,
        "generated": generated,
        "stored": stored,
        "pruned_by_retention": pruned,
        "lost_unaccounted": unaccounted,
        "lost_reported": reported_lost,
        "rss_slope_mb_per_min": None if rss_slope is None else round(rss_slope * 60, 3),
        "rss_anon_slope_mb_per_min": None if anon_slope is None else round(anon_slope * 60, 3),
        "rss_anon_mb_end": round(final.rss_anon_mb, 1),
        "rss_file_mb_end": round(final.rss_file_mb, 1),
        "db_slope_mb_per_min": None if db_slope is None else round(db_slope * 60, 3),
        "rss_mb_start": round(samples[0].rss_mb, 1),
        "rss_mb_end": round(final.rss_mb, 1),
        "rss_mb_max": round(max(s.rss_mb for s in samples), 1),
        "db_mb_end": round(final.db_mb, 1),
        "db_mb_max": round(max(s.db_mb for s in samples), 1),
        "dashboard_polls": final.polls,
        "dashboard_poll_failures": failures,
        "dashboard_rows_at_end": rendered_rows,
        "samples": [asdict(s) for s in samples],
    }


def metrics(r: dict[str, Any], max_rss_slope: float) -> list[Metric]:
    area = "soak"
    return [
        Metric(area, "events generated", r["generated"], "events",
               note=f"{r['rate_achieved']:,.0f}/s of {r['rate_target']:,.0f}/s target"),
        Metric(area, "achieved rate", r["rate_achieved"], "ev/s", target=r["rate_target"] * 0.95, op=">="),
        Metric(area, "lost (generated - stored - pruned)", r["lost_unaccounted"], "events", target=0),
        Metric(area, "lost (as the source reports it)", r["lost_reported"], "events", target=0),
        Metric(area, "RSS slope after warm-up (anon: heap)", r["rss_anon_slope_mb_per_min"], "MB/min",
               target=max_rss_slope),
        Metric(area, "RSS slope after warm-up (total)", r["rss_slope_mb_per_min"], "MB/min",
               note="includes the store file mapped by SQLite (mmap), which follows the DB size"),
        Metric(area, "DB size slope after warm-up", r["db_slope_mb_per_min"], "MB/min"),
        Metric(area, "RSS at end", r["rss_mb_end"], "MB",
               note=f"anon {r['rss_anon_mb_end']} MB, file {r['rss_file_mb_end']} MB; start {r['rss_mb_start']} MB, "
                    f"max {r['rss_mb_max']} MB"),
        Metric(area, "DB size at end", r["db_mb_end"], "MB", note=f"max {r['db_mb_max']} MB"),
        Metric(area, "dashboard polls", r["dashboard_polls"], "polls",
               note=f"{r['dashboard_poll_failures']} failed, {r['dashboard_rows_at_end']} rows at the end"),
        Metric(area, "dashboard poll failures", r["dashboard_poll_failures"], "polls", target=0),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/soak.py", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="how long to run (10)")
    p.add_argument("--rate", type=float, default=5000.0, help="events per second (5000)")
    p.add_argument("--retention", type=float, default=60.0, help="seconds of history the store keeps (60)")
    p.add_argument("--sample", type=float, default=5.0, help="seconds between samples (5)")
    p.add_argument("--max-rss-slope", type=float, default=2.0,
                   help="growth of private (anon) RSS after warm-up that fails (2 MB/min)")
    p.add_argument("--quick", action="store_true", help="10-second smoke: 1,000 events/s, 3 s retention, 1 s samples")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH", help=f"results file ({DEFAULT_JSON})")
    p.add_argument("--dir", type=Path, help="where the store file goes (default: a temporary directory)")
    ns = p.parse_args(argv)
    if ns.quick:
        ns.minutes, ns.rate, ns.retention, ns.sample = 10 / 60, 1000.0, 3.0, 1.0
    if not (0 < ns.minutes <= 24 * 60 and 0 < ns.rate <= 1_000_000 and ns.retention > 0 and ns.sample > 0):
        p.error("--minutes, --rate, --retention and --sample must be positive (at most a day, a million events/s)")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="netspy-soak-", dir=ns.dir) as tmp:
        result = asyncio.run(soak(ns, Path(tmp), log))
    got = metrics(result, ns.max_rss_slope)
    text = table(got)
    print(text)
    write_json(ns.json, {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": ns.quick,
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(ns).items()},
        "machine": machine_info(),
        "result": result,
        "metrics": [m.to_json() for m in got],
        "table": text.splitlines(),
    })
    print(f"\nwrote {ns.json}")
    anon = result["rss_anon_slope_mb_per_min"]
    leaked = anon is not None and anon > ns.max_rss_slope
    lost = result["lost_unaccounted"] != 0 or result["lost_reported"] != 0
    return 1 if (lost or (leaked and not ns.quick)) else 0


if __name__ == "__main__":
    raise SystemExit(main())
