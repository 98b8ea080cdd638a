"""A local, deterministic explanation of one process's network behaviour, for when no AI is configured.

Reads the same context as the AI (see :mod:`netspy_tui.ai.context`) and states the figures with a
few fixed rules: failure ratio, refused/unreachable bursts, ephemeral port exhaustion, rate spikes, unusual
ports, packet drops, and where the source counts them bytes moved, retransmits, slow connects and accepted
connections.
Untrusted strings (process names, hosts, drop reasons) are cleaned and shown as code spans, so they
can neither break the Markdown nor pass for markup.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from netspy_tui.ai.context import ParsedContext, parse_context
from netspy_tui.ai.settings import ENV_API_KEY, ENV_BASE_URL
from netspy_tui.analysis.aggregate import FAILED_OUTCOMES, second_of
from netspy_tui.analysis.describe import duration_us, human_bytes, name_of
from netspy_tui.models import ConnectionEvent, Counted, PatternAnalysis, ns_to_time
from netspy_tui.textsafe import clean

TITLE = "Local rule-based explanation — no AI model configured"
ENABLE_AI = (
    f"_For an AI explanation, set `{ENV_API_KEY}` (OpenAI) or `{ENV_BASE_URL}` "
    "(a local OpenAI-compatible server such as Ollama, llama.cpp or vLLM)._"
)

#: A failure ratio at or above this (with at least MIN_ATTEMPTS attempts) is flagged.
HIGH_FAILURE_RATIO = 0.2
MIN_ATTEMPTS = 5
#: This many refused (or unreachable) attempts within BURST_SECONDS is a burst.
BURST_MIN = 5
BURST_SECONDS = 10.0
#: A rate bucket at least SPIKE_FACTOR times the window average (and at least SPIKE_MIN events) is a spike.
SPIKE_FACTOR = 3.0
SPIKE_MIN = 5
#: Destination ports of common services; others are listed as unusual.
COMMON_PORTS = frozenset(
    {
        20,
        21,
        22,
        23,
        25,
        53,
        67,
        68,
        80,
        88,
        110,
        111,
        123,
        137,
        138,
        139,
        143,
        161,
        389,
        443,
        445,
        465,
        514,
        587,
        631,
        636,
        853,
        873,
        993,
        995,
        1194,
        1433,
        1521,
        2049,
        2375,
        2376,
        2379,
        2380,
        3128,
        3306,
        3389,
        4317,
        4318,
        5060,
        5222,
        5353,
        5432,
        5671,
        5672,
        5900,
        6379,
        6443,
        8000,
        8008,
        8080,
        8443,
        8888,
        9000,
        9090,
        9092,
        9093,
        9100,
        9200,
        9418,
        10250,
        11211,
        27017,
    }
)
TOP_N = 5
#: Connect latency at or above this at p95 is flagged (a SYN the kernel had to send again waits ~1 s).
SLOW_CONNECT_US = 500_000
#: Retransmitted TCP segments are flagged from this many in the window, when they are at least
#: RETRANSMIT_SHARE of the segments sent (estimated as bytes sent / SEGMENT_BYTES; SYNs alone: always).
RETRANSMITS_MIN = 3
RETRANSMIT_SHARE = 0.01
SEGMENT_BYTES = 1448


def code(value: object, max_len: int = 60) -> str:
    """Untrusted ``value`` as a Markdown code span (cleaned, cut, any backticks fenced correctly)."""
    text = clean(value, max_len)
    longest = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _clock(value: datetime) -> str:
    return _utc(value).strftime("%H:%M:%S")


def _span(seconds: int) -> str:
    if seconds % 3600 == 0 and seconds >= 3600:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0 and seconds >= 60:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (plural or word + 's')}"


def _counted(items: list[Counted], limit: int = TOP_N, names: dict[str, str] | None = None) -> str:
    """``key ×count`` each; a destination with a name in ``names`` as ``name (address)``, as the tools show it."""
    out = []
    for c in items[:limit]:
        name = name_of(c.key, names or {})
        out.append(f"{code(name)} ({code(c.key)}) ×{c.count:,}" if name else f"{code(c.key)} ×{c.count:,}")
    return ", ".join(out)


def _who(ctx: ParsedContext) -> str:
    stats = ctx.patterns.stats if ctx.patterns else None
    command = ctx.command or (stats.command if stats else None) or (ctx.summary.process_name if ctx.summary else None)
    pid = ctx.pid if ctx.pid is not None else (stats.pid if stats else None)
    if pid is None and ctx.summary is not None:
        pid = ctx.summary.pid
    if command and pid is not None:
        return f"{code(command, 40)} (pid {pid})"
    if command:
        return code(command, 40)
    if pid is not None:
        return f"pid {pid}"
    return "all processes"


def _bursts(events: list[ConnectionEvent]) -> list[tuple[str, str]]:
    """(outcome, line) for each refused / unreachable burst among ``events``."""
    lines: list[tuple[str, str]] = []
    for outcome in ("refused", "unreachable"):
        hits = sorted((e for e in events if e.effective_outcome == outcome), key=lambda e: (_utc(e.time), e.timestamp))
        best: tuple[int, int] = (0, 0)  # (count, start index)
        start = 0
        window = timedelta(seconds=BURST_SECONDS)
        for end in range(len(hits)):
            while _utc(hits[end].time) - _utc(hits[start].time) > window:
                start += 1
            if end - start + 1 > best[0]:
                best = (end - start + 1, start)
        count, first = best
        if count < BURST_MIN:
            continue
        burst = hits[first : first + count]
        seconds = (_utc(burst[-1].time) - _utc(burst[0].time)).total_seconds()
        dest, dest_count = Counter(e.destination or e.destination_ip or "unknown" for e in burst).most_common(1)[0]
        target = f"all to {code(dest)}" if dest_count == count else f"mostly to {code(dest)} (×{dest_count:,})"
        lines.append(
            (
                outcome,
                f"**{outcome.capitalize()} burst:** {count:,} {outcome} connect() attempts within {seconds:.1f} s "
                f"({_clock(burst[0].time)}–{_clock(burst[-1].time)} UTC), {target}.",
            )
        )
    return lines


def _observed(patterns: PatternAnalysis) -> int:
    """The seconds of the window its figures were observed over (the window when not said)."""
    window = max(1, patterns.stats.window_seconds)
    return max(1, min(patterns.observed_seconds or window, window))


def _over(patterns: PatternAnalysis) -> str:
    """`` over the 5 min observed`` when less than the window was, else nothing."""
    observed = _observed(patterns)
    return f" over the {_span(observed)} observed" if observed < patterns.stats.window_seconds else ""


def _spike(ctx: ParsedContext) -> str | None:
    if ctx.patterns is None:
        return None
    stats = ctx.patterns.stats
    buckets = stats.rate_buckets
    if not buckets or stats.total <= 0:
        return None
    # the average over the seconds observed, not the whole window: steady traffic that began within it (a
    # recording, a collector started 5 minutes ago in a 1-hour window) is no spike
    observed = _observed(ctx.patterns)
    mean = stats.total * stats.bucket_seconds / observed
    peak = max(buckets)
    if peak < SPIKE_MIN or peak < SPIKE_FACTOR * mean:
        return None
    idx = buckets.index(peak)
    when = ""
    if stats.until is not None:
        # buckets are whole seconds, the last one ending with the second of ``until``
        last = second_of(_utc(stats.until)) - (len(buckets) - 1 - idx) * stats.bucket_seconds
        when = f" ending {_clock(ns_to_time((last + 1) * 1_000_000_000))} UTC"
    return (
        f"**Rate spike:** {_plural(peak, 'attempt')} in one {stats.bucket_seconds} s interval{when}, "
        f"{peak / mean:,.1f}× the {'window ' if observed >= stats.window_seconds else ''}average of {mean:,.1f} "
        f"per interval{_over(ctx.patterns)}."
    )


def _unusual_ports(ports: list[Counted]) -> list[Counted]:
    unusual = []
    for c in ports:
        try:
            port = int(c.key)
        except ValueError:
            continue
        if port != 0 and port not in COMMON_PORTS:
            unusual.append(c)
    return unusual


def _traffic(ctx: ParsedContext, bullets: list[str], flags: list[str], notes: list[str]) -> None:
    """Bytes, retransmits, connect latency and accepted connections, where the context has them."""
    traffic = ctx.traffic
    if traffic is not None:
        if traffic.tx_bytes or traffic.rx_bytes:
            line = (f"**Traffic:** sent {human_bytes(traffic.tx_bytes)} ({human_bytes(traffic.tx_rate)}/s), "
                    f"read {human_bytes(traffic.rx_bytes)} ({human_bytes(traffic.rx_rate)}/s)")  # fmt: skip
            peers = [r for r in traffic.remotes if r.remote]
            if peers:
                top = peers[0]
                line += (f"; most with {code(top.remote)} ({human_bytes(top.tx_bytes)} sent, "
                         f"{human_bytes(top.rx_bytes)} read)")  # fmt: skip
            bullets.append(line + ".")
        else:
            bullets.append("**Traffic:** no bytes sent or read over sockets in the window.")
        opened = [f"{n:,} {what}" for n, what in ((traffic.outbound_connections, "established"),
                  (traffic.inbound_connections, "accepted"), (traffic.closed_connections, "closed")) if n]  # fmt: skip
        if opened:
            bullets.append(f"**TCP connections:** {', '.join(opened)}.")
        if traffic.retransmits:
            n = traffic.retransmits
            segments = traffic.tx_bytes / SEGMENT_BYTES
            share = n / (segments + n) if segments else 1.0
            line = f"**Retransmits:** {n:,} TCP segment{'' if n == 1 else 's'} sent again"
            if segments:
                line += f" (about {share:.2%} of the segments sent)"
            worst = max(traffic.remotes, key=lambda r: r.retransmits, default=None)
            if worst is not None and worst.retransmits and worst.remote:
                line += f", {worst.retransmits:,} of them to {code(worst.remote)}"
            bullets.append(line + ".")
            if n >= RETRANSMITS_MIN and share >= RETRANSMIT_SHARE:
                flags.append(f"TCP retransmits ({n:,}" + (f", about {share:.1%} of segments)" if segments else ")"))
        if traffic.sampled:
            notes.append("**Note:** the byte counts are sampled from the kernel's TCP counters: UDP and connections "
                         "that came and went between two samples are missing.")  # fmt: skip
    latency = ctx.latency
    if latency is not None and latency.attempts:
        line = (f"**Connect latency:** {_plural(latency.attempts, 'TCP connect')}, p50 {duration_us(latency.p50_us)}, "
                f"p95 {duration_us(latency.p95_us)}, max {duration_us(latency.max_us)}")  # fmt: skip
        slowest = latency.destinations[0] if latency.destinations else None
        if slowest is not None and slowest.destination and len(latency.destinations) > 1:
            line += f"; slowest {code(slowest.destination)} (p95 {duration_us(slowest.p95_us)})"
        bullets.append(line + ".")
        if latency.p95_us >= SLOW_CONNECT_US and latency.attempts >= MIN_ATTEMPTS:
            flags.append(f"slow connects (p95 {duration_us(latency.p95_us)})")
    accepted = ctx.inbound_events
    if accepted:
        from_peers = Counter(e.peer_ip or "unknown" for e in accepted).most_common(TOP_N)
        ports = Counter(str(e.destination_port) for e in accepted).most_common(TOP_N)
        total = max(ctx.inbound_total, len(accepted))
        counted = "" if total == len(accepted) else f" (peers and ports of the newest {len(accepted):,})"
        bullets.append(
            f"**Inbound:** {total:,} connection{'' if total == 1 else 's'} accepted in the window{counted}, from "
            + ", ".join(f"{code(p)} ×{n:,}" for p, n in from_peers)
            + " on local port"
            + ("s " if len(ports) > 1 else " ")
            + ", ".join(f"{p} ×{n:,}" for p, n in ports)
            + "."
        )


def rule_based_explanation(subject: str, context: dict[str, Any]) -> str:
    """Markdown explaining ``subject`` from ``context`` (see :mod:`netspy_tui.ai.context`), deterministically.

    ``subject`` is the caller's label for the process (shown as a code span); the figures come from
    ``context``. A malformed context raises :class:`netspy_tui.errors.AIError` naming the field.
    """
    ctx = parse_context(context)
    lines: list[str] = [f"### {TITLE}", ""]
    header = f"**Subject:** {code(subject, 80)}" if subject.strip() else f"**Subject:** {_who(ctx)}"
    stats = ctx.patterns.stats if ctx.patterns else None
    window = stats.window_seconds if stats else (ctx.summary.duration_seconds if ctx.summary else None)
    if window:
        header += f" · last {_span(window)}"
    if ctx.source:
        header += f" · source: {code(ctx.source, 80)}"
    lines += [header, ""]

    flags: list[str] = []
    bullets: list[str] = []
    notes: list[str] = []
    total = stats.total if stats else (ctx.summary.count if ctx.summary and ctx.summary.kind == "connection" else None)

    gathered = any(part is not None for part in (ctx.packet_drops, ctx.traffic, ctx.latency)) or ctx.inbound_events
    if total is None and not ctx.recent_events and not gathered:
        bullets.append("No telemetry was gathered for this process, so there is nothing to explain yet.")
    elif total == 0:
        bullets.append("**Activity:** no connect() attempts in the window.")
    elif total is not None:
        activity = f"**Activity:** {_plural(total, 'connect() attempt')}"
        if ctx.patterns is not None:
            activity += f" ({ctx.patterns.rate_per_minute:,.1f} per minute{_over(ctx.patterns)})"
        if stats is not None and len(stats.processes) == 1:
            activity += f" to {_plural(stats.processes[0].distinct_destinations, 'distinct destination')}"
        if stats is not None and stats.first_seen and stats.last_seen:
            activity += f", first {_clock(stats.first_seen)}, last {_clock(stats.last_seen)} UTC"
        bullets.append(activity + ".")

    if stats is not None and stats.total > 0:
        outcomes = {c.key: c.count for c in stats.outcomes}
        failures = sum(n for k, n in outcomes.items() if k in FAILED_OUTCOMES)
        ratio = ctx.patterns.failure_ratio if ctx.patterns else 0.0
        mix = ", ".join(f"{code(c.key, 20)} {c.count:,}" for c in stats.outcomes)
        line = f"**Outcomes:** {mix} — {failures:,} of {stats.total:,} failed (failure ratio {ratio:.1%})"
        if ratio >= HIGH_FAILURE_RATIO and stats.total >= MIN_ATTEMPTS:
            line += ", **high**"
            flags.append(f"a high failure ratio ({ratio:.1%})")
        bullets.append(line + ".")
        if stats.top_destinations:
            names = ctx.patterns.hostnames if ctx.patterns is not None else {}
            bullets.append(f"**Top destinations:** {_counted(stats.top_destinations, names=names)}.")
        unusual = _unusual_ports(stats.ports)
        if unusual:
            bullets.append(f"**Unusual ports:** {_counted(unusual)} (not common service ports).")
            flags.append("connections to unusual ports")
        in_progress = outcomes.get("in_progress", 0)
        if in_progress:
            notes.append(
                f"**Note:** {_plural(in_progress, 'attempt')} ended in_progress: non-blocking connect() calls "
                "whose final result was not observed (they may have succeeded or failed later)."
            )
        no_port = outcomes.get("no_port", 0)
        if no_port:
            bullets.append(
                f"**No local port:** {_plural(no_port, 'connect() attempt')} failed with EADDRNOTAVAIL: this host "
                "had no free ephemeral port for the destination (`net.ipv4.ip_local_port_range`; sockets in "
                "TIME_WAIT hold ports; pooled or kept-alive connections need fewer)."
            )
            flags.append("ephemeral port exhaustion")
        unknown = outcomes.get("unknown", 0)
        if unknown:
            notes.append(
                f"**Note:** the outcome of {_plural(unknown, 'attempt')} is unknown (the source reports no result)."
            )

    for outcome, line in _bursts(ctx.recent_events):
        bullets.append(line[:-1] + f" (among the {len(ctx.recent_events):,} most recent events).")
        flags.append(f"a burst of {outcome} connections")

    spike = _spike(ctx)
    if spike:
        bullets.append(spike)
        flags.append("a rate spike")

    if ctx.packet_drops is not None:
        drops = ctx.packet_drops.stats
        if drops.total:
            rate = ctx.packet_drops.rate_per_minute
            line = f"**Packet drops:** {_plural(drops.total, 'drop')} ({rate:,.1f} per minute{_over(ctx.packet_drops)})"
            if drops.outcomes:
                line += f"; kernel reasons: {_counted(drops.outcomes)}"
            bullets.append(line + ".")
            flags.append("packet drops")
        else:
            bullets.append("**Packet drops:** none in the window.")

    _traffic(ctx, bullets, flags, notes)

    if ctx.sampled:
        notes.append(
            "**Note:** the data is sampled (procfs), so short-lived connections may be missing from these figures."
        )

    lines += [f"- {b}" for b in bullets + notes]
    lines.append("")
    if flags:
        lines.append(f"**Worth a look:** {', '.join(flags)}.")
    elif total:
        lines.append("**Assessment:** nothing in these figures stands out.")
    lines += ["", ENABLE_AI]
    return "\n".join(lines).replace("\n\n\n", "\n\n")
