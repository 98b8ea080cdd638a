"""DIAGNOSIS (not a bench area): what keeping raw records costs the capture storm, stage by stage.

The capture area's storm (``connect_storm.c``, 2 workers, every connect refused) runs in alternating rounds
(the order rotates every round) with the product's collector feeding the product's file store, in stages:

- ``none``: nothing attached;
- ``counting``: counting only (``raw_connects=False, raw_drops=False``: kernel counters, no records);
- ``capped``: raw records on, the host's budget 1 a second: every event takes the raw path's budget check
  and is capped (counted, no record made);
- ``discard``: the product's records (50,000 a second) made in the kernel, read from the ring by the
  reader, then dropped before the store (counts still stored);
- ``nocommit``: the records reach the store's writer, which decodes them into chunk rows but does not
  insert the chunks (everything else committed);
- ``product``: the product path.

Each line: connects/s against ``none``'s (median and range over the rounds), the storm's CPU per connect,
the reader's and writer's CPU and the reader's voluntary context switches (its wake-ups) per second of
storm. Then one round per stage with ``BPF_ENABLE_STATS`` on: the programs' kernel time per connect.
Root and gcc are needed.

    sudo python -m bench.raw_cost [--rounds 7] [--seconds 1.5] [--modes none,counting,...]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.capture import build_generator, storm
from bench.common import free_port
from netspy_tui.collector.base import Batch
from netspy_tui.collector.ebpf import EbpfCollector, syscalls
from netspy_tui.store import chunks, sqlite
from netspy_tui.store.sqlite import EventStore

MODES = ["none", "counting", "capped", "discard", "nocommit", "product"]


class _Drop:
    """The store's sink without the batches' raw records (``discard``)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    def ingest(self, batch: Batch) -> None:
        self.store.ingest(dataclasses.replace(batch, records=None))

    def __call__(self, events: Any) -> None:  # pragma: no cover - batches only
        pass


@contextlib.contextmanager
def _no_chunks() -> Iterator[None]:
    """The writer decodes records into chunk rows as ever, but inserts none (``nocommit``)."""
    original = chunks.write

    def write(conn: Any, chunk_rows: Any, outcomes: Any, name: Any, at: int = 0) -> None:
        original(conn, [], outcomes, name, at)

    sqlite.C.write = write  # type: ignore[assignment]
    try:
        yield
    finally:
        sqlite.C.write = original  # type: ignore[assignment]


def _switches(tid: int) -> int:
    for line in Path(f"/proc/self/task/{tid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches"):
            return int(line.split()[1])
    return 0


def one(mode: str, exe: Path, port: int, seconds: float, db: Path) -> dict[str, Any]:
    if mode == "none":
        _, rate, cpu_us = storm(exe, port, 2, 10**9, seconds)
        return {"rate": rate, "cpu_us": cpu_us}
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    store = EventStore(db)
    raw = mode != "counting"
    collector = EbpfCollector(raw_connects=raw, raw_drops=raw, **({"raw_rate": 1} if mode == "capped" else {}))
    collector.start(_Drop(store) if mode in ("capped", "discard") else store)
    session = collector._session
    assert session is not None and session.thread is not None and session.thread.native_id is not None
    tid = session.thread.native_id
    try:
        with _no_chunks() if mode == "nocommit" else contextlib.nullcontext():
            cpu0, sw0 = collector.reader_cpu_seconds, _switches(tid)
            made, rate, cpu_us = storm(exe, port, 2, 10**9, seconds)
            reader, wakes = collector.reader_cpu_seconds - cpu0, _switches(tid) - sw0
            programs = collector.program_stats()
            collector.stop()
            store.flush(60)
        writer = store._writer_thread.cpu_seconds if store._writer_thread is not None else 0.0
    finally:
        collector.stop()
        store.close()
    connects = sum(made.values())
    span = connects / rate
    return {"rate": rate, "cpu_us": cpu_us, "reader": reader / span, "writer": writer / span, "wakes": wakes / span,
            "programs": {name: ns / connects for name, ns, _, _ in programs}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args()
    modes = args.modes.split(",")
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    stats: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        exe, port, db = build_generator(Path(tmp)), free_port(), Path(tmp) / "raw_cost.db"
        storm(exe, port, 2, 10**9, 0.5)  # warm-up
        for r in range(args.rounds):
            k = r % len(modes)
            for mode in modes[k:] + modes[:k]:
                results[mode].append(one(mode, exe, port, args.seconds, db))
                time.sleep(0.2)
        fd = syscalls.enable_stats()  # (every program run pays two clock reads while it is on)
        try:
            for mode in modes:
                if mode != "none":
                    stats[mode] = one(mode, exe, port, args.seconds, db)["programs"]
        finally:
            os.close(fd)
    base = statistics.median(x["rate"] for x in results.get("none", [])) if "none" in results else 0.0
    base_cpu = statistics.median(x["cpu_us"] for x in results["none"]) if "none" in results else 0.0
    print(f"medians of {args.rounds} alternating rounds, storm of {args.seconds} s, 2 workers; none {base:,.0f}/s")
    for mode, runs in results.items():
        ratios = sorted(x["rate"] / base for x in runs) if base else [0.0]
        cpu = statistics.median(x["cpu_us"] for x in runs)
        line = (f"{mode:9s} x{statistics.median(ratios):.3f} ({ratios[0]:.3f}-{ratios[-1]:.3f})  "
                f"storm CPU/connect {cpu:.3f} us ({(cpu - base_cpu) * 1000:+.0f} ns)")  # fmt: skip
        if mode != "none":
            line += (f"  reader {statistics.median(x['reader'] for x in runs) * 100:.1f} %"
                     f"  writer {statistics.median(x['writer'] for x in runs) * 100:.1f} %"
                     f"  reader wake-ups {statistics.median(x['wakes'] for x in runs):,.0f}/s")  # fmt: skip
        print(line)
    print("kernel time per connect (bpf_stats, one round each), ns:")
    for mode, progs in stats.items():
        total = sum(progs.values())
        print(f"{mode:9s} {total:5.0f}  " + ", ".join(f"{n} {v:.0f}" for n, v in sorted(progs.items()) if v >= 0.5))


if __name__ == "__main__":
    main()
