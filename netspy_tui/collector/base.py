"""The interface every embedded collector implements (eBPF, procfs sampling, replay).

A collector runs on its own thread(s) and hands batches of events to a *sink* — in the product
the SQLite store's ``add_events``; in tests a list. Events are built with
``ConnectionEvent.model_construct(...)``/``PacketDropEvent.model_construct(...)`` on the hot path
(no validation cost) and must carry every field the contract names, with ``time`` a timezone-aware
UTC datetime and ``source`` set to the collector's ``name``.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from netspy_tui.models import ConnectionEvent, PacketDropEvent

Sink = Callable[[Sequence[ConnectionEvent | PacketDropEvent]], None]


@dataclass
class CollectorStats:
    """Counters a collector keeps; read from any thread (ints are replaced atomically)."""

    events: int = 0
    """Events handed to the sink."""
    lost: int = 0
    """Records lost before they reached us (ring-buffer overflow) or rejected by the sink."""
    errors: int = 0
    last_error: str = ""


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
