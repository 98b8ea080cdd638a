"""Ingest bodies parsed and checked in processes of their own: an aggregator's other cores.

While agents send, an aggregator is one core of Python (~20 µs an event in one process: the fleet bench).
About a third of it is reading a body and checking each event (:func:`~netspy_tui.fleet.store.parse_batch`,
:func:`~netspy_tui.fleet.store.check_batch`), which needs nothing of the stores; the rest, de-duplicating and
storing, needs them. So ``serve --aggregate`` reads and checks each body in an :class:`IngestChecker` process
and its own process stores what comes back: the next body is checked while this one is stored, on another
core. The answer to a body is the same either way (a test compares them): only where the work runs changes.

How many: ``--ingest-processes``, by default the CPUs the server may use (its affinity, and a container's CPU
limit) but one, at most :data:`MAX_DEFAULT_WORKERS` (one on two cores: the fleet bench's machine, where it was worth
~20 % more events a second in interleaved runs). The processes are started with ``spawn`` (nothing of the server's
threads or open stores is inherited), ignore Ctrl-C (the server stops them), and die with the server
(``PR_SET_PDEATHSIG``). A process that dies anyway (killed, out of memory) costs no body: the server checks that one
itself, starts new processes, and counts the restart (``/health``'s ``ingest_check_restarts``).
"""

from __future__ import annotations

import ctypes
import functools
import gc
import logging
import marshal
import math
import multiprocessing
import os
import signal
import threading
from collections import Counter
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netspy_tui.fleet import wire as W
from netspy_tui.fleet.store import Checked, check_batch, node_of, parse_batch
from netspy_tui.store import jsonblocks as J

_WIRE = frozenset({W.WireConnection, W.WireDrop})

__all__ = ["YOUNG_THRESHOLD", "IngestChecker", "Parsed", "cpu_quota", "default_workers", "parse_and_check", "read_body"]

log = logging.getLogger(__name__)

#: allocations between the cyclic collector's young passes in ``serve --aggregate``'s processes, the checking ones
#: too (Python's default: 700; see ``serve.aggregate.tune_collector``): a checking process's work 9.1 µs an event
#: instead of 12.2 (``scripts/diag_ingest_split.py``: a body's structs, rows and tuples stay alive while it is
#: checked; nothing makes cycles)
YOUNG_THRESHOLD = 20_000
#: checking processes at most, by default: one stores what they check, so more than two seldom helps
MAX_DEFAULT_WORKERS = 2
_PR_SET_PDEATHSIG = 1


@dataclass
class Parsed:
    """A body read and checked: how many events it holds, how many each node sent (its rate limit's due),
    and the events checked (None when there are more than the limit: it is refused whole), or them packed by
    :mod:`marshal` for the way back from a checking process (:meth:`batch` unpacks them)."""

    count: int
    wanted: dict[str, int]
    checked: Checked | bytes | None

    def batch(self) -> Checked | None:
        """The events checked (None: more than the limit)."""
        if isinstance(self.checked, bytes):
            by_node, rejected, blocks = marshal.loads(self.checked)  # noqa: S302 (our own checking process's, never a peer's)
            return Checked(by_node, rejected, blocks)
        return self.checked


def read_body(raw: bytes) -> tuple[list[Any], dict[str, int]]:
    """An ingest body's events (:func:`~netspy_tui.fleet.store.parse_batch`) and how many each node sent (raises
    :class:`~netspy_tui.fleet.store.BadBatch`)."""
    items = parse_batch(raw)
    wanted: dict[str, int] = {}
    if set(map(type, items)) <= _WIRE:  # (the usual batch, structs: each event's node read in one comprehension)
        for node, n in Counter([item.k8s_node_name for item in items]).items():
            key = node if isinstance(node, str) else ""
            wanted[key] = wanted.get(key, 0) + n
        return items, wanted
    for item in items:
        node = node_of(item)
        key = node if isinstance(node, str) else ""
        wanted[key] = wanted.get(key, 0) + 1
    return items, wanted


def answer(checked: Checked) -> tuple[Any, ...]:
    """What a checking process sends back of ``checked`` (packed by marshal; :meth:`Parsed.batch` reads it): a node's
    rows without their JSON when its blocks hold it (the way back a third of the bytes; the storing process takes it
    from the blocks when it needs it, :meth:`FleetStore.store_checked`)."""
    by_node = {node: [(e[0], e[1], e[2], e[3][: J.BODY], e[4]) for e in events] if node in checked.blocks else events
               for node, events in checked.by_node.items()}  # fmt: skip
    return by_node, checked.rejected, checked.blocks


def parse_and_check(raw: bytes, max_events: int, pack: bool = False) -> Parsed:
    """Read an ingest body and check its events (raises :class:`~netspy_tui.fleet.store.BadBatch`); ``pack``: the
    events checked packed by :mod:`marshal` (a checking process's answer: its rows are strings, numbers, bytes and
    tuples, which marshal writes in ~40 % of pickle's time and reads in ~70 %: ``scripts/diag_ingest_split.py``)."""
    items, wanted = read_body(raw)
    if len(items) > max_events:
        return Parsed(len(items), wanted, None)
    checked = check_batch(items)
    if pack:
        try:
            return Parsed(len(items), wanted, marshal.dumps(answer(checked)))
        except ValueError:  # (something marshal does not write: pickled as it is)
            pass
    return Parsed(len(items), wanted, checked)


def cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPUs this process's cgroup may use (its CFS quota over its period: a container's CPU limit), None when
    unlimited or not known. Reads cgroup v2's ``cpu.max``, else v1's ``cpu.cfs_quota_us`` and ``cpu.cfs_period_us``."""
    try:
        quota, period = (root / "cpu.max").read_text(encoding="ascii").split()[:2]
    except (OSError, ValueError):
        try:
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text(encoding="ascii").strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text(encoding="ascii").strip()
        except OSError:
            return None
    try:
        limit, every = int(quota), int(period)
    except ValueError:  # ("max": no limit)
        return None
    return limit / every if limit > 0 and every > 0 else None


def default_workers(root: Path = Path("/sys/fs/cgroup")) -> int:
    """Checking processes for this machine: a core is left for the storing process (0 on one core, or under a CPU
    limit of less than two: the server checks bodies itself)."""
    try:
        cores = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cores = float(os.cpu_count() or 1)
    quota = cpu_quota(root)
    if quota is not None:
        cores = min(cores, quota)
    return max(0, min(MAX_DEFAULT_WORKERS, math.floor(cores) - 1))


def _start_worker(parent: int) -> None:
    """In each checking process, first: ignore Ctrl-C (the server stops it), die with the server; the cyclic
    collector as the server's (and what was imported left out of its passes)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    gc.freeze()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # (not Linux: the pool's own pipes end it when the server is gone)
        pass
    if os.getppid() != parent:  # (the server died before the signal was asked for)
        os._exit(0)


def _ready() -> int:
    return os.getpid()


class IngestChecker:
    """``workers`` processes that read and check ingest bodies (:func:`parse_and_check`); use as a context
    manager (the processes stop with it). :meth:`broke` answers in the caller's thread when the processes
    broke meanwhile, and starts new ones."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("an IngestChecker needs one process at least")
        self.workers = workers
        self.restarts = 0
        #: the processes broke before they answered a body (they cannot start here): the server checks every body
        self.given_up = False
        self._answered = False  # (the current processes answered a body)
        self._lock = threading.Lock()
        self._start()

    def _start(self) -> None:
        """New processes as :attr:`_pool` (the lock held, or in ``__init__``)."""
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_start_worker,
                                   initargs=(os.getpid(),))  # fmt: skip
        # Ctrl-C goes to the terminal's whole process group: ignored in the processes from their start (an ignored
        # signal stays ignored across exec), before their initializer runs. Only the main thread sets handlers.
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        self._pool = pool
        try:
            for _ in range(self.workers):  # (started now, not by the first body: it would wait for their imports)
                pool.submit(_ready).add_done_callback(functools.partial(self._note_answer, pool))
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)

    def submit(self, raw: bytes, max_events: int) -> Future[Parsed]:
        """Read and check ``raw`` in a process; a future of its :class:`Parsed` (or the BadBatch it raised, or
        :class:`BrokenProcessPool`: then :meth:`broke` with that future)."""
        with self._lock:
            pool, given_up, answered = self._pool, self.given_up, self._answered
        try:
            if given_up:
                raise BrokenProcessPool("no checking process")
            future = pool.submit(parse_and_check, raw, max_events, True)
        except (BrokenProcessPool, RuntimeError) as exc:  # (RuntimeError: shut down, or broken as it was taken)
            future = Future()
            future.set_exception(exc if isinstance(exc, BrokenProcessPool) else BrokenProcessPool(str(exc)))
            future._netspy_pool = pool  # type: ignore[attr-defined]
            return future
        future._netspy_pool = pool  # type: ignore[attr-defined]  # (which processes: see broke)
        if not answered:
            future.add_done_callback(lambda done: self._note_answer(pool, done))
        return future

    def _note_answer(self, pool: ProcessPoolExecutor, done: Future[Any]) -> None:
        """(A future's callback) ``pool``'s processes answered: a later break is a death, not a failed start."""
        if not done.cancelled() and done.exception() is None:
            with self._lock:
                if pool is self._pool:
                    self._answered = True

    def broke(self, raw: bytes, max_events: int, failed: Future[Parsed]) -> Parsed:
        """After :meth:`submit`'s future ``failed`` raised :class:`BrokenProcessPool`: start new processes (once for
        the processes that broke, however many bodies were in them: not again for those new ones) and read and check
        ``raw`` in this thread."""
        with self._lock:
            broken = getattr(failed, "_netspy_pool", None)
            if broken is self._pool and not self.given_up:
                broken.shutdown(wait=False, cancel_futures=True)
                if not self._answered:  # (they died before answering anything: new ones would too)
                    self.given_up = True
                    log.warning("ingest: the processes that check ingest bodies could not start; this process "
                                "checks them (--ingest-processes 0 does not try)")  # fmt: skip
                else:
                    self.restarts += 1
                    log.warning("ingest: a checking process died; starting new ones (restart %d); the bodies it "
                                "held are checked by the server", self.restarts)  # fmt: skip
                    self._answered = False
                    self._start()
        return parse_and_check(raw, max_events)

    def close(self) -> None:
        with self._lock:
            pool = self._pool
            processes = list((getattr(pool, "_processes", None) or {}).values())  # (shutdown forgets them)
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.kill()  # (a body being checked is nobody's any more)
            process.join(timeout=5)

    def __enter__(self) -> IngestChecker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
