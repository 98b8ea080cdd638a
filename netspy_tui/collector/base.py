"""The interface every embedded collector implements (eBPF, procfs sampling, replay).

A collector runs on its own thread(s) and hands batches to a *sink*. A plain sink is a callable
taking a list of events (tests, benchmarks). The store's sink also has ``ingest(batch)``, which a
collector that can deliver more than events uses: the eBPF collector hands it :class:`Batch`es of
raw ring records and the kernel's exact counts, with no model object per event. Events are
built with ``ConnectionEvent.model_construct(...)``/``PacketDropEvent.model_construct(...)`` (no
validation cost) and carry every field the contract names, with ``time`` a timezone-aware UTC
datetime and ``source`` set to the collector's ``name``. ``ingest`` must not block: the store
sheds raw detail (and counts what it shed) rather than hold up the collector.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from netspy_tui.errors import NetspyError
from netspy_tui.models import ConnectionEvent, PacketDropEvent

logger = logging.getLogger(__name__)

Sink = Callable[[Sequence[ConnectionEvent | PacketDropEvent]], None]

#: What a traffic row counts (``Batch.traffic``/``traffic_rows``, the store's ``traffic`` table):
#: bytes read, bytes sent, TCP segments retransmitted, connections accepted, connections made,
#: connections closed (with their lifetimes)
DIR_RX, DIR_TX, DIR_RETRANS, DIR_ACCEPT, DIR_CONNECT, DIR_CLOSE = 1, 2, 3, 4, 5, 6


@dataclass
class Batch:
    """One delivery to a batch sink (``sink.ingest``).

    ``events``: built events (their counts are derived from them). ``records``: eBPF ring records
    (CONNECT, OUTCOME and DROP, in ring order), with ``codec`` to name them. ``counts``: the
    kernel's exact counts drained since the last batch, ``(keys, values)``; when present, counts
    are never derived from ``records``. ``lost``: what was lost or skipped since the last batch,
    by cause (``ring_full``, ``sockaddr_fault``, ...), with the wall-clock second it was noticed.
    ``traffic``: the kernel's byte counts per (socket, process, second, direction) drained since
    the last batch, ``(keys, values)`` (eBPF :data:`~netspy_tui.collector.ebpf.programs.TRAFFIC_KEY`).
    ``traffic_rows``: traffic already as the store's rows (a sampling collector's; see
    :mod:`netspy_tui.collector.sockdiag`).
    """

    events: Sequence[ConnectionEvent | PacketDropEvent] = ()
    records: Any = None
    counts: tuple[Any, Any] | None = None
    lost: dict[str, int] = field(default_factory=dict)
    second: int = 0
    codec: Any = None
    traffic: tuple[Any, Any] | None = None
    traffic_rows: Sequence[Any] = ()


@dataclass
class CollectorStats:
    """Counters a collector keeps; read from any thread (ints are replaced atomically)."""

    events: int = 0
    """Events (raw records) handed to the sink."""
    counted: int = 0
    """Connects and drops counted apart from the raw records (the eBPF collector's kernel counts: each once, the
    raw records shed under load included); 0 for a collector that keeps no counts."""
    lost: int = 0
    """Records lost before they reached us (ring-buffer overflow) or rejected by the sink."""
    errors: int = 0
    last_error: str = ""
    losses: dict[str, int] = field(default_factory=dict)
    """Everything lost, skipped or not followed so far, by cause (kernel counters included)."""


class Collector(ABC):
    """Start with :meth:`start`, stop with :meth:`stop` (idempotent, joins threads)."""

    #: short id: ``ebpf``, ``procfs`` or ``replay``
    name: str = ""
    #: human label, e.g. ``eBPF`` or ``procfs sampling``
    label: str = ""
    #: True when short-lived connections can be missed
    sampled: bool = False

    def __init__(self) -> None:
        self.stats = CollectorStats()
        self._stop = threading.Event()

    @abstractmethod
    def start(self, sink: Sink) -> None:
        """Begin collecting; raise :class:`netspy_tui.errors.CollectorError` if it cannot."""

    @abstractmethod
    def stop(self) -> None:
        """Stop collecting and release every kernel/OS resource. Safe to call twice."""

    def deliver(self, sink: Sink, events: Sequence[ConnectionEvent | PacketDropEvent]) -> None:
        """Hand ``events`` to a plain ``sink``: counted as delivered, or as lost (and logged) when
        the sink rejects them. Nothing to hand over, nothing happens."""
        if not events:
            return
        try:
            sink(events)
        except Exception as exc:
            self.stats.lost += len(events)
            self.stats.errors += 1
            self.stats.last_error = str(exc) if isinstance(exc, NetspyError) else f"{type(exc).__name__}: {exc}"
            logger.warning("%s: the sink rejected %d events: %s", self.name, len(events), self.stats.last_error)
        else:
            self.stats.events += len(events)

    @property
    def events_made(self) -> int:
        """Connects and drops made since start, each once: the events a collector that hands over one event per
        connect or drop handed over (:attr:`CollectorStats.events`). The eBPF collector says its kernel counts
        instead: under load it hands over fewer raw records than it counted (the rest shed), and a connect's
        outcome can come as a record of its own."""
        return self.stats.events

    def programs(self) -> list[tuple[str, str, str, int | None]]:
        """(name, type, status, id) of the kernel programs this collector runs, if any."""
        return []

    @property
    def running(self) -> bool:
        return not self._stop.is_set()

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
