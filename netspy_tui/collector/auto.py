"""Choosing the embedded collector: eBPF when it loads, else procfs sampling; or a replayed file.

Only :meth:`Collector.start` knows whether eBPF loads on this kernel with these privileges, so
:func:`start_collector` is the real chooser: with ``auto`` it starts eBPF and, if that fails,
starts procfs sampling with the eBPF error as the reason. Each choice comes with a one-line
reason for status lines and ``server_status``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

from netspy_tui.collector.base import Collector, Sink
from netspy_tui.collector.privilege import EBPF_NEEDS_ROOT, ebpf_privileged
from netspy_tui.collector.procfs import ProcfsCollector
from netspy_tui.collector.replay import ReplayCollector
from netspy_tui.errors import CollectorError, CollectorSettingError

logger = logging.getLogger(__name__)

CollectorKind = Literal["auto", "ebpf", "procfs", "replay"]


def _who() -> str:
    euid = os.geteuid()
    return "root" if euid == 0 else f"uid {euid}"


def _ebpf(raw_rate: int | None = None) -> Collector:
    """A new eBPF collector (imported lazily: it is the heaviest module); ``raw_rate``: raw records the host
    makes per second at most, all CPUs together (None: the collector's default; 0: no cap)."""
    try:
        from netspy_tui.collector.ebpf import EbpfCollector
    except ImportError as exc:  # a broken install; never expected in a working checkout
        raise CollectorError(f"the eBPF collector cannot be imported ({exc})", "use --collector procfs") from exc
    return EbpfCollector() if raw_rate is None else EbpfCollector(raw_rate=raw_rate)


def _replay(path: str | Path | None, speed: float, times: str = "now") -> tuple[Collector, str]:
    if path is None:
        raise CollectorError("the replay collector needs a recording", "pass --replay FILE")
    pace = "as fast as possible" if speed == 0 else f"at {speed:g}x speed"
    kept = ", at its recorded times" if times == "recorded" else ""
    return ReplayCollector(path, speed=speed, rebase=times != "recorded"), f"replay of {path} {pace}{kept}"


def open_collector(
    kind: CollectorKind = "auto",
    *,
    replay_path: str | Path | None = None,
    replay_speed: float = 1.0,
    replay_times: str = "now",
    procfs_interval: float = 1.0,
    raw_rate: int | None = None,
) -> tuple[Collector, str]:
    """An unstarted collector of ``kind`` and why it was chosen.

    ``auto`` can only guess here (eBPF when the process looks privileged): use
    :func:`start_collector` to find out for sure.
    """
    if kind == "replay" or (kind == "auto" and replay_path is not None):
        return _replay(replay_path, replay_speed, replay_times)
    if kind == "procfs":
        return ProcfsCollector(procfs_interval), "procfs sampling: requested"
    if kind == "ebpf":
        return _ebpf(raw_rate), "eBPF: requested"
    if kind != "auto":
        raise CollectorError(f"unknown collector {kind!r}", "use auto, ebpf, procfs or replay")
    if ebpf_privileged():
        return _ebpf(raw_rate), f"eBPF: running as {_who()} (not yet loaded)"
    return ProcfsCollector(procfs_interval), f"procfs sampling: {EBPF_NEEDS_ROOT} (running as {_who()})"


def start_collector(
    kind: CollectorKind,
    sink: Sink,
    *,
    replay_path: str | Path | None = None,
    replay_speed: float = 1.0,
    replay_times: str = "now",
    procfs_interval: float = 1.0,
    raw_rate: int | None = None,
) -> tuple[Collector, str]:
    """Start the collector ``kind`` feeding ``sink``; return it and a one-line reason.

    ``auto``: eBPF if it loads, else procfs sampling (the reason then says why eBPF could not
    load). An explicit ``ebpf``, ``procfs`` or ``replay`` that cannot start raises
    :class:`CollectorError`.
    """
    if kind == "replay" or (kind == "auto" and replay_path is not None):
        collector, reason = _replay(replay_path, replay_speed, replay_times)
        collector.start(sink)
        return collector, reason
    if kind == "procfs":
        collector = ProcfsCollector(procfs_interval)
        collector.start(sink)
        return collector, "procfs sampling: requested"
    if kind == "ebpf":
        collector = _ebpf(raw_rate)
        collector.start(sink)
        return collector, f"eBPF: tracepoints loaded as {_who()}"
    if kind != "auto":
        raise CollectorError(f"unknown collector {kind!r}", "use auto, ebpf, procfs or replay")

    try:
        collector = _ebpf(raw_rate)
        collector.start(sink)
        return collector, f"eBPF: tracepoints loaded as {_who()}"
    except CollectorSettingError:
        raise
    except CollectorError as exc:
        why = exc.message
        logger.info("eBPF unavailable, falling back to procfs sampling: %s", exc)
    except Exception as exc:  # an unexpected failure must not leave the user without data
        why = f"{type(exc).__name__}: {exc}"
        logger.warning("eBPF collector failed to start, falling back to procfs sampling", exc_info=True)
    fallback = ProcfsCollector(procfs_interval)
    try:
        fallback.start(sink)
    except CollectorError as exc:
        raise CollectorError(
            f"no collector could start: eBPF: {why}; procfs: {exc.message}",
            "run as root for eBPF, or replay a recording with --replay FILE",
        ) from exc
    why = " ".join(why.split())
    # (the header shows it at 80 columns: "eBPF needs root" as it is, anything else inside "eBPF unavailable (…)")
    return fallback, f"procfs sampling: {why if why.startswith('eBPF ') else f'eBPF unavailable ({why})'}"
