"""DIAGNOSIS (not a bench): an aggregator's ingest CPU per event, in this process without HTTP or as the fleet bench.

bench/fleet.py's forwarder bodies (3 nodes, ``--events`` each, batches of 5,000) checked and stored in this process
(``parse_batch`` + ``FleetStore.ingest`` into per-node file stores in a scratch directory, as ``serve --aggregate``
does in its ingest thread), alternating the nodes; prints events per CPU-second (user + system) and each per event.
The newest event is ``--offset`` seconds past a minute (each given offset is one run): a store folds a minute into
its minute and hour tables once its data is 5 s past it, so 1 folds nothing, 20 folds 60 % of the events, 6 (the
bench's) 88 % (with ``--span`` 50); before the bench fixed it, the clock decided: 67,900-83,300 events per
CPU-second for the same code.

``--aggregator RUNS``: instead, RUNS of the fleet bench's ingest (``serve --aggregate``, 3 sender processes, the
dashboard open on it; ``--events`` per agent), each printing events/s and events per aggregator CPU-second.

    python scripts/diag_fleet_ingest.py --events 100000 --offset 20,1
    python scripts/diag_fleet_ingest.py --events 100000 --offset 30 --span 180   # nearly every event folded
    python scripts/diag_fleet_ingest.py --events 60000 --offset 6 --threads   # a thread a node
    python scripts/diag_fleet_ingest.py --aggregator 3

CPU is the measured process's: on a shared machine, alternate A and B and compare medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import fleet  # noqa: E402


def run(events: int, offset: float, span: float, threads: bool) -> None:
    from netspy_tui.fleet.store import FleetStore, parse_batch

    minute = (time.time_ns() // 60_000_000_000 - 2) * 60_000_000_000  # (a minute before the last one)
    newest = minute + int(offset * 1e9)
    per_node = [fleet.make_bodies(f"bench-node-{i}", events, 40 + i, newest, span) for i in range(fleet.AGENTS)]
    order = [body for group in zip(*per_node, strict=True) for body in group]
    scratch = Path(tempfile.mkdtemp(prefix="netspy-diag-"))
    try:
        stores = FleetStore(scratch / "stores")
        accepted = [0] * len(per_node)

        def ingest(bodies: list[bytes], i: int) -> None:
            for raw in bodies:
                accepted[i] += stores.ingest(parse_batch(raw)).accepted

        t0, w0 = os.times(), time.perf_counter()
        if threads:  # (a thread a node, as serve --aggregate's ingest threads take the agents' bodies)
            workers = [threading.Thread(target=ingest, args=(bodies, i)) for i, bodies in enumerate(per_node)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        else:
            ingest(order, 0)
        t1, w1 = os.times(), time.perf_counter()
        stores.close()
    finally:
        shutil.rmtree(scratch)
    n = sum(accepted)
    user, system = t1.user - t0.user, t1.system - t0.system
    cpu = user + system
    print(f"newest {offset:g} s past a minute, span {span:g} s{', a thread a node' if threads else ''}: {n:,} "
          f"events, {n / (w1 - w0):,.0f} per second, {n / cpu:,.0f} per CPU-second (user {user / n * 1e6:.2f} + "
          f"system {system / n * 1e6:.2f} µs an event)", flush=True)  # fmt: skip


def aggregator(events: int) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="netspy-diag-"))
    try:
        r = asyncio.run(fleet.ingest(scratch, events, print))
    finally:
        shutil.rmtree(scratch)
    per_cpu = r["events"] / (r["aggregator_cpu_pct"] / 100 * r["seconds"])
    print(f"serve --aggregate: {r['events']:,} events, {r['eps']:,.0f} events/s, {per_cpu:,.0f} per aggregator "
          f"CPU-second (aggregator {r['aggregator_cpu_pct']:.0f} %, {r['dashboard_polls']} polls, exact "
          f"{r['exact']})", flush=True)  # fmt: skip


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=100_000, help="events per node (default 100,000)")
    p.add_argument("--offset", default="20", help="seconds past a minute of the newest event, one run each (20,1)")
    p.add_argument("--span", type=float, default=fleet.SPAN, help="seconds the events span (bench/fleet.py: 50)")
    p.add_argument("--threads", action="store_true", help="each node's bodies in a thread of its own")
    p.add_argument("--aggregator", type=int, default=0, metavar="RUNS", help="runs of the fleet bench's ingest")
    a = p.parse_args()
    for _ in range(a.aggregator):
        aggregator(a.events)
    if a.aggregator:
        sys.exit(0)
    from netspy_tui.serve.aggregate import tune_collector

    tune_collector()  # (as serve --aggregate does)
    for value in a.offset.split(","):
        run(a.events, float(value), a.span, a.threads)
