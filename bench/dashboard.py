"""Dashboard: one refresh (MCP poll + every table update) with 10,000 events in the window, headless
(``App.run_test``); resident memory and idle CPU of a dashboard process over 1,000,000 stored events.

Refresh: the app reads an embedded file store (no collector) through its real in-process MCP
gateway. Its data is what the eBPF collector delivers (records + counts, :mod:`bench.synth`), in
the window the dashboard shows. Between refreshes 100 new events arrive; one refresh is
``Poller.poll()`` (one ``dashboard_snapshot`` call: status, connections, drops, processes, patterns,
drop patterns) plus ``apply_snapshot`` (the diffed table updates), timed apart and together; "+ paint"
waits until the messages the refresh queued are handled and a frame is drawn (``pilot.pause(0)``: Textual's
handlers, then a paint), and "until idle" until the process has used no CPU for a 20 ms slice (Pilot's
``wait_for_idle``: its granularity is in the figure).

Keys: on the same data, a key is posted as the terminal driver posts it and the time runs until the first frame
the app draws with the answer (the state changed), each frame encoded as for a terminal: narrowing the filter a
character at a time, focusing the process under the cursor (enter), switching to the drops tab and back (d).
Until 2026-12-08 the wait was Pilot's ``pause(0)`` in a loop, which adds work the app does not do on a terminal
(a callback to each of its ~70 widgets and a frame forced at each check): kept beside it as a diagnosis.

Memory: a child process writes 1,000,000 events from the last hour into a file store (the
product's default is a scratch file) and opens the dashboard headless on it with the 1 h window
(every event in it): RSS after the first render, then CPU over three idle stretches (the median) and the polls made.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import synth
from bench.common import PY, REPO, Context, Metric, child_env, metric

NAME = "dashboard"
TARGET_REFRESH_MS, TARGET_PAINT_MS, TARGET_KEY_MS, TARGET_IDLE_CPU, TARGET_RSS_MB = 30.0, 60.0, 50.0, 0.5, 200.0
SIZE = (160, 45)


async def _wait(pilot: Any, cond: Any, what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


async def _refresh(db: Path, window_events: int, refreshes: int, new_per_refresh: int) -> dict[str, list[float]]:
    from netspy_tui.mcp_tools.gateway import open_gateway
    from netspy_tui.store.sqlite import EventStore
    from netspy_tui.telemetry.embedded import EmbeddedSource
    from netspy_tui.tui.app import NetspyApp

    store = EventStore(db, retention_seconds=None, max_rows=None)
    store.write(list(synth.batches(window_events, 55, seed=4)))
    source = EmbeddedSource(None, store, reason="bench")
    out: dict[str, list[float]] = {"poll": [], "apply": [], "refresh": [], "paint": [], "idle": [], "first": []}
    async with open_gateway(source) as gw:
        app = NetspyApp(gw, interval=3600, window=60, source_note="bench", freeze_heap=True)  # (as the CLI runs it)
        async with app.run_test(size=SIZE) as pilot:
            await _wait(pilot, lambda: app.dashboard.renders >= 1, "the first render")
            out["first"].append(app.dashboard.last_render_ms)
            for i in range(refreshes):
                store.write(list(synth.batches(new_per_refresh, 0.5, seed=100 + i)))
                t0 = time.perf_counter()
                snap = await app.poller.poll()
                t1 = time.perf_counter()
                app.dashboard.apply_snapshot(snap)
                t2 = time.perf_counter()
                await pilot.pause(0)  # the queued messages handled, a frame drawn
                t3 = time.perf_counter()
                await pilot.pause()
                t4 = time.perf_counter()
                out["poll"].append((t1 - t0) * 1000)
                out["apply"].append((t2 - t1) * 1000)
                out["refresh"].append((t2 - t0) * 1000)
                out["paint"].append((t3 - t0) * 1000)
                out["idle"].append((t4 - t0) * 1000)
            out["rows"] = [float(app.dashboard.connections.row_count)]
            out.update(await _keys(app, pilot))
            out["tab_cpu"] = await _tab_cpu(app, pilot)
    store.close()
    return out


class _Terminal:
    """The frames the app sends its terminal, headless as in one: each screen update is encoded as Textual encodes
    it for a terminal driver (which the headless driver skips) and timed. :meth:`key` times a key from the moment
    it is sent until the first frame drawn once the key's answer holds."""

    def __init__(self, app: Any) -> None:
        from textual._compositor import CompositorUpdate

        self.answered: Any = None
        self.frames: list[float] = []
        drawn = app._display

        def display(screen: Any, renderable: Any) -> None:
            drawn(screen, renderable)
            if renderable is None or app._batch_count:
                return
            if isinstance(renderable, CompositorUpdate):
                renderable.render_segments(app.console)
            if self.answered is not None and self.answered():
                self.frames.append(time.perf_counter())

        app._display = display  # (the screens call it on the app: this is the frame's last step)

    async def key(self, app: Any, pilot: Any, key: str, answered: Any) -> float:
        """Milliseconds from ``key`` (posted as the terminal driver's input thread posts it) until a frame is drawn
        in which ``answered()`` holds. Between the key and that frame the app runs alone: the wait is a sleep, so
        Textual schedules its frames as it does on a terminal (Pilot's ``pause(0)`` posts a callback to every widget
        and draws a frame at once: ~70 widgets here)."""
        from textual import events

        await pilot.pause()  # (what the last key set off has settled: a woken poll, its snapshot)
        self.frames.clear()
        self.answered = answered
        t0 = time.perf_counter()
        event = events.Key(key, key if len(key) == 1 else None)
        event.set_sender(app)
        app._driver.send_message(event)
        try:
            while not self.frames:
                if time.perf_counter() > t0 + 10:
                    raise TimeoutError(f"no visible answer to {key!r}")
                await asyncio.sleep(0.001)
        finally:
            self.answered = None
        return (self.frames[0] - t0) * 1000


