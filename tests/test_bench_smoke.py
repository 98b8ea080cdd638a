"""The benchmark suite's quick mode runs (cheap, non-root parts) and writes the JSON it documents.

Structure only: timings depend on the machine, so nothing here compares a figure with a target.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
AREAS = ("store", "mcp", "startup")
METRIC_KEYS = {
    "area",
    "name",
    "value",
    "unit",
    "target",
    "op",
    "baseline",
    "baseline_label",
    "ratio",
    "samples",
    "note",
    "skipped",
    "runs",
    "spread",
    "passed",
}


def test_quick_benchmark_writes_every_area_and_prints_the_table(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NETSPY_", "OPENAI_"))}
    argv = [sys.executable, "-m", "bench.run", "--quick", "--json", str(out)]
    for area in AREAS:
        argv += ["--only", area]
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    header = next(line for line in proc.stdout.splitlines() if line.startswith("metric"))
    assert header.split() == [
        "metric",
        "value",
        "target",
        "ok",
        "baseline",
        "/",
        "ratio",
        "runs",
        "spread",
        "(min..max)",
    ]
    data = json.loads(out.read_text())
    assert data["quick"] is True
    assert {"nproc", "cpu_model", "kernel", "python"} <= set(data["machine"])
    assert data["machine"]["nproc"] == os.cpu_count()
    assert set(data["areas"]) == set(AREAS)
    for name, area in data["areas"].items():
        assert area["error"] == "", (name, area["error"])
        assert area["metrics"], name
        for m in area["metrics"]:
            assert set(m) == METRIC_KEYS
            assert m["area"] == name
            assert m["skipped"] or isinstance(m["value"], float | int), m
            assert m["passed"] in (True, False, None)
    names = {m["name"] for a in data["areas"].values() for m in a["metrics"]}
    assert any(n.startswith("list_connections(100) MCP tool") for n in names)
    assert any(n.startswith("get_network_summary in memory") for n in names)
    assert "--tool get_network_summary end to end" in names
    assert data["areas"]["startup"]["importtime_tool_path"][0]["total_import_ms"] > 0
    assert data["table"][0] == header
    # the machine's speed before each area (a shared machine's hour moves every row of Python's time)
    assert set(data["machine"]["python_probe_ms"]) == set(AREAS)
    assert all(ms > 0 for ms in data["machine"]["python_probe_ms"].values())
    assert any(line.startswith("machine: Python speed probe") for line in data["table"])


async def test_a_key_is_timed_until_the_first_frame_that_shows_its_answer() -> None:
    """bench.dashboard's key measure: from the key to the first frame drawn with the answer, the frame's own
    drawing included (a widget that takes 40 ms to draw makes the key take at least that), never a frame drawn
    before the answer held."""
    import time

    from textual.app import App, ComposeResult
    from textual.widgets import Static

    from bench.dashboard import _Terminal

    class Slow(Static):
        def render_line(self, y: int):  # type: ignore[no-untyped-def]
            if y == 0 and str(self.content) == "answered":
                time.sleep(0.04)
            return super().render_line(y)

    class One(App[None]):
        answered = False

        def compose(self) -> ComposeResult:
            yield Slow("waiting", id="slow")

        def on_key(self) -> None:
            self.answered = True
            self.query_one("#slow", Static).update("answered")

    app = One()
    async with app.run_test() as pilot:
        terminal = _Terminal(app)
        ms = await terminal.key(app, pilot, "x", lambda: app.answered)
        assert ms >= 40, ms
        assert len(terminal.frames) == 1 and terminal.answered is None
