"""Readable text for tool results, in the Go netspy's wording. Pure functions, all untrusted
strings passed through :func:`netspy_tui.textsafe.clean`."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from netspy_tui.models import (
    KERNEL_CONTEXT,
    ConnectionEvent,
    EventKind,
    GroupStat,
    LatencyStats,
    PacketDropEvent,
    ProcessStat,
    TrafficStats,
    WindowStats,
    describe_losses,
    errno_name,
)
from netspy_tui.names.resolver import address_of
from netspy_tui.textsafe import clean


def subject(pid: int | None, command: str | None) -> str:
    """``Process 'curl'``, ``pid 1234``, ``Process 'curl' (PID 1234)`` or ``All processes``."""
    if command is not None and pid is not None:
        return f"Process '{clean(command, 64)}' (PID {pid})"
    if command is not None:
        return f"Process '{clean(command, 64)}'"
    if pid is not None:
        return f"pid {pid}"  # (the number alone, "Process 1234", reads as a count)
    return "All processes"


def _plural(n: int, word: str) -> str:
    """``1 process``, ``2 processes``, ``1,000 attempts``."""
    return f"{n} {word}" if n == 1 else f"{n:,} {word}{'es' if word.endswith('s') else 's'}"


def _process(command: str, pid: int | None = None, width: int = 32) -> str:
    """A process's name as text; a packet dropped where the kernel ran for no process (pid 0, no name) is
    :data:`~netspy_tui.models.KERNEL_CONTEXT` (``(kernel)``), as the lists, the dashboard and /metrics say."""
    if not command and not pid:
        return KERNEL_CONTEXT
    return clean(command, width)


def summary_text(kind: EventKind, count: int, pid: int | None, command: str | None, duration: int) -> str:
    who = subject(pid, command)
    if kind == "connection":
        return f"{who} made {_plural(count, 'outbound connection attempt')} over the last {duration} seconds"
    return f"{who} had {_plural(count, 'packet drop')} over the last {duration} seconds"


def time_of_day(event: ConnectionEvent | PacketDropEvent) -> str:
    """``12:56:30.000`` (UTC) for an event of today, with its date before it for another day's (a replay at
    its recorded times, a long window)."""
    t = event.time  # (formatted by hand: strftime was a fifth of a 100-event list's text)
    clock = f"{t.hour:02d}:{t.minute:02d}:{t.second:02d}.{t.microsecond // 1000:03d}"
    if t.timestamp() // 86400 != time.time() // 86400:
        return f"{t.year:04d}-{t.month:02d}-{t.day:02d} {clock}"
    return clock


def inbound_cell(e: ConnectionEvent) -> str:
    """An accepted connection in a table's Destination cell: the local port it came to (first: it stays in view
    in a narrow column), and who connected."""
    return f":{e.destination_port} ← {e.peer_ip or '?'}"


def connection_line(e: ConnectionEvent) -> str:
    if e.direction == "inbound":
        where = f" [{clean(e.workload, 40)}]" if e.workload and e.workload != "host" else ""
        return (
            f"{time_of_day(e)}  pid {e.pid:<7} {clean(e.command, 32):<15}{where} <- "
            f"{_endpoint(e.peer_ip or '', e.peer_port or 0):<28} {clean(e.protocol or '?', 16):<5} inbound, "
            f"accepted on {_endpoint(e.destination_ip, e.destination_port)}"
        )
    dest = clean(e.destination or e.destination_ip or "unknown", 60)
    if e.hostname:
        dest = f"{clean(e.hostname, 60)} ({dest})"
    if e.own_dns_query:
        dest += " [netspy-tui's own DNS query]"
    rc = "" if e.return_code == 0 else f" rc={errno_name(e.return_code)}"
    proto = clean(e.protocol or "?", 16) + ("?" if e.protocol_inferred else "")
    where = f" [{clean(e.workload, 40)}]" if e.workload and e.workload != "host" else ""
    return (
        f"{time_of_day(e)}  pid {e.pid:<7} {clean(e.command, 32):<15}{where} -> {dest:<28} "
        f"{proto:<5} {clean(e.effective_outcome, 16)}{rc}"
    )


def drop_line(e: PacketDropEvent) -> str:
    who = f"pid {e.pid:<7} {clean(e.command, 32):<15}" if e.pid else f"{KERNEL_CONTEXT:<27}"
    return f"{time_of_day(e)}  {who} {clean(e.drop_reason or 'UNKNOWN', 40)} ({e.packet_size_bytes:,} bytes)"


def list_text(
    kind: EventKind,
    events: Sequence[ConnectionEvent | PacketDropEvent],
    total: int,
    pid: int | None,
    command: str | None,
    sampled: bool = False,
    direction: str = "outbound",
    before: str | None = None,
) -> str:
    """The page as text; when more are left, how to reach them: ``before`` (the page token of its last event) when
    the source gave one, else ``until``, unless every event shown has one time (then ``until`` of it lists them
    again: said so, not offered)."""
    noun = "connection events" if kind == "connection" else "packet drops"
    if kind == "connection" and direction != "outbound":
        noun = "inbound connections" if direction == "inbound" else "connections (outbound and inbound)"
    who = subject(pid, command)
    if not events:
        lines = [f"No {noun} found for {who.lower() if who == 'All processes' else who}."]
    else:
        head = f"{who}: {len(events):,} of {total:,} {noun}, newest first"
        lines = [head]
        for e in events:
            lines.append(connection_line(e) if isinstance(e, ConnectionEvent) else drop_line(e))
        more = total - len(events)
        if more > 0 and before:
            # The list is newest first: the rest come after its last event, older or of its time (equal times: a
            # procfs sample's connections), and its page token goes on from that event, each event once.
            lines.append(
                f"({more:,} more, older than those shown or as old as the last: raise max_events (at most 1,000), "
                f"narrow with pid/process_name, or pass before={before} to page back)"
            )
        elif more > 0 and events[0].time == events[-1].time:
            # Without a token, until (at or before: the oldest shown comes again) of a page all of one time lists
            # that page again: nothing older is reached that way.
            lines.append(
                f"({more:,} more, older than those shown or as old: raise max_events (at most 1,000) or narrow with "
                "pid/process_name; every event shown has the same time, so until=<that time> would list them again "
                "(this list has no page token to go on inside one time))"
            )
        elif more > 0:
            # The rest are older, reached by until (at or before: the oldest shown comes again), not by since
            # (strictly newer: only what arrived after this list).
            lines.append(
                f"({more:,} more, older than those shown: raise max_events (at most 1,000), narrow "
                f"with pid/process_name, or pass until=<time of the oldest event shown> to page back)"
            )
    if sampled and kind == "connection":
        lines.append("Note: the source samples sockets every interval; short-lived connections can be missed.")
    return "\n".join(lines)


def _mix(items: Sequence[object]) -> str:
    return ", ".join(f"{clean(getattr(c, 'key', ''), 60)} {getattr(c, 'count', 0):,}" for c in items) or "none"


def name_of(key: str, names: Mapping[str, str]) -> str | None:
    """The name ``names`` has for a destination key (``addr:port`` or an address), None when it has none."""
    return names.get(address_of(key) or key)


def _named_mix(items: Sequence[object], names: Mapping[str, str]) -> str:
    """Like :func:`_mix`, a destination's name before its address when it has one."""
    out = []
    for c in items:
        key = str(getattr(c, "key", ""))
        name = name_of(key, names)
        label = f"{clean(name, 60)} ({clean(key, 60)})" if name else clean(key, 60)
        out.append(f"{label} {getattr(c, 'count', 0):,}")
    return ", ".join(out) or "none"