async def _pilot_key(app: Any, pilot: Any, key: str, shown: Any) -> float:
    """The measure before 2026-12-08 (a diagnosis since): milliseconds from a key (sent as Pilot sends it) until
    ``shown()`` holds and a frame is drawn, checking with ``pilot.pause(0)``, whose callbacks to every widget and
    forced frame are in the figure."""
    from textual import events

    await pilot.pause()  # (what the last key set off has settled: a woken poll, its snapshot)
    char = key if len(key) == 1 else None
    t0 = time.perf_counter()
    event = events.Key(key, char)
    event.set_sender(app)
    app._driver.send_message(event)
    deadline = t0 + 10
    while not shown():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"no visible answer to {key!r}")
        await pilot.pause(0)
    await pilot.pause(0)
    return (time.perf_counter() - t0) * 1000


async def _keys(app: Any, pilot: Any, rounds: int = 5) -> dict[str, list[float]]:
    """Keypress to visible response with the window full: filter narrowing, focus, tab switch; each measured on
    the app's own frames (:class:`_Terminal`) and, as before 2026-12-08, with Pilot's pause (``pilot_*``)."""
    from textual.widgets import Input, TabbedContent

    screen = app.dashboard
    tabs = screen.query_one("#views", TabbedContent)
    bar = screen.query_one("#filter-bar", Input)
    terminal = _Terminal(app)
    out: dict[str, list[float]] = {k: [] for k in ("filter", "focus", "tab", "pilot_filter", "pilot_focus",
                                                   "pilot_tab")}  # fmt: skip
    for round_ in range(2 * rounds):
        # (the two measures take turns, a round each)
        prefix, key = ("", terminal.key) if round_ % 2 == 0 else ("pilot_", _pilot_key)
        rows = screen.connections.row_count
        await pilot.press("slash")
        for i, ch in enumerate("curl"):
            typed = "curl"[: i + 1]
            out[prefix + "filter"].append(
                await key(app, pilot, ch, lambda t=typed: screen.filter_text == t and bar.value == t)
            )
        assert screen.connections.row_count < rows, "the filter did not narrow the table"
        await pilot.press("escape", "escape")
        await _wait(pilot, lambda: not screen.filter_text and screen.connections.has_focus, "the filter cleared")
        out[prefix + "focus"].append(await key(app, pilot, "enter", lambda: screen.focus_subject is not None))
        await pilot.press("escape")
        await _wait(pilot, lambda: screen.focus_subject is None, "the focus cleared")
        for target in ("drops-tab", "connections-tab"):
            out[prefix + "tab"].append(await key(app, pilot, "d", lambda t=target: tabs.active == t))
    return out


