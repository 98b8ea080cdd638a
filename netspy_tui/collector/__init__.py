"""Embedded collectors (eBPF, procfs sampling, replay) and how one is chosen.

Import the concrete collectors from their modules (``collector.ebpf``, ``collector.procfs``,
``collector.replay``) or start one with :func:`netspy_tui.collector.auto.start_collector`.
"""

from netspy_tui.collector.base import Collector, CollectorStats, Sink

__all__ = ["Collector", "CollectorStats", "Sink"]
