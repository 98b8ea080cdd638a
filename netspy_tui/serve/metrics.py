"""``GET /metrics``: Prometheus counters of what the host's collector counted, for the scrapes and
alerts operations teams already run.

Built with the Prometheus client library (its metric families and text exposition), from what
the source says at scrape time: the store's exact counts since it was opened
(:meth:`~netspy_tui.store.EventStore.counted_since_open`) and the collector's health
(:class:`~netspy_tui.models.SourceInfo`). Label cardinality is bounded: at most ``top_n``
processes get a label of their own per metric, chosen by count the first time they are seen and
kept from then on (so every series only grows, as a counter must); every other process counts
as ``process="other"``. A packet dropped in kernel context (no process: pid 0, no name) counts as
``process="(kernel)"``, as the dashboard's drops list names it, outside the budget (it is no process); a
process that names itself ``(kernel)`` (or has no name) counts as ``other``, never as the kernel. Label values
are untrusted text (a process names itself): control characters and escape sequences are written as visible
escapes (:func:`~netspy_tui.textsafe.clean`), as the tools and the dashboard show them, never raw to the terminal
of whoever reads the scrape.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from netspy_tui.models import KERNEL_CONTEXT, SourceInfo
from netspy_tui.store.sqlite import OTHER_COMMAND
from netspy_tui.textsafe import clean

__all__ = ["CONTENT_TYPE", "MetricsExporter"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER = "other"


#: drop reasons with a label of their own (the kernel has about 120; the first to be counted keep theirs), then
#: ``other``; and the longest a reason's label is (the kernel's longest name is 34 characters)
MAX_REASONS = 128
MAX_REASON_CHARS = 64


class _Budget:
    """Which processes get a label of their own: at most ``size``, kept once given."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.labelled: set[str] = set()

    def assign(self, totals: Mapping[str, int]) -> None:
        for command, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0])):
            if len(self.labelled) >= self.size:
                break
            self.labelled.add(command)

    def label(self, command: str) -> str:
        return command if command in self.labelled else OTHER


def _who(kind: str, command: str) -> str:
    """Who a count of the store's is labelled as, before the budget: a drop without a process name is the
    kernel's (in kernel context: an empty label value is no label to PromQL); the store's overflow bucket, and a
    process without a name or that names itself ``(kernel)``, are ``other`` (``(kernel)`` is the kernel alone)."""
    if not command:
        return KERNEL_CONTEXT if kind == "packet_drop" else OTHER
    return OTHER if command in (OTHER_COMMAND, KERNEL_CONTEXT) else command


class _Snapshot(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


class MetricsExporter:
    """Builds the exposition for one source; keeps the label budgets between scrapes."""

    def __init__(self, top_n: int = 20) -> None:
        if top_n < 1:
            raise ValueError("top_n must be >= 1")
        self.top_n = top_n
        self._budgets = {"connection": _Budget(top_n), "packet_drop": _Budget(top_n)}
        # (a drop's reason comes from agents as text: 1,000 made-up reasons were 1,000 series on an aggregator)
        self._reasons = _Budget(MAX_REASONS)

    def render(self, info: SourceInfo, counted: Mapping[tuple[str, str, str], int] | None) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Snapshot(self.families(info, counted)))
        return generate_latest(registry)

    def families(self, info: SourceInfo, counted: Mapping[tuple[str, str, str], int] | None) -> list[Metric]:
        out: list[Metric] = []
        up = GaugeMetricFamily("netspy_source_up", "1 while the data source answers and is healthy.")
        up.add_metric([], 1.0 if info.healthy else 0.0)
        degraded = GaugeMetricFamily("netspy_source_degraded", "1 while events are being lost or shed (the last "
                                     "minute), or forwarding to an aggregator has been failing.")  # fmt: skip
        degraded.add_metric([], 1.0 if info.degraded or info.recent_losses else 0.0)
        seen = CounterMetricFamily("netspy_events_seen", "Events seen since this server started: the connects and "
                                   "drops its collector counted, raw events shed under load included, or an "
                                   "aggregator's taken in from its agents (0 again after a restart).")  # fmt: skip
        seen.add_metric([], float(info.events_seen))
        lost = CounterMetricFamily("netspy_events_lost", "Events not kept (or, on an aggregator, not forwarded by its "
                                   "agents) since start, by cause: server_status says which leave the counts exact.",
                                   labels=["cause"])  # fmt: skip
        for cause, n in sorted(info.losses.items()):
            lost.add_metric([clean(cause, None)], float(n))
        stored = GaugeMetricFamily("netspy_events_stored", "Raw events held in the store now.")
        stored.add_metric([], float(info.stored_events or 0))
        out += [up, degraded, seen, lost, stored]
        if counted is not None:
            out += self._counted(counted)
        return out

    def _counted(self, counted: Mapping[tuple[str, str, str], int]) -> list[Metric]:
        by_kind: dict[str, dict[tuple[str, str], int]] = {"connection": {}, "packet_drop": {}}
        for (kind, command, outcome), n in counted.items():
            command = _who(kind, command)
            if kind in by_kind:
                by_kind[kind][(command, outcome)] = by_kind[kind].get((command, outcome), 0) + n
        connects = CounterMetricFamily("netspy_connects", "connect() attempts counted in the kernel since this server "
                                       "started (an aggregator: its agents' events it took in since), by process "
                                       "(top N, then 'other') and outcome.", labels=["process", "outcome"])  # fmt: skip
        pending = GaugeMetricFamily("netspy_connects_in_progress", "Non-blocking connects whose outcome is not "
                                    "known yet.")  # fmt: skip
        drops = CounterMetricFamily("netspy_packet_drops", "Packets the kernel dropped since this server started, "
                                    "by process (top N, then 'other'; '(kernel)': in kernel context, no process) "
                                    "and reason.",
                                    labels=["process", "reason"])  # fmt: skip
        in_progress = 0
        for kind, family in (("connection", connects), ("packet_drop", drops)):
            rows = by_kind[kind]
            totals: dict[str, int] = {}
            for (command, _), n in rows.items():
                if command not in (OTHER, KERNEL_CONTEXT):  # (the kernel is no process: its own label always)
                    totals[command] = totals.get(command, 0) + n
            budget = self._budgets[kind]
            budget.assign(totals)
            if kind == "packet_drop":
                reasons: dict[str, int] = {}
                for (_, reason), n in rows.items():
                    reasons[reason] = reasons.get(reason, 0) + n
                self._reasons.assign(reasons)
            merged: dict[tuple[str, str], int] = {}
            for (command, outcome), n in rows.items():
                if kind == "connection" and outcome == "in_progress":
                    in_progress += n
                    continue
                if kind == "packet_drop":
                    outcome = self._reasons.label(outcome)
                process = command if command == KERNEL_CONTEXT else budget.label(command)
                key = (clean(process, None), clean(outcome, MAX_REASON_CHARS))
                merged[key] = merged.get(key, 0) + n
            for (process, outcome), n in sorted(merged.items()):
                family.add_metric([process, outcome], float(max(n, 0)))
        pending.add_metric([], float(max(in_progress, 0)))
        return [connects, pending, drops]


def counted_of(source: Any) -> Mapping[tuple[str, str, str], int] | None:
    """The source's exact counts since it opened, when it keeps them (the embedded collector)."""
    method = getattr(source, "counted_since_open", None)
    return method() if callable(method) else None
