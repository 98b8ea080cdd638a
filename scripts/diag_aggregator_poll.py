"""DIAGNOSIS (not a bench): what one dashboard poll costs an aggregator, and which requests it is made of.

Starts ``serve --aggregate`` on 127.0.0.1, ingests ``--events`` synthetic events per node from 3 nodes (bench/fleet.py's
forwarder bodies: times spread over the 50 s before), then

1. opens the dashboard on it (headless ``NetspyApp`` over ``HttpSource``, 1 h window, 1 s interval, as bench/fleet.py
   does) and reports the aggregator's CPU per poll over ``--polls`` polls, with the requests of the last poll;
2. asks each request a poll makes ``--repeat`` times and reports the aggregator's CPU per request;
3. lists the stores' JSON blocks (events, body bytes, seconds spanned): a page reads the body of every block that
   holds one of its events whole.

    python scripts/diag_aggregator_poll.py --events 10000 --polls 10 --repeat 20
    python scripts/diag_aggregator_poll.py --serve --events 30000   # a plain serve instead: the same events replayed

With ``--serve``, a plain ``serve --replay REC --replay-speed 0`` (all ``--events`` at once, as bench/fleet.py's
recordings: times over the 50 s before) is measured instead of the aggregator.

CPU is read from the aggregator process (psutil): on a shared machine, repeat and compare medians.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import fleet  # noqa: E402
from bench.common import PY, free_port  # noqa: E402


def _cpu(proc: psutil.Process) -> float:
    return float(sum(proc.cpu_times()[:2]))


async def per_poll(url: str, agg: psutil.Process, polls: int) -> None:
    from netspy_tui.mcp_tools.gateway import open_gateway
    from netspy_tui.telemetry.client import HttpSource
    from netspy_tui.tui.app import NetspyApp

    asked: list[str] = []

    async def note(resp: httpx.Response) -> None:
        await resp.aread()
        query = resp.request.url.query.decode()
        asked.append(f"  {resp.request.url.path}{'?' + query if query else ''} -> {len(resp.content):,} B")

    source = HttpSource(url, read_timeout=30, retries=0)
    source._http.event_hooks["response"].append(note)
    async with open_gateway(source) as gateway:
        app = NetspyApp(gateway, interval=1.0, window=3600, freeze_heap=True)  # (as bench/fleet.py, as the CLI)
        async with app.run_test(headless=True, size=(160, 45)) as pilot:
            while app.polls < 2:  # (the first polls detect the server and read everything once)
                await pilot.pause(0.05)
            n0, c0 = app.polls, _cpu(agg)
            last: list[str] = []
            seen = n0
            while app.polls < n0 + polls:
                await pilot.pause(0.05)
                if app.polls != seen:  # a poll ended: what it asked is what was asked since the one before
                    seen, last = app.polls, asked[:]
                    asked.clear()
            n1, c1 = app.polls, _cpu(agg)
    await source.aclose()
    print(f"server CPU per dashboard poll: {(c1 - c0) / (n1 - n0) * 1000:.1f} ms over {n1 - n0} polls")
    print("requests of the last poll:", *last, sep="\n")


async def per_request(url: str, agg: psutil.Process, repeat: int) -> None:
    window: dict[str, Any] = {"duration_seconds": 3600, "top_n": 10, "buckets": 60}
    cases: list[tuple[str, dict[str, Any]]] = [
        ("/api/events", {"type": "connection", "limit": 1}),
        ("/api/events", {"type": "connection", "limit": 100}),
        ("/api/events", {"type": "connection", "limit": 1000}),
        ("/api/events", {"type": "packet_drop", "limit": 1000}),
        ("/api/window-stats", {"type": "connection", **window}),
        ("/api/window-stats", {"type": "packet_drop", **window}),
        ("/health", {}),
    ]
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for path, params in cases:
            c0 = _cpu(agg)
            for _ in range(repeat):
                (await client.get(path, params=params)).raise_for_status()
            shown = "&".join(f"{k}={v}" for k, v in params.items())
            print(f"{(_cpu(agg) - c0) / repeat * 1000:6.1f} ms  {path}{'?' + shown if shown else ''}")


async def main(tmp: Path, events: int, polls: int, repeat: int, plain: bool) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [PY, "-m", "netspy_tui", "serve", "--aggregate", "--port", str(port), "--ingest-token", fleet.TOKEN,
            "--db", str(tmp / "stores")]  # fmt: skip
    if plain:
        rec = fleet.recording(tmp / "rec.jsonl", events / 50, 50)
        argv = [PY, "-m", "netspy_tui", "serve", "--port", str(port), "--replay", str(rec), "--replay-speed", "0"]
    proc = fleet._spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await fleet._wait_health(url, proc)
        agg = psutil.Process(proc.pid)
        if plain:
            await asyncio.sleep(5)  # (the replay is stored at once; let it settle)
            print(f"serve --replay of {events:,} events")
            await per_poll(url, agg, polls)
            print(f"serve CPU per request ({repeat} of each):")
            await per_request(url, agg, repeat)
            return
        headers = {"Authorization": f"Bearer {fleet.TOKEN}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            for i in range(fleet.AGENTS):
                for body in fleet.make_bodies(f"diag-node-{i}", events, 40 + i):
                    (await client.post("/api/events/ingest", content=body, headers=headers)).raise_for_status()
        print(f"{fleet.AGENTS} nodes x {events:,} events stored")
        await per_poll(url, agg, polls)
        print(f"aggregator CPU per request ({repeat} of each):")
        await per_request(url, agg, repeat)
    finally:
        fleet._stop(proc)


def blocks(stores: Path) -> None:
    for path in sorted(stores.glob("*.sqlite3")):
        with contextlib.closing(sqlite3.connect(path)) as db:
            rows = db.execute("SELECT kind, n, length(bodies), (t_hi - t_lo) / 1e9 FROM json_blocks").fetchall()
        print(path.name, *(f"  kind {k}: {n:,} events, {b:,} B of bodies, over {s:.1f} s" for k, n, b, s in rows),
              sep="\n")  # fmt: skip


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=10_000, help="events per node (default 10,000)")
    p.add_argument("--polls", type=int, default=10)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--serve", action="store_true", help="measure a plain serve (a replay) instead of an aggregator")
    a = p.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="netspy-diag-"))
    try:
        asyncio.run(main(scratch, a.events, a.polls, a.repeat, a.serve))
        if not a.serve:
            blocks(scratch / "stores")
    finally:
        shutil.rmtree(scratch)