async def _tab_cpu(app: Any, pilot: Any, switches: int = 6, after: float = 0.5) -> list[float]:
    """CPU milliseconds of this process per tab switch (d), the frames drawn in the ``after`` seconds that follow
    it included (an animated underline drew ~20 of them)."""
    from textual.widgets import TabbedContent

    tabs = app.dashboard.query_one("#views", TabbedContent)
    out = []
    for _ in range(switches):
        await pilot.pause()
        before, c0 = tabs.active, time.process_time()
        await pilot.press("d")
        await _wait(pilot, lambda b=before: tabs.active != b, "the other tab")
        await asyncio.sleep(after)
        out.append((time.process_time() - c0) * 1000)
    return out


async def _memory_child(store_arg: str, events: int, idle: float, windows: int = 1) -> dict[str, Any]:
    import psutil

    from netspy_tui.mcp_tools.gateway import open_gateway
    from netspy_tui.models import Scope
    from netspy_tui.store.sqlite import EventStore
    from netspy_tui.telemetry.embedded import EmbeddedSource
    from netspy_tui.tui.app import NetspyApp

    proc = psutil.Process()
    rss_imports = proc.memory_info().rss  # (the floor: the interpreter, Textual, the MCP SDK, numpy)
    store = EventStore(Path(store_arg), retention_seconds=None, max_rows=None)
    for batch in synth.batches(events, 3590, seed=1):
        store.write([batch])
    rss_store = proc.memory_info().rss
    source = EmbeddedSource(None, store, reason="bench")
    in_window = store.count(Scope("connection", None, None, 3600))
    result: dict[str, Any] = {"stored": store.row_count(), "rss_store_mb": rss_store / 2**20, "in_window": in_window,
                              "rss_imports_mb": rss_imports / 2**20}  # fmt: skip
    async with open_gateway(source) as gw:
        app = NetspyApp(gw, interval=1.0, window=3600, source_note="bench", freeze_heap=True)
        async with app.run_test(size=SIZE) as pilot:
            await _wait(pilot, lambda: app.dashboard.renders >= 1, "the first render", 120)
            await pilot.pause(2.0)
            result["rss_mb"] = proc.memory_info().rss / 2**20
            polls0, shares = app.polls, []
            for _ in range(windows):  # (one window read 0.2-0.8 % for the same build: a 10 s window holds 1-2 polls)
                c0, w0 = sum(proc.cpu_times()[:2]), time.perf_counter()
                await pilot.pause(idle)
                c1, w1 = sum(proc.cpu_times()[:2]), time.perf_counter()
                shares.append((c1 - c0) / (w1 - w0) * 100)
            result["idle_cpu_windows"] = shares
            result["idle_cpu_pct"] = statistics.median(shares)
            result["polls"] = app.polls - polls0
            result["rss_after_idle_mb"] = proc.memory_info().rss / 2**20
    store.close()
    return result


