"""DIAGNOSIS (not a bench): the storm rows "counting only" and "kernel side alone" alone, interleaved.

``bench/capture.py`` measures four traced modes a round; this runs only the product counting (the collector
feeding the file store, no raw events: ``_product_round(raw=False)``) and the kernel side alone
(``_kernel_only_round``), each between two untraced storms, the order turned each round as ``bench.capture.run``
does, and prints each round's ratios (connects/s traced / the mean of the untraced storms either side) and their
medians. ``--drain SECONDS`` also runs counting with the count maps drained that often (the product drains each
second): whether the drains cost the storm anything. Needs root (eBPF) and gcc, as the capture area does.

    python scripts/diag_storm_counting.py --rounds 4
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import netspy_tui.collector.ebpf as ebpf  # noqa: E402
from bench import capture  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--drain", type=float, help="also counting with the count maps drained every SECONDS")
    a = p.parse_args()
    if os.geteuid() != 0:
        print("diag_storm_counting: needs root (eBPF)", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="diag-storm-"))
    exe, db = capture.build_generator(tmp), tmp / "counting.db"
    workers, count, seconds = os.cpu_count() or 1, 400_000, 4.0
    modes = ["counting", "kernel"] + ([f"counting, drained every {a.drain:g} s"] if a.drain else [])
    shipped = ebpf.EbpfCollector

    def traced(mode: str, port: int) -> float:
        if mode == "kernel":
            return float(capture._kernel_only_round(exe, port, workers, count, seconds)["rate"])
        if mode != "counting":

            class Drained(shipped):  # type: ignore[misc, valid-type]
                def __init__(self, *args: Any, **kwargs: Any) -> None:
                    super().__init__(*args, **{**kwargs, "drain_interval": a.drain})

            ebpf.EbpfCollector = Drained  # type: ignore[misc]  # (what _product_round imports)
        try:
            return float(capture._product_round(exe, port, workers, count, seconds, db, raw=False)["rate"])
        finally:
            ebpf.EbpfCollector = shipped  # type: ignore[misc]

    ratios: dict[str, list[float]] = {m: [] for m in modes}
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: every connect is refused
        port = closed.getsockname()[1]
        for _ in range(2):
            capture.storm(exe, port, workers, count // 4, 1.0)  # (warm-up, as the area does)
        for r in range(a.rounds):
            order = modes[r % len(modes) :] + modes[: r % len(modes)]
            before = capture.storm(exe, port, workers, count, seconds)[1]
            for mode in order:
                rate = traced(mode, port)
                after = capture.storm(exe, port, workers, count, seconds)[1]
                ratios[mode].append(rate / ((before + after) / 2))
                before = after
            print(f"round {r + 1}: " + ", ".join(f"{m} {v[-1]:.3f}" for m, v in ratios.items()), flush=True)
    for mode, values in ratios.items():
        print(f"{mode}: median {statistics.median(values):.4f} ({', '.join(f'{v:.3f}' for v in values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
