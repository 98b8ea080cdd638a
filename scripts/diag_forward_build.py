"""DIAGNOSIS (not a bench): what building a forwarded batch's body costs an event, in this process.

Ring records of the forwarding row's agent's shape (``bench.synth.records``: 100 a 50 ms tick, 2,000 events/s) are
written into a file store in a scratch directory, taken as the forwarder takes them (``EventStore.on_records``), and
made into ingest bodies in batches of ``--batch`` as ``Forwarder._read`` does (``EventStore.record_pieces`` with a
:class:`~netspy_tui.serve.forward.RecordJson` of this node's identity, then ``body_of``): this thread's CPU per event,
each batch, the first time (their shapes and places new to the encoder, as a host's new destinations are) and again
(every shape and place known).

    python scripts/diag_forward_build.py --seconds 30
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench import synth  # noqa: E402
from netspy_tui.collector.base import Batch  # noqa: E402
from netspy_tui.serve import forward as F  # noqa: E402
from netspy_tui.store import EventStore  # noqa: E402
from netspy_tui.store import chunks as C  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=30, help="seconds of the agent's events (2,000 a second)")
    p.add_argument("--batch", type=int, default=4400, help="events a body (the row's agent posts ~4,400 a round)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="diag-forward-") as tmp:
        store = EventStore(Path(tmp) / "agent.db")
        parts: list[tuple[int, np.ndarray]] = []
        store.on_records(parts.extend)
        rng = np.random.default_rng(3)
        start = time.time_ns() - (a.seconds + 60) * 10**9
        for tick in range(a.seconds * 20):
            recs = synth.records(100, 0.05, rng, now_wall_ns=start + tick * 5 * 10**7)
            store.write([Batch(records=recs, codec=synth.codec())])
        store.flush(60)
        records, first = C.join([r for _, r in parts]), parts[0][0]
        encoder: Any = F.RecordJson(F.node_identity())
        passes: dict[str, list[float]] = {"new to the encoder": [], "known": []}
        for name, per_event in passes.items():
            for i in range(0, len(records) - a.batch + 1, a.batch):
                t0 = time.thread_time()
                body = F.body_of(store.record_pieces(records[i : i + a.batch], first + i, encoder))
                per_event.append((time.thread_time() - t0) / a.batch * 1e6)
            print(f"{name}: {statistics.median(per_event):.2f} µs an event (median of {len(per_event)} batches, "
                  f"{min(per_event):.2f}-{max(per_event):.2f}), {len(body) / a.batch:.0f} bytes an event")  # fmt: skip
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
