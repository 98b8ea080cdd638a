"""The store's writer thread: batches in from a collector, one transaction per round, and raw
events shed — never counts — when they come faster than SQLite keeps them.

:meth:`Writer.put` runs on the collector's thread and never waits on SQLite: raw eBPF records
beyond ``max_queued`` waiting are dropped from their batch (counted per second as ``shed``; the
batch's kernel counts, traffic, outcomes and losses still go through). Batches of built events (procfs,
replay) wait for room instead, since their counts are derived from them. The thread writes
everything queued in one transaction (:meth:`EventStore.write`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

import numpy as np

from netspy_tui.collector.base import Batch
from netspy_tui.collector.ebpf import programs as P

if TYPE_CHECKING:
    from netspy_tui.store.sqlite import EventStore

logger = logging.getLogger(__name__)

#: At most one warning per this many seconds about shedding or write failures.
WARN_EVERY = 30.0


class Writer:
    def __init__(self, store: EventStore, max_queued: int) -> None:
        self.store = store
        self.max_queued = max_queued
        self._queue: deque[Batch] = deque()
        self._queued = 0  # raw records/events waiting
        self._cond = threading.Condition()
        self._busy = False
        self._stopping = False
        self.shed = 0
        self.cpu_seconds = 0.0
        """CPU time the writer thread has used (decoding and writing), for benchmarks."""
        self.errors = 0
        self.last_error = ""
        self.last_error_at: float | None = None
        self._warned_at = -WARN_EVERY
        self._thread = threading.Thread(target=self._run, name="netspy-store-writer", daemon=True)
        self._thread.start()

    @staticmethod
    def _size(batch: Batch) -> int:
        return len(batch.events) + (len(batch.records) if batch.records is not None else 0)

    def put(self, batch: Batch) -> None:
        with self._cond:
            if self._stopping:
                raise RuntimeError("the store is closing")
            n = self._size(batch)
            if batch.events:
                while self._queued + n > self.max_queued and self._queued and not self._stopping:
                    self._cond.wait(0.5)
            elif n and self._queued + n > self.max_queued:
                batch = self._shed(batch)
                n = self._size(batch)
            self._queue.append(batch)
            self._queued += n
            self._cond.notify_all()

    def _shed(self, batch: Batch) -> Batch:
        """The batch without its raw CONNECT/DROP records; they are counted per second as shed.
        OUTCOME records stay (a few bytes each: they finish rows already stored)."""
        recs = batch.records
        keep = recs["kind"] == P.KIND_OUTCOME
        gone = recs["wall"][~keep]
        seconds, counts = np.unique(gone // 1_000_000_000, return_counts=True)
        self.shed += len(gone)  # (the store warns about it when it writes the shed counts)
        out = Batch(records=P.pick(recs, keep), counts=batch.counts, lost=dict(batch.lost), second=batch.second,
                    codec=batch.codec, traffic=batch.traffic)  # fmt: skip
        extra = [Batch(lost={"shed": int(c)}, second=int(s)) for s, c in zip(seconds.tolist(), counts.tolist(),
                                                                              strict=True)]  # fmt: skip
        self._queue.extend(extra)
        return out

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue and self._stopping:
                    return
                batches = list(self._queue)
                self._queue.clear()
                self._queued = 0
                self._busy = True
                self._cond.notify_all()
            try:
                self.store.write(batches)
            except Exception as exc:  # never let a store failure stop the writer
                self.errors += 1
                self.last_error = str(exc)
                self.last_error_at = time.monotonic()
                now = time.monotonic()
                if now - self._warned_at >= WARN_EVERY:
                    self._warned_at = now
                    logger.warning("event store: %s", exc)
            finally:
                self.cpu_seconds = time.thread_time()
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