def patterns_text(
    stats: WindowStats,
    rate_per_minute: float,
    failure_ratio: float,
    names: Mapping[str, str] | None = None,
    observed: int | None = None,
) -> str:
    """``observed``: the seconds of the window the rate is over, when fewer than the window's (said then)."""
    who = subject(stats.pid, stats.command)
    if stats.kind == "connection":
        head = summary_text("connection", stats.total, stats.pid, stats.command, stats.window_seconds)
    else:
        head = summary_text("packet_drop", stats.total, stats.pid, stats.command, stats.window_seconds)
    if stats.total == 0:
        return f"{head}. No pattern to analyse for {who}."
    partly = observed is not None and observed < stats.window_seconds
    over = f" over the {observed:,} seconds observed" if partly else ""
    lines = [f"{head} ({rate_per_minute:,.1f} per minute{over})."]
    lines.append("Top destinations: " + _named_mix(stats.top_destinations, names or {}))
    lines.append("Protocols: " + _mix(stats.protocols))
    if stats.kind == "connection":
        lines.append("Ports: " + _mix(stats.ports))
        lines.append(f"Outcomes: {_mix(stats.outcomes)} (failure ratio {failure_ratio:.0%})")
    else:
        lines.append("Drop reasons: " + _mix(stats.outcomes))
    if stats.first_seen and stats.last_seen:
        lines.append(f"First seen {stats.first_seen:%Y-%m-%d %H:%M:%S} UTC, last seen {stats.last_seen:%H:%M:%S} UTC.")
    if len(stats.processes) > 1:
        lines.append("Processes: " + ", ".join(f"{_process(p.command, min(p.pids, default=0))} {p.attempts:,}"
                                               for p in stats.processes[:5]))  # fmt: skip
    return "\n".join(lines)


