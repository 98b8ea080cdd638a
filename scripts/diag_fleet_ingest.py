"""DIAGNOSIS (not a bench): an aggregator's ingest CPU per event without HTTP, with the minute folds fixed.

bench/fleet.py's forwarder bodies (3 nodes, ``--events`` each, batches of 5,000) checked and stored in this process
(``parse_batch`` + ``FleetStore.ingest`` into per-node file stores in a scratch directory, as ``serve --aggregate``
does in its worker threads), alternating the nodes; prints events per CPU-second (user + system) and each per event.

The bench's events span the 50 s before they are made, so whether a run folds a minute into the minute and hour
tables (once the data is 5 s past it) depends on the clock: 67,900-83,300 events per CPU-second for the same code
here. This one puts the newest event ``--offset`` seconds past a minute (each given offset is one run), so A and B
fold the same rows: 1 folds nothing, 20 folds 60 % of the events (with ``--span`` 50).

    python scripts/diag_fleet_ingest.py --events 100000 --offset 20,1
    python scripts/diag_fleet_ingest.py --events 100000 --offset 30 --span 180   # nearly every event folded

CPU is this process's: on a shared machine, alternate A and B and compare medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import synth  # noqa: E402
from bench.fleet import AGENTS, BATCH  # noqa: E402


def bodies(node: str, events: int, seed: int, span: float, newest_ns: int) -> list[bytes]:
    """bench/fleet.py's bodies of ``node``, the newest event at ``newest_ns``."""
    from netspy_tui.serve.app import event_json

    identity = {"k8s_node_name": node}
    out = []
    with mock.patch.object(synth.time, "time_ns", return_value=newest_ns):
        for chunk in synth.event_batches(events, span, seed=seed, batch=BATCH):
            items = [{**event_json(e, identity), **identity} for e in chunk]
            out.append(json.dumps({"events": items}, separators=(",", ":")).encode())
    return out


def run(events: int, offset: float, span: float) -> None:
    from netspy_tui.fleet.store import FleetStore, parse_batch

    minute = (time.time_ns() // 60_000_000_000 - 2) * 60_000_000_000  # (a minute before the last one)
    per_node = [bodies(f"bench-node-{i}", events, 40 + i, span, minute + int(offset * 1e9)) for i in range(AGENTS)]
    order = [body for group in zip(*per_node, strict=True) for body in group]
    scratch = Path(tempfile.mkdtemp(prefix="netspy-diag-"))
    try:
        fleet = FleetStore(scratch / "stores")
        t0, n = os.times(), 0
        for raw in order:
            n += fleet.ingest(parse_batch(raw)).accepted
        t1 = os.times()
        fleet.close()
    finally:
        shutil.rmtree(scratch)
    user, system = t1.user - t0.user, t1.system - t0.system
    cpu = user + system
    print(f"newest {offset:g} s past a minute, span {span:g} s: {n:,} events, {n / cpu:,.0f} per CPU-second "
          f"(user {user / n * 1e6:.2f} + system {system / n * 1e6:.2f} µs an event)", flush=True)  # fmt: skip


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=100_000, help="events per node (default 100,000)")
    p.add_argument("--offset", default="20", help="seconds past a minute of the newest event, one run each (20,1)")
    p.add_argument("--span", type=float, default=50.0, help="seconds the events span (bench/fleet.py: 50)")
    a = p.parse_args()
    from netspy_tui.serve.aggregate import tune_collector

    tune_collector()  # (as serve --aggregate does)
    for value in a.offset.split(","):
        run(a.events, float(value), a.span)
