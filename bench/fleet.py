"""Fleet: one aggregator (``serve --aggregate``) ingesting from 3 agents with the dashboard open on it.

The aggregator runs as the product runs it: ``python -m netspy_tui serve --aggregate`` in its own
process (real HTTP on 127.0.0.1, an ingest token, its per-node file stores in a scratch directory).
Three agent-shaped senders, each its own process and node (``bench-node-0..2``), post what ``serve --forward``
posts: contract ``{"events": [...]}`` bodies of 5,000 events (the forwarder's batch,
:data:`netspy_tui.serve.forward.BATCH`, which it posts when events come faster than it sends them) made by
:func:`netspy_tui.serve.app.event_json` from synthetic collector events (:mod:`bench.synth`, times over 50 s up to
6 s past the last minute before they are made: every run folds the same minute, :data:`NEWEST_PAST_MINUTE`), one
request at a time, as fast as the answers come (a 429 is waited out as the
forwarder would). Each sender encodes its bodies before the clock starts (an agent's encoding is its own CPU,
not the aggregator's). Meanwhile the dashboard is open on the aggregator: a headless ``NetspyApp`` over
``HttpSource`` following its ``/api/changes`` (a poll after each change, at most one a second), as
``netspy-tui --server URL`` does, with the 1 h window (making
100,000 events can take a loaded machine longer than a minute: they would be out of the 60 s window before
they are sent).

Figures: events/s = events the aggregator accepted / wall time from the first post to the last
answer; the aggregator's CPU over that time; dashboard polls made and failed. Exactness: the
aggregator's ``/api/stats`` per-node counts must equal what each sender had accepted.

Forwarding cost: two agents, one with ``--forward`` to an aggregator (its own process, not counted), one
without, side by side; each agent's CPU over the same seconds. The figure (the target's) is the median ratio of
the rounds with agents as the product runs them on a host: ``serve --collector ebpf`` with the eBPF reader's
output, ring records at 2,000 events/s handed to ``sink.ingest`` as :class:`bench.soak.SyntheticCollector` does
(``python -m bench.fleet --agent RATE SERVE_ARGS``: the CLI's own ``serve``, only the collector it starts is the
synthetic one). The store keeps ring records as records, so the forwarder builds every event it sends; a
``--replay`` agent's events are stored as JSON, which the forwarder re-encodes (cheaper), and it parses every
line (dearer): the same with ``serve --replay REC --replay-speed 1`` (a recording of 2,000 events/s of the same
synthetic events) is the second figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from bench import synth
from bench.common import PY, REPO, Context, FailedPolls, Metric, child_env, free_port, metric
from netspy_tui.serve.forward import BATCH as FORWARD_BATCH

NAME = "fleet"
TARGET_EPS = 50_000.0
TARGET_FORWARD = 1.05  # agent CPU with forwarding / without
AGENT_RATE = 2_000.0  # events/s of each agent in the forwarding cost
AGENTS = 3
BATCH = FORWARD_BATCH  # serve --forward's batch: what it posts when events come faster than it sends them
TOKEN = "bench-ingest-token"  # noqa: S105 (a throwaway token for a loopback bench)
#: seconds the senders' events span
SPAN = 50.0
#: the newest event is this many seconds past a minute, so that every run does the same minute folds: a store folds
#: a minute into its minute and hour tables once its data is 5 s past it (``store/spans.py``), here the minute that
#: holds the events of the first 44 s (88 %), as a running aggregator folds each of its minutes once. With the events
#: just before they were made, whether a run folded a minute, and how many of its events, was the clock's doing:
#: 67,900-83,300 events per CPU-second for the same code (``scripts/diag_fleet_ingest.py``)
NEWEST_PAST_MINUTE = 6.0


def _mean_gap(times: list[float]) -> float | None:
    """The mean time between successive ``times`` (None for fewer than two)."""
    return (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else None


def newest_time(past_minute: float = NEWEST_PAST_MINUTE) -> int:
    """The newest event's time (ns): the last instant before now ``past_minute`` seconds past a minute."""
    now, step = time.time_ns(), 60_000_000_000
    offset = int(past_minute * 1e9)
    return (now - offset) // step * step + offset


