"""DIAGNOSIS (not a bench): what a process-pool round trip costs the process that sends it, by the answer's size.

``serve --aggregate`` hands each ingest body to a checking process (``concurrent.futures.ProcessPoolExecutor``,
spawn) and gets the checked rows back. This sends a body of ``--body`` bytes and gets an answer of each ``--answer``
size back, ``--rounds`` times, and prints the sending process's CPU (user + system) per round trip: the fleet bench's
batches are ~3.3 MB of JSON, answered with ~4.5 MB when the rows carried their JSON and ~1.3 MB without it.

    python scripts/diag_pool_roundtrip.py
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
from concurrent.futures import ProcessPoolExecutor


def answer(body: bytes, size: int) -> bytes:
    return bytes(size)


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--body", type=int, default=3_300_000, help="bytes sent")
    p.add_argument("--answer", type=int, nargs="+", default=[4_500_000, 1_300_000], help="bytes answered")
    p.add_argument("--rounds", type=int, default=40)
    a = p.parse_args()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(answer, b"", 1).result()  # (started)
        body = os.urandom(a.body)
        for _ in range(2):
            for size in a.answer:
                t0 = cpu()
                for _ in range(a.rounds):
                    pool.submit(answer, body, size).result()
                ms = (cpu() - t0) / a.rounds * 1e3
                print(f"answer {size:>10,} bytes: {ms:6.2f} ms of the sender's CPU a round trip")


if __name__ == "__main__":
    main()