def processes_text(kind: EventKind, processes: Sequence[ProcessStat], duration: int) -> str:
    noun = "connection attempts" if kind == "connection" else "packet drops"
    if not processes:
        return f"No {noun} in the last {duration} seconds."
    lines = [f"Top processes by {noun} over the last {duration} seconds:"]
    for p in processes:
        pids = ",".join(str(x) for x in p.pids[:5]) + ("…" if len(p.pids) > 5 else "")
        shown = [clean(w, 40) for w in p.workloads[:3]] + (["…"] if len(p.workloads) > 3 else [])
        where = f"  in {', '.join(shown)}" if shown else ""
        if kind == "connection":
            counts = f"{_plural(p.attempts, 'attempt'):>14}  {_plural(p.distinct_destinations, 'destination'):>16}  "
            counts += f"{_plural(p.failures, 'failure'):>14}"
        else:  # (a drop is not an attempt, all of them are drops, and they name no destination: the count alone)
            counts = f"{_plural(p.attempts, 'drop'):>14}"
        lines.append(f"  {_process(p.command, min(p.pids, default=0)):<15} pids {pids:<14} {counts}{where}")
    return "\n".join(lines)


def groups_text(kind: EventKind, group_by: str, groups: Sequence[GroupStat], duration: int) -> str:
    """``list_processes`` by node or workload: one line a group."""
    noun = "connection attempts" if kind == "connection" else "packet drops"
    if not groups:
        return f"No {noun} in the last {duration} seconds."
    lines = [f"{noun.capitalize()} by {group_by} over the last {duration} seconds:"]
    for g in groups:
        shown = ", ".join(clean(p, 20) for p in g.processes[:5]) + (", …" if len(g.processes) > 5 else "")
        if kind == "connection":
            counts = f"{_plural(g.attempts, 'attempt'):>15}  {_plural(g.failures, 'failure'):>14}"
        else:
            counts = f"{_plural(g.attempts, 'drop'):>15}"
        lines.append(f"  {clean(g.key, 40):<24} {counts}  ({shown})")
    return "\n".join(lines)


def filter_note(node: str | None, workload: str | None) -> str:
    """``Only node worker-1, workload docker 3f2a….`` ('' when neither)."""
    parts = [f"{what} {clean(value, 60)}" for what, value in (("node", node), ("workload", workload)) if value]
    return f"Only {', '.join(parts)}." if parts else ""


#: the kernel's process names (``comm``: TASK_COMM_LEN - 1 characters)
COMM_CHARS = 15


def comm_note(process_name: str | None, count: int) -> str:
    """When nothing matched a process name longer than the kernel keeps: what it is there ('' otherwise)."""
    if count or process_name is None or len(process_name) <= COMM_CHARS:
        return ""
    return (f"Process names are the kernel's, at most {COMM_CHARS} characters: "
            f"'{clean(process_name, 64)}' is '{clean(process_name[:COMM_CHARS], 64)}' there.")  # fmt: skip


