"""What the user narrowed the view to: the client-side filter, the subject it implies, tab labels. No widgets."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

from netspy_tui.analysis.describe import destination_text
from netspy_tui.models import ConnectionEvent, PacketDropEvent, ProcessStat, Scope, TrafficProcess

E = TypeVar("E", ConnectionEvent, PacketDropEvent)


class EventFilter:
    """Client-side narrowing by process name, pid, destination, workload or node (case-insensitive substring;
    pid prefix)."""

    def __init__(self, text: str, focus: Scope | None) -> None:
        self.text = text.strip()
        self.needle = self.text.casefold()
        self.focus = focus

    @property
    def active(self) -> bool:
        return bool(self.needle) or self.focus is not None

    def _focus_ok(self, pid: int, command: str) -> bool:
        f = self.focus
        if f is None:
            return True
        if f.command is not None:
            return command == f.command
        return pid == f.pid

    def events(self, events: Sequence[E]) -> Sequence[E]:
        """The events that pass, in order (``events`` itself when nothing narrows). A focus alone compares one field
        (a focus key with ~12,000 events held: ~1 ms instead of ~5 ms through :meth:`event`)."""
        if not self.active:
            return events
        f = self.focus
        if f is not None and not self.needle:
            if f.command is not None:
                command = f.command
                return [e for e in events if e.command == command]
            pid = f.pid
            return [e for e in events if e.pid == pid]
        return [e for e in events if self.event(e)]

    def event(self, e: ConnectionEvent | PacketDropEvent) -> bool:
        if not self._focus_ok(e.pid, e.command):
            return False
        n = self.needle
        if not n:
            return True
        if n.isdigit() and str(e.pid).startswith(n):
            return True
        dest = destination_text(e) if isinstance(e, ConnectionEvent) else (e.destination or e.drop_reason)
        names = (e.hostname, e.workload, e.k8s_node_name, e.peer_ip) if isinstance(e, ConnectionEvent) else \
            (e.k8s_node_name,)  # fmt: skip
        return n in e.command.casefold() or n in dest.casefold() or any(x and n in x.casefold() for x in names)

    def process(self, p: ProcessStat) -> bool:
        n = self.needle
        if not n:
            return True
        return (
            n in p.command.casefold()
            or (n.isdigit() and any(str(pid).startswith(n) for pid in p.pids))
            or any(n in w.casefold() for w in (*p.workloads, *p.nodes))
        )

    def row(self, command: str, pids: Sequence[int], texts: Iterable[str]) -> bool:
        """A Traffic view row: its process (``""`` for a row several processes share), pids and other text
        (addresses, names). The focus narrows the tool calls already; a shared row passes it."""
        if self.focus is not None and command and not any(self._focus_ok(p, command) for p in pids or (0,)):
            return False
        n = self.needle
        if not n:
            return True
        if n.isdigit() and any(str(pid).startswith(n) for pid in pids):
            return True
        return n in command.casefold() or any(n in t.casefold() for t in texts)


def subject_for_filter(
    text: str, processes: Iterable[ProcessStat], nodes: Iterable[str] = (), traffic: Iterable[TrafficProcess] = ()
) -> Scope | None:
    """A filter that is exactly a known pid, process name or node (an aggregator's) narrows the tool calls too.
    Known: from the connect attempts' process list, and from the traffic report's processes (a server that
    only accepts connections is in the second only)."""
    text = text.strip()
    if not text:
        return None
    if text in set(nodes):
        return Scope(node=text)
    procs: list[ProcessStat | TrafficProcess] = [*processes, *traffic]
    if text.isdigit() and any(int(text) in p.pids for p in procs):
        return Scope(pid=int(text))
    if any(p.command == text for p in procs):
        return Scope(command=text)
    return None


def tab_label(name: str, rows: int, total: int | None, searched: int | None = None, gapped: bool = False) -> str:
    """``Connections (1,003)``, or ``Connections (latest 2,000 of 14,946)`` when the window holds more events
    than the table keeps (``total``: the window's count from the pattern analysis, None when not known), or
    ``Connections (3 in the latest 2,000)`` when a text filter could search only the ``searched`` rows kept of
    a window that held more (older matches are not shown: the count is not the window's). ``gapped``: rows held are
    older than events not held (a burst's unfetched middle, events the source shed): not "latest", and ", gaps"."""
    latest, gaps = ("", ", gaps") if gapped else ("latest ", "")
    if searched is not None:
        return f"{name} ({rows:,} in the {latest}{searched:,}{gaps})"
    if total is not None and total > rows:
        return f"{name} ({latest}{rows:,} of {total:,}{gaps})"
    return f"{name} ({rows:,}{gaps})"


def with_workloads(processes: Sequence[ProcessStat], events: Iterable[ConnectionEvent]) -> list[ProcessStat]:
    """``processes`` with the workloads their pids' connections carry, for rows whose source did not list any
    (the all-traffic ranking comes from ``analyze_patterns``, which has no workloads; ``list_processes`` has)."""
    by_pid: dict[int, str] = {}
    for e in events:
        if e.workload:
            by_pid[e.pid] = e.workload
    if not by_pid:
        return list(processes)
    out = []
    for p in processes:
        if not p.workloads:
            found = list(dict.fromkeys(by_pid[pid] for pid in p.pids if pid in by_pid))
            if found:
                p = p.model_copy(update={"workloads": found})
        out.append(p)
    return out