def _child(store_arg: str, events: int, idle: float, windows: int) -> dict[str, Any]:
    r = subprocess.run(
        [
            PY,
            "-m",
            "bench.dashboard",
            "--memory-child",
            store_arg,
            "--events",
            str(events),
            "--idle",
            str(idle),
            "--windows",
            str(windows),
        ],
        env=child_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )
    if r.returncode != 0:
        raise RuntimeError(f"memory child failed: {r.stderr[-800:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run(ctx: Context) -> list[Metric]:
    window_events = 2_000 if ctx.quick else 10_000
    refreshes = 3 if ctx.quick else 15
    r = asyncio.run(_refresh(ctx.tmp / "dashboard-refresh.sqlite", window_events, refreshes, 100))
    label = f"{window_events:,} events in window"
    ms = [
        metric(NAME, f"refresh = poll + table updates ({label})", r["refresh"], "ms", target=TARGET_REFRESH_MS),
        metric(NAME, "  of which MCP poll (one dashboard_snapshot call)", r["poll"], "ms"),
        metric(NAME, "  of which table updates (apply_snapshot)", r["apply"], "ms"),
        metric(NAME, "refresh + paint (messages handled, frame drawn)", r["paint"], "ms", target=TARGET_PAINT_MS),
        metric(NAME, "refresh until Textual is idle (20 ms slices)", r["idle"], "ms"),
        metric(NAME, f"first render ({int(r['rows'][0])} rows)", r["first"], "ms"),
        metric(
            NAME, f"key to screen: filter narrowing, a character ({label})", r["filter"], "ms", target=TARGET_KEY_MS
        ),
        metric(
            NAME, "key to screen: focus the process under the cursor (enter)", r["focus"], "ms", target=TARGET_KEY_MS
        ),
        metric(NAME, "key to screen: switch tab (d)", r["tab"], "ms", target=TARGET_KEY_MS),
        metric(NAME, "  DIAGNOSIS: the same keys waited on with Pilot's pause(0): filter", r["pilot_filter"], "ms"),
        metric(NAME, "  DIAGNOSIS: the same keys waited on with Pilot's pause(0): focus", r["pilot_focus"], "ms"),
        metric(NAME, "  DIAGNOSIS: the same keys waited on with Pilot's pause(0): tab", r["pilot_tab"], "ms"),
        metric(NAME, "CPU per tab switch (d), the 0.5 s of frames after it included", r["tab_cpu"], "ms"),
    ]
    events = 20_000 if ctx.quick else 1_000_000
    idle, windows = (1.0, 1) if ctx.quick else (10.0, 3)
    ctx.log(f"dashboard: memory child, {events:,} events in a file store, 1 h window")
    mem = _child(str(ctx.tmp / "dashboard-memory.sqlite"), events, idle, windows)
    ms.append(Metric(NAME, f"RSS, {events:,} events stored, all in the 1 h window shown", mem["rss_mb"], "MB",
                     target=TARGET_RSS_MB, note=f"imports alone {mem['rss_imports_mb']:.0f} MB; "
                     f"with the store {mem['rss_store_mb']:.0f} MB; "
                     f"{mem['in_window']:,} connects in the window"))  # fmt: skip
    ms.append(
        metric(
            NAME,
            f"idle CPU headless, {idle:.0f} s, {events:,} stored",
            mem["idle_cpu_windows"],
            "%",
            target=TARGET_IDLE_CPU,
            note=f"{mem['polls']} polls in {windows} windows of {idle:.0f} s (interval 1 s); the median window",
        )
    )
    ctx.shared["dashboard_extra"] = {"memory_child": mem}
    return ms


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--memory-child", required=True)
    p.add_argument("--events", type=int, default=0)
    p.add_argument("--idle", type=float, default=10.0)
    p.add_argument("--windows", type=int, default=1)
    a = p.parse_args()
    print(json.dumps(asyncio.run(_memory_child(a.memory_child, a.events, a.idle, a.windows))))
    sys.exit(0)