def loss_note(losses: dict[str, int]) -> str:
    """``Note: in this window 12,345 raw events shed under load; counts are exact.`` ('' when none)."""
    text = describe_losses(losses, "in this window")
    return f"Note: {text}." if text else ""


def not_kept_note(
    not_kept: int, since: datetime | None, until: datetime | None, kind: EventKind = "connection", listed: bool = True
) -> str:
    """``Note: 2,000 more events between 12:00:01 and 12:00:04 were counted but not kept ...``; for an empty list
    (``listed`` False), how many the counts have in its window though none of their events is left."""
    if not_kept <= 0:
        return ""
    span = ""
    if since and until:  # times of day for a span within a day, else dates too
        form = "%H:%M:%S" if until - since < timedelta(days=1) else "%Y-%m-%d %H:%M"
        span = f" between {since:{form}} and {until:{form}} UTC"
    if not listed:
        noun = "connection attempt" if kind == "connection" else "packet drop"
        return (
            f"Note: {_plural(not_kept, noun)} counted{span}, but their events were not kept (shed under load, or "
            "removed by the store's row limit or retention); summary and analyze have the exact counts."
        )
    return (
        f"Note: {not_kept:,} more events{span} were counted but not kept as raw events (shed under load); "
        "counts and summaries include them."
    )


def not_events_note(not_events: int) -> str:
    """``Note: the server sent 1 item that is not an event (null, ...); it was skipped.`` ('' when none)."""
    if not_events <= 0:
        return ""
    if not_events == 1:
        return "Note: the server sent 1 item that is not an event (null or an unknown kind); it was skipped."
    return (
        f"Note: the server sent {not_events:,} items that are not events (null or an unknown kind); they were skipped."
    )


def with_notes(text: str, *notes: str) -> str:
    return "\n".join([text, *(n for n in notes if n)])


def destination_text(event: ConnectionEvent) -> str:
    """Where a connection went, as the table and the exports show it."""
    if event.destination:
        return event.destination
    if event.destination_ip:
        return f"{event.destination_ip}:{event.destination_port}"
    return "(no address)" if event.address_family == 1 else "unknown"