def make_bodies(node: str, events: int, seed: int, newest_ns: int | None = None, span: float = SPAN) -> list[bytes]:
    """``events`` synthetic events of ``node`` as forwarder bodies of :data:`BATCH` events, over the ``span``
    seconds up to ``newest_ns`` (default: :func:`newest_time`)."""
    from netspy_tui.serve.app import event_json

    identity = {"k8s_node_name": node}
    bodies = []
    newest = newest_time() if newest_ns is None else newest_ns
    for chunk in synth.event_batches(events, span, seed=seed, batch=BATCH, now_wall_ns=newest):
        items = [event_json(e, identity) for e in chunk]
        for item in items:
            item.update(identity)
        bodies.append(json.dumps({"events": items}, separators=(",", ":")).encode())
    return bodies


def sender(url: str, node: str, events: int, seed: int, newest_ns: int) -> dict[str, Any]:
    """One agent: make its bodies (events of the 50 s up to ``newest_ns``), then, on the go signal, post them in
    order, one at a time."""
    bodies = make_bodies(node, events, seed, newest_ns)
    accepted = duplicates = rejected = throttled = 0
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    with httpx.Client(timeout=60) as client:
        print("ready", flush=True)
        sys.stdin.readline()  # the go signal: every sender starts together
        t0, c0 = time.perf_counter(), time.process_time()
        for body in bodies:
            while True:
                r = client.post(url, content=body, headers=headers)
                if r.status_code == 429:
                    throttled += 1
                    time.sleep(float(r.headers.get("retry-after", "1")))
                    continue
                r.raise_for_status()
                answer = r.json()
                accepted += answer["events_processed"]
                duplicates += answer["duplicates"]
                rejected += answer["rejected_count"]
                break
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"accepted": accepted, "duplicates": duplicates, "rejected": rejected, "throttled": throttled,
            "seconds": seconds, "cpu": cpu, "batches": len(bodies)}  # fmt: skip


