"""DIAGNOSIS (not a bench): what ``serve --aggregate``'s two ingest processes each do per event, in this process.

bench/fleet.py's forwarder bodies (3 nodes, ``--events`` each, batches of 5,000, the bench's minute fold) go the way
``--ingest-processes 1`` takes them, timed step by step in this one process (CPU time, user + system):

- the checking process's part: ``parse_and_check(..., pack=True)`` (read the body, check each event, pack the rows
  by marshal), with Python's default collector thresholds and with the aggregator's (``YOUNG_THRESHOLD``);
- the way back: packing the checked rows (without the JSON their blocks hold) and blocks by marshal or by pickle,
  and reading them;
- the storing process's part: unpacking and ``FleetStore.store_checked`` into per-node file stores in a scratch
  directory; the same when it makes the blocks itself (the checked batches' blocks cleared, as before they were made
  where the batch was checked); against the whole in one process (``parse_batch`` + ``FleetStore.ingest``,
  ``--ingest-processes 0``).

    python scripts/diag_ingest_split.py --events 100000

CPU is this process's: on a shared machine, run it a few times and compare medians.
"""

from __future__ import annotations

import argparse
import gc
import marshal
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import fleet  # noqa: E402
from netspy_tui.fleet.prep import YOUNG_THRESHOLD, answer, parse_and_check  # noqa: E402
from netspy_tui.fleet.store import FleetStore, check_batch, parse_batch  # noqa: E402


def cpu() -> float:
    return time.process_time()


def bodies(events: int, offset: float) -> list[bytes]:
    """The three nodes' bodies, alternating (as the bench's senders reach the aggregator)."""
    minute = (time.time_ns() // 60_000_000_000 - 2) * 60_000_000_000
    newest = minute + int(offset * 1e9)
    per_node = [fleet.make_bodies(f"bench-node-{i}", events, 40 + i, newest, fleet.SPAN) for i in range(3)]
    return [b for group in zip(*per_node, strict=True) for b in group]


def per_event(seconds: float, n: int) -> str:
    return f"{seconds * 1e6 / n:6.2f} µs an event"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=100_000, help="events per node (3 nodes)")
    p.add_argument("--offset", type=float, default=fleet.NEWEST_PAST_MINUTE, help="newest event, s past a minute")
    a = p.parse_args()
    order = bodies(a.events, a.offset)
    n = 3 * a.events

    default = gc.get_threshold()
    for label, threshold in (("default", default), ("aggregator's", (YOUNG_THRESHOLD, *default[1:]))):
        gc.set_threshold(*threshold)
        t0 = cpu()
        for raw in order:
            parse_and_check(raw, 5000, pack=True)
        print(f"checking process: read, check, pack (collector {label} {threshold[0]}): {per_event(cpu() - t0, n)}")
    gc.set_threshold(YOUNG_THRESHOLD, *default[1:])

    checked = [check_batch(parse_batch(raw)) for raw in order]
    answers = [answer(c) for c in checked]  # (what a checking process sends back)
    for name, dump, load in (("marshal", marshal.dumps, marshal.loads), ("pickle", pickle.dumps, pickle.loads)):
        t0 = cpu()
        packed = [dump(answer) for answer in answers]
        t1 = cpu()
        for blob in packed:
            load(blob)
        t2 = cpu()
        size = sum(map(len, packed)) / n
        print(f"the way back by {name:7s}: write {per_event(t1 - t0, n)}, read {per_event(t2 - t1, n)}, "
              f"{size:.0f} bytes an event")  # fmt: skip

    blocks_here = "two processes: the storing one, making the blocks itself (as before 2026-12-08)"
    for label in ("two processes: the storing one", blocks_here, "one process (--ingest-processes 0)"):
        scratch = Path(tempfile.mkdtemp(prefix="netspy-diag-"))
        stores = FleetStore(scratch / "stores")
        try:
            if label == blocks_here:  # (checked batches with their JSON and no blocks: not timed, as unpacking)
                batches = [check_batch(parse_batch(raw)) for raw in order]
                for batch in batches:
                    batch.blocks.clear()
                t0 = cpu()
                for batch in batches:
                    stores.store_checked(batch)
                print(f"{label}: store {per_event(cpu() - t0, n)}")
                continue
            if label.startswith("two"):
                packed = [parse_and_check(raw, 5000, pack=True) for raw in order]
                t0 = cpu()
                unpacked = [parsed.batch() for parsed in packed]
                t1 = cpu()
                for batch in unpacked:
                    assert batch is not None
                    stores.store_checked(batch)
                print(f"{label}: unpack {per_event(t1 - t0, n)}, store {per_event(cpu() - t1, n)}")
                continue
            else:
                t0 = cpu()
                for raw in order:
                    stores.ingest(parse_batch(raw))
            print(f"{label}: read, check and store {per_event(cpu() - t0, n)}")
        finally:
            stores.close()
            shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