def human_bytes(n: float) -> str:
    """``999 B``, ``1.2 kB``, ``40.0 MB`` (decimal units, as bandwidth is usually given)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} TB"  # (not reached)


def _endpoint(address: str, port: int) -> str:
    if not address:
        return "(no peer)" if not port else f"*:{port}"
    address = clean(address, 64)
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def traffic_text(stats: TrafficStats) -> str:
    """Totals, then the top processes, remote addresses and connections by bytes moved."""
    who = subject(stats.pid, stats.command)
    window = stats.window_seconds
    if not stats.available and stats.unavailable_reason:
        return f"Traffic is not counted here: {clean(stats.unavailable_reason, 300)}."
    if not stats.available:
        return (
            "Traffic is not counted by this source: bytes per process need the eBPF collector on a kernel with "
            "sock/sock_send_length and sock/sock_recv_length (6.3 or later), or procfs sampling where the kernel "
            "answers socket diagnostics (TCP only)."
        )
    if not stats.total_flows:
        return f"{who} sent and read no bytes over sockets in the last {window} seconds."  # (and retransmitted none)
    lines = [
        f"{who} sent {_plural(stats.tx_bytes, 'byte')} ({human_bytes(stats.tx_rate)}/s) and read "
        f"{_plural(stats.rx_bytes, 'byte')} "
        f"({human_bytes(stats.rx_rate)}/s) over the last {window} seconds, in "
        f"{_plural(stats.total_flows, 'connection')} of {_plural(stats.total_processes, 'process')}"
        + (f"; {_plural(stats.retransmits, 'TCP segment')} retransmitted" if stats.retransmits else "")
        + (
            f"; {stats.inbound_connections:,} inbound and {stats.outbound_connections:,} outbound TCP connections "
            "opened."
            if stats.inbound_connections or stats.outbound_connections
            else "."
        ),
        "Processes (sent / read):",
    ]
    for p in stats.processes:
        pids = ",".join(str(x) for x in p.pids[:5]) + ("…" if len(p.pids) > 5 else "")
        lines.append(
            f"  {clean(p.command, 32):<15} pids {pids:<14} {human_bytes(p.tx_bytes):>10} "
            f"({human_bytes(p.tx_rate)}/s) / {human_bytes(p.rx_bytes)} ({human_bytes(p.rx_rate)}/s)"
            + (f"  {_plural(p.retransmits, 'retransmit')}" if p.retransmits else "")
        )
    if stats.sampled:
        lines.insert(1, "Sampled from the kernel's per-connection TCP counters: connections that came and went "
                        "between two samples, and UDP, are not counted.")  # fmt: skip
    lines.append("Remote addresses (sent / read):")
    for r in stats.remotes:
        name = clean(r.remote, 64) if r.remote else "(no peer address)"
        lines.append(
            f"  {name:<40} {human_bytes(r.tx_bytes):>10} / {human_bytes(r.rx_bytes)}  "
            f"{', '.join(clean(c, 32) for c in r.commands[:5])}"
        )
    lines.append("Connections (sent / read):")
    for f in stats.flows:
        arrow = "<-" if f.direction == "inbound" else "->"
        lines.append(
            f"  {clean(f.command, 32)} ({f.pid}) {f.protocol or '?'} {f.direction or '-':<8} "
            f"{_endpoint(f.local, f.local_port)} {arrow} "
            f"{_endpoint(f.remote, f.remote_port)}: {f.tx_bytes:,} / {f.rx_bytes:,} bytes"
            + (f", {_plural(f.retransmits, 'retransmit')}" if f.retransmits else "")
            + (f", closed after {duration_us(f.lifetime_us)}" if f.lifetime_us is not None else "")
        )
    shown = max(len(stats.processes), len(stats.remotes), len(stats.flows))
    if stats.total_flows > len(stats.flows) or stats.total_processes > len(stats.processes):
        lines.append(
            f"(the top {shown} of each; {stats.total_flows:,} connections, "
            f"{stats.total_remotes:,} remote addresses in all)"
        )
    return "\n".join(lines)


def duration_us(us: int) -> str:
    """``850 µs``, ``12.3 ms``, ``1.02 s``."""
    if us < 1000:
        return f"{us} µs"
    if us < 1_000_000:
        return f"{us / 1000:.1f} ms"
    return f"{us / 1_000_000:.2f} s"


def latency_text(stats: LatencyStats) -> str:
    """Overall p50/p95, then per process and the slowest destinations."""
    who = subject(stats.pid, stats.command)
    window = stats.window_seconds
    if not stats.available and stats.unavailable_reason:
        return f"Connect latency is not measured here: {clean(stats.unavailable_reason, 300)}."
    if not stats.available:
        return "Connect latency is not measured by this source: it needs the eBPF collector."
    if not stats.attempts:
        return f"{who} finished no TCP connect handshakes in the last {window} seconds."
    lines = [f"{who}: {_plural(stats.attempts, 'TCP connect')} in the last {window} seconds took "
             f"p50 {duration_us(stats.p50_us)}, p95 {duration_us(stats.p95_us)}, max {duration_us(stats.max_us)}.",
             "Processes:"]  # fmt: skip
    for g in stats.processes:
        lines.append(
            f"  {clean(g.command, 32):<15} {_plural(g.attempts, 'connect'):>14}  p50 {duration_us(g.p50_us):>9}  "
            f"p95 {duration_us(g.p95_us):>9}  max {duration_us(g.max_us)}"
        )
    lines.append("Destinations (slowest p95 first):")
    for g in stats.destinations:
        mix = ", ".join(f"{n:,} {clean(o, 20)}" for o, n in sorted(g.outcomes.items(), key=lambda kv: -kv[1]))
        lines.append(
            f"  {clean(g.command, 32)} -> {clean(g.destination, 64)}: {_plural(g.attempts, 'connect')}  "
            f"p50 {duration_us(g.p50_us)}  p95 {duration_us(g.p95_us)}  max {duration_us(g.max_us)}  ({mix})"
        )
    if stats.total_destinations > len(stats.destinations):
        lines.append(f"(the slowest {len(stats.destinations)} of {stats.total_destinations:,} destinations)")
    return "\n".join(lines)