def _spawn(argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
    """A product or sender process (started from the async measurement: it does not block)."""
    return subprocess.Popen(argv, env=child_env(), cwd=REPO, **kw)


def _stop(proc: subprocess.Popen[Any]) -> None:
    """Stop a product process (SIGTERM: it shuts down as a user's would), killed if it does not."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _wait_health(url: str, proc: subprocess.Popen[bytes], limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the aggregator exited ({proc.returncode}) before it answered")
            try:
                if (await client.get(f"{url}/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the aggregator did not answer /health")
            await asyncio.sleep(0.1)


def tree_cpu(proc: psutil.Process) -> tuple[float, float]:
    """CPU seconds (user + system) of ``proc`` and of its child processes now (the aggregator's checking processes)."""
    own = sum(proc.cpu_times()[:2])
    children = 0.0
    for child in proc.children(recursive=True):
        try:
            children += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return own, children


async def ingest(tmp: Path, per_agent: int, log: Any, interval: float = 1.0,
                 processes: int | None = None) -> dict[str, Any]:  # fmt: skip
    from netspy_tui.mcp_tools.gateway import open_gateway
    from netspy_tui.telemetry.client import HttpSource
    from netspy_tui.tui.app import NetspyApp

    nodes = [f"bench-node-{i}" for i in range(AGENTS)]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    flags = [] if processes is None else ["--ingest-processes", str(processes)]
    agg = _spawn(
        [PY, "-m", "netspy_tui", "serve", "--aggregate", "--port", str(port), "--ingest-token", TOKEN,
         "--db", str(tmp / "fleet-stores"), *flags],
        stdout=subprocess.DEVNULL, stderr=(tmp / "fleet-aggregator.log").open("wb"),
    )  # fmt: skip
    senders: list[subprocess.Popen[str]] = []
    try:
        await _wait_health(url, agg)
        agg_proc = psutil.Process(agg.pid)
        source = HttpSource(url, read_timeout=30, retries=0)
        async with open_gateway(source) as gateway:
            # (freeze_heap: as the CLI runs it; without, the collector's default passes walked the window's thousands
            # of events and rows again and again: ~0.9 s of full passes a run, the dashboard 37 % of a core, not 26)
            app = NetspyApp(gateway, interval=interval, window=3600, freeze_heap=True)
            failed = FailedPolls(app)
            async with app.run_test(headless=True, size=(160, 45)) as pilot:
                deadline = time.monotonic() + 60
                while app.polls < 1:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the dashboard's first poll of the aggregator did not come")
                    await pilot.pause(0.05)
                newest = newest_time()  # (one for all: the senders fold the same minute)
                for i, node in enumerate(nodes):
                    senders.append(_spawn(
                        [PY, "-m", "bench.fleet", "--sender", f"{url}/api/events/ingest", node, str(per_agent),
                         str(40 + i), str(newest)],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                    ))  # fmt: skip
                for s in senders:
                    assert s.stdout is not None
                    if (await asyncio.to_thread(s.stdout.readline)).strip() != "ready":
                        raise RuntimeError("a sender did not start")
                polls0 = app.polls
                me = psutil.Process()
                (cpu0, kids0), me0 = tree_cpu(agg_proc), sum(me.cpu_times()[:2])
                t0 = time.perf_counter()
                for s in senders:
                    assert s.stdin is not None
                    s.stdin.write("go\n")
                    s.stdin.flush()
                peak = 0

                poll_times: list[float] = []  # when each poll during the ingest was seen done (s after go)

                async def watch() -> None:  # what the dashboard shows while it ingests, and when it polls
                    nonlocal peak
                    seen = app.polls
                    while True:
                        peak = max(peak, app.dashboard.connections.row_count)
                        if app.polls != seen:
                            seen = app.polls
                            poll_times.append(time.perf_counter() - t0)
                        await asyncio.sleep(0.05)

                watcher = asyncio.create_task(watch())
                results = []
                for s in senders:
                    out, _ = await asyncio.to_thread(s.communicate, timeout=900)
                    if s.returncode != 0:
                        raise RuntimeError(f"a sender failed ({s.returncode})")
                    results.append(json.loads(out.strip().splitlines()[-1]))
                wall = time.perf_counter() - t0
                own, kids = tree_cpu(agg_proc)
                own, kids = own - cpu0, kids - kids0
                cpu = own + kids
                dashboard_cpu = sum(me.cpu_times()[:2]) - me0
                polls = app.polls - polls0
                watcher.cancel()
            async with httpx.AsyncClient(timeout=30) as client:
                stats = (await client.get(f"{url}/api/stats")).json()
        await source.aclose()
    finally:
        for s in senders:
            if s.poll() is None:
                s.kill()
                s.wait()
        _stop(agg)
    accepted = sum(r["accepted"] for r in results)
    exact = all(
        stats["events_by_node"].get(n) == r["accepted"] == per_agent for n, r in zip(nodes, results, strict=True)
    )
    return {
        "events": accepted,
        "seconds": wall,
        "eps": accepted / wall,
        "aggregator_cpu_pct": cpu / wall * 100,  # (its processes: the one that stores and those that check)
        "storing_cpu_pct": own / wall * 100,
        "checking_cpu_pct": kids / wall * 100,
        "senders_cpu_pct": sum(r["cpu"] for r in results) / wall * 100,
        "dashboard_cpu_pct": dashboard_cpu / wall * 100,
        "dashboard_polls": polls,
        # the first poll after go comes after the first batch stored (the dashboard follows /api/changes; a server
        # without it is polled on the idle backoff, up to 4 s: nothing came before go); once events flow, its polls
        # come an interval apart
        "dashboard_first_poll_s": poll_times[0] if poll_times else None,
        "dashboard_poll_gap_s": _mean_gap(poll_times),
        "dashboard_poll_failures": failed.n,
        "dashboard_rows": peak,
        "exact": exact,
        "events_by_node": stats["events_by_node"],
        "senders": results,
    }


def recording(path: Path, rate: float, seconds: float) -> Path:
    """A JSON-lines recording (``--replay``) of ``rate`` events/s over ``seconds``, as an agent collects them."""
    from netspy_tui.serve.app import event_json

    n = int(rate * seconds)
    lines = [json.dumps(event_json(e)).encode() for chunk in synth.event_batches(n, seconds, seed=9) for e in chunk]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def agent(rate: float, argv: list[str]) -> int:
    """``netspy-tui serve --collector ebpf ARGV`` as the CLI runs it, its collector handing the store ``rate`` ring
    records a second as the eBPF reader does (:class:`bench.soak.SyntheticCollector`): an agent on a host, without a
    kernel to make the events."""
    import netspy_tui.telemetry.embedded as embedded
    from bench.soak import SyntheticCollector
    from netspy_tui.cli import main

    cgroups = _cgroup_ids()

    class Collector(SyntheticCollector):
        def _records(self, n: int) -> Any:
            """As the kernel's: each process's cgroup id (those of this host's cgroups), none for a drop no
            process was charged with (what the forwarder makes the events' workloads of)."""
            recs = super()._records(n)
            if cgroups:
                ids = np.array(cgroups, np.uint64)[recs["pid"] % len(cgroups)] * (recs["pid"] > 0)
                recs["cgroup_lo"], recs["cgroup_hi"] = ids & np.uint64(0xFFFFFFFF), ids >> np.uint64(32)
            return recs

    def start(kind: str, sink: Any, **_: Any) -> tuple[SyntheticCollector, str]:
        collector = Collector(rate)
        collector.start(sink)
        return collector, f"synthetic eBPF ring records, {rate:g} a second"

    embedded.start_collector = start  # (the one thing the bench replaces)
    return main(["serve", "--collector", "ebpf", *argv])


def _cgroup_ids(most: int = 8) -> list[int]:
    """Up to ``most`` cgroup ids of this host (their directories' inode numbers under the cgroup2 mount)."""
    from netspy_tui.names.workload import cgroup2_mount

    mount = cgroup2_mount()
    if mount is None:
        return []
    ids = [mount.stat().st_ino]
    with os.scandir(mount) as entries:
        ids += [e.inode() for e in entries if e.is_dir(follow_symlinks=False)][: most - 1]
    return ids


def process_cpu(pid: int) -> float:
    """Seconds of CPU process ``pid`` used, all its threads (those ended too), from its CPU clock (the kernel's
    scheduler, in ns): ``/proc``'s utime and stime, what psutil reads, count whole clock ticks (10 ms: 1.5 % of a
    15 s reading of an agent at 4 % of a core)."""
    try:
        return time.clock_gettime(((~pid) << 3) | 2)  # (CPUCLOCK_SCHED of the process: clock_getcpuclockid's clock)
    except OSError:
        return sum(psutil.Process(pid).cpu_times()[:2])


async def agents_cpu(tmp: Path, rec: Path | None, forward: str, settle: float, measure: float, *,
                     forward_first: bool = False) -> dict[str, Any]:  # fmt: skip
    """CPU of two agents (ring records at :data:`AGENT_RATE`, or ``serve --replay REC`` at real-time pace), one with
    ``--forward``, one without, run side by side: over the same ``measure`` seconds, from ``settle`` seconds after both
    answered (the events still coming then). Side by side, what else the machine runs meanwhile weighs on both alike
    (in turns, a busy minute for one and a quiet one for the other moved the ratio by more than forwarding costs);
    ``forward_first``: the forwarding agent started first (the rounds take turns)."""
    agents: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    kinds: list[tuple[str, list[str]]] = [("base", []), ("forward", ["--forward", forward, "--forward-token", TOKEN])]
    try:
        for name, extra in kinds[::-1] if forward_first else kinds:
            port = free_port()
            events = (["-m", "netspy_tui", "serve", "--replay", str(rec), "--replay-speed", "1"] if rec is not None
                      else ["-m", "bench.fleet", "--agent", str(AGENT_RATE)])  # fmt: skip
            argv = [PY, *events, "--port", str(port), *extra]
            agents[name] = (_spawn(argv, stdout=subprocess.DEVNULL, stderr=(tmp / "fleet-agent.log").open("ab")), port)
        for proc, port in agents.values():
            await _wait_health(f"http://127.0.0.1:{port}", proc)
        procs = {name: proc.pid for name, (proc, _) in agents.items()}
        await asyncio.sleep(settle)
        c0, t0 = {n: process_cpu(pid) for n, pid in procs.items()}, time.perf_counter()
        await asyncio.sleep(measure)
        c1, wall = {n: process_cpu(pid) for n, pid in procs.items()}, time.perf_counter() - t0
        async with httpx.AsyncClient(timeout=10) as client:
            health = (await client.get(f"http://127.0.0.1:{agents['forward'][1]}/health")).json()
    finally:
        for proc, _ in agents.values():
            _stop(proc)
    cpu = {n: (c1[n] - c0[n]) / wall * 100 for n in procs}
    return {"base": cpu["base"], "forward": cpu["forward"], "forwarding": health.get("forwarding")}


async def forward_cost(tmp: Path, rate: float, rounds: int, settle: float, measure: float, *,
                       replay: bool) -> dict[str, Any]:  # fmt: skip
    """Agent CPU with and without forwarding to an aggregator (its own process, not counted), side by side: agents
    with ring records (:func:`agent`), or ``serve --replay`` when ``replay``."""
    rec = recording(tmp / "fleet-agent.jsonl", rate, settle + measure + 10) if replay else None
    port = free_port()
    agg = _spawn([PY, "-m", "netspy_tui", "serve", "--aggregate", "--port", str(port), "--ingest-token", TOKEN],
                 stdout=subprocess.DEVNULL, stderr=(tmp / "fleet-aggregator-2.log").open("wb"))  # fmt: skip
    base: list[float] = []
    fwd: list[float] = []
    forwarded: list[Any] = []
    try:
        await _wait_health(f"http://127.0.0.1:{port}", agg)
        for i in range(rounds):
            r = await agents_cpu(tmp, rec, f"http://127.0.0.1:{port}/api/events/ingest", settle, measure,
                                 forward_first=i % 2 == 1)  # fmt: skip
            base.append(r["base"])
            fwd.append(r["forward"])
            forwarded.append(r["forwarding"])
    finally:
        _stop(agg)
    return {"base": base, "forward": fwd, "forwarding": forwarded}


def run(ctx: Context) -> list[Metric]:
    per_agent = 2_000 if ctx.quick else 100_000
    # (one run swings by ±10 % on 2 shared cores: 46,000-56,000 events/s for the same code; the median of 3)
    runs = 1 if ctx.quick else 3
    ctx.log(
        f"fleet: aggregator + {AGENTS} senders x {per_agent:,} events (batches of {BATCH}) + dashboard, {runs} runs"
    )
    rs = []
    for i in range(runs):
        (ctx.tmp / f"ingest-{i}").mkdir()
        rs.append(asyncio.run(ingest(ctx.tmp / f"ingest-{i}", per_agent, ctx.log)))
    r = rs[-1]
    throttled = sum(s["throttled"] for x in rs for s in x["senders"])
    ms = [
        metric(NAME, f"aggregator ingest, {AGENTS} agents, dashboard open (events/s)", [x["eps"] for x in rs],
               "events/s", target=TARGET_EPS, op=">=", note=f"{r['events']:,} events a run, {runs} runs; "
               f"{throttled} batches answered 429"),
        metric(NAME, "  events ingested per aggregator CPU-second (what one core sustains)",
               [x["events"] / (x["aggregator_cpu_pct"] / 100 * x["seconds"]) for x in rs], "events/s",
               note="wall events/s is bounded by the CPU the aggregator gets on a shared machine; this is not"),
        metric(NAME, "  aggregator CPU while ingesting (its processes)", [x["aggregator_cpu_pct"] for x in rs], "%",
               note=f"of one core: storing {r['storing_cpu_pct']:.0f} %, checking bodies {r['checking_cpu_pct']:.0f} "
               f"%; the 3 senders used {r['senders_cpu_pct']:.0f} %, the dashboard (and this bench) "
               f"{r['dashboard_cpu_pct']:.0f} %, on {psutil.cpu_count()} cores (last run)"),
        metric(NAME, "  of which the storing process", [x["storing_cpu_pct"] for x in rs], "%",
               note="the aggregator's own process (one core at most: its Python); the rest is the processes that "
               "read and check bodies (--ingest-processes)"),
        Metric(NAME, "  per-node counts in /api/stats = events each agent sent",
               1.0 if all(x["exact"] for x in rs) else 0.0, "", target=1.0, op=">=",
               note=json.dumps(r["events_by_node"])),
        Metric(NAME, "  dashboard polls during ingest (interval 1 s)", r["dashboard_polls"], "polls",
               note=f"{r['dashboard_poll_failures']} failed; up to {r['dashboard_rows']} connection rows shown"),
    ]  # fmt: skip
    firsts = [x["dashboard_first_poll_s"] for x in rs if x["dashboard_first_poll_s"] is not None]
    gaps = [x["dashboard_poll_gap_s"] for x in rs if x["dashboard_poll_gap_s"] is not None]
    if firsts:
        ms.append(metric(NAME, "  dashboard: first poll done after the senders start", firsts, "s",
                         note="it follows the aggregator's /api/changes: the first batch stored wakes it (without "
                         "the feed, the idle backoff made it up to 4 s, IDLE_POLL_MAX)"))  # fmt: skip
    if gaps:
        ms.append(metric(NAME, "  dashboard: seconds between polls once events flow (interval 1 s)", gaps, "s"))
    if not ctx.quick:
        # (as many events as the measured runs: a store's per-event cost grows with what it holds, and a smaller run
        # read faster than polling alone explained)
        ctx.log(f"fleet: DIAGNOSIS the same ingest ({per_agent:,} events per agent) with the dashboard not polling")
        (ctx.tmp / "idle").mkdir()
        q = asyncio.run(ingest(ctx.tmp / "idle", per_agent, ctx.log, interval=3600.0))
        ms.append(Metric(NAME, "  DIAGNOSIS: the same, dashboard open but not polling (interval 1 h)", q["eps"],
                         "events/s", note=f"{q['events'] / (q['aggregator_cpu_pct'] / 100 * q['seconds']):,.0f} "
                         f"events per aggregator CPU-second; {q['dashboard_polls']} polls"))  # fmt: skip
        ctx.log("fleet: DIAGNOSIS the same ingest with bodies checked in the storing process (--ingest-processes 0)")
        (ctx.tmp / "one").mkdir()
        o = asyncio.run(ingest(ctx.tmp / "one", per_agent, ctx.log, processes=0))
        ms.append(Metric(NAME, "  DIAGNOSIS: the same, one aggregator process (--ingest-processes 0)", o["eps"],
                         "events/s", note=f"{o['events'] / (o['aggregator_cpu_pct'] / 100 * o['seconds']):,.0f} "
                         f"events per aggregator CPU-second; as before the checking processes"))  # fmt: skip
    rate = AGENT_RATE
    rounds, settle, measure = (1, 0.5, 1.0) if ctx.quick else (5, 4.0, 15.0)
    costs = {}
    for replay, label, target in ((False, "eBPF ring records", TARGET_FORWARD), (True, "serve --replay", None)):
        ctx.log(f"fleet: agent CPU at {rate:,.0f} events/s ({label}), with and without --forward, {rounds} rounds")
        f = costs["replay" if replay else "records"] = asyncio.run(
            forward_cost(ctx.tmp, rate, rounds, settle, measure, replay=replay)
        )
        base, fwd = statistics.median(f["base"]), statistics.median(f["forward"])
        sent = f["forwarding"][-1] or {}
        ratios = [w / b for b, w in zip(f["base"], f["forward"], strict=True) if b]
        ms.append(metric(NAME, f"agent CPU with --forward / without ({rate:,.0f} events/s, {label})", ratios, "",
                         target=target, baseline=base, baseline_label="without: CPU %",
                         ratio=statistics.median(ratios) if ratios else None,
                         note=f"with forwarding {fwd:.1f} % of a core, without {base:.1f} %; last round forwarded "
                         f"{sent.get('forwarded', 0):,} events in {sent.get('batches', 0)} batches"))  # fmt: skip
    ctx.shared[f"{NAME}_extra"] = {"ingest": rs, "forward_cost": costs}
    return ms


def forward_rows(rounds: int, replay: bool) -> dict[str, Any]:
    """The forwarding cost's rounds alone (``python -m bench.fleet --forward-cost ROUNDS [--replay]``, what
    :func:`run` measures after the ingest, in a minute or two instead of the area's half hour): each round's agent
    CPU with and without ``--forward``, and their ratios."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        f = asyncio.run(forward_cost(Path(tmp), AGENT_RATE, rounds, 4.0, 15.0, replay=replay))
    ratios = [w / b for b, w in zip(f["base"], f["forward"], strict=True) if b]
    return {**f, "ratios": ratios, "median": statistics.median(ratios) if ratios else None}


def ingest_rows(runs: int, per_agent: int, interval: float, processes: int | None = None) -> dict[str, Any]:
    """The ingest rows alone (``python -m bench.fleet --ingest RUNS [--per-agent N] [--interval S]``: what :func:`run`
    measures first, in a minute or two instead of the area's minutes): each run's events/s, the aggregator's CPU and
    events per its CPU-second, and the dashboard's polls; ``--interval 3600`` is the dashboard open but not polling
    (the DIAGNOSIS row, here with as many events as the measured row)."""
    import tempfile

    rs = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            rs.append(asyncio.run(ingest(Path(tmp), per_agent, print, interval=interval, processes=processes)))
    keys = (
        "eps",
        "aggregator_cpu_pct",
        "storing_cpu_pct",
        "checking_cpu_pct",
        "dashboard_cpu_pct",
        "dashboard_polls",
        "dashboard_poll_failures",
        "exact",
    )
    rows = [{k: x[k] for k in keys} | {"per_cpu_s": x["events"] / (x["aggregator_cpu_pct"] / 100 * x["seconds"])}
            for x in rs]  # fmt: skip
    return {
        "runs": rows,
        "median_eps": statistics.median(r["eps"] for r in rows),
        "median_per_cpu_s": statistics.median(r["per_cpu_s"] for r in rows),
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["--agent"]:
        sys.exit(agent(float(sys.argv[2]), sys.argv[3:]))
    p = argparse.ArgumentParser()
    p.add_argument("--sender", nargs=5, metavar=("URL", "NODE", "EVENTS", "SEED", "NEWEST_NS"))
    p.add_argument("--forward-cost", type=int, metavar="ROUNDS", help="only the forwarding cost's rounds")
    p.add_argument("--replay", action="store_true", help="with --forward-cost: serve --replay agents")
    p.add_argument("--ingest", type=int, metavar="RUNS", help="only the ingest rows (dashboard open)")
    p.add_argument("--per-agent", type=int, default=100_000, help="with --ingest: events each agent sends")
    p.add_argument("--interval", type=float, default=1.0, help="with --ingest: the dashboard's interval (s)")
    p.add_argument("--ingest-processes", type=int, help="with --ingest: the aggregator's --ingest-processes")
    a = p.parse_args()
    if a.ingest:
        print(json.dumps(ingest_rows(a.ingest, a.per_agent, a.interval, a.ingest_processes)))
        sys.exit(0)
    if a.forward_cost:
        print(json.dumps(forward_rows(a.forward_cost, a.replay)))
        sys.exit(0)
    if not a.sender:
        p.error("--sender, --forward-cost or --ingest")
    url, node, events, seed, newest = a.sender
    print(json.dumps(sender(url, node, int(events), int(seed), int(newest))))
    sys.exit(0)
