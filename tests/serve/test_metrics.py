"""/metrics: what a Prometheus scrape of `netspy-tui serve` reads, parsed with the Prometheus
client's own parser, against what the tools report for the same data."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from netspy_tui.models import SourceInfo
from netspy_tui.serve.metrics import MetricsExporter
from tests.factories import connection_json, drop_json
from tests.hardening.conftest import TERMINATED, Child, free_port, spawn  # noqa: F401 (fixture)
from tests.hardening.test_security import served_url

TOKEN = "metrics-test-token-0123456789"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def recording(tmp_path: Path) -> Path:
    lines = []
    for i in range(60):
        command = ["curl", "wget", "nginx", "python3"][i % 4]
        code = [0, -111, 0][i % 3]
        lines.append(connection_json(pid=100 + i % 4, command=command, ago=30 - i * 0.1, return_code=code))
    for _ in range(7):
        lines.append(drop_json(pid=9, command="nginx", ago=20, reason="NETFILTER_DROP"))
    path = tmp_path / "rec.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_a_scrape_agrees_with_the_tools(tmp_path: Path, spawn: Callable[..., Child]) -> None:  # noqa: F811
    port = free_port()
    child = spawn("serve", "--replay", str(recording(tmp_path)), "--replay-speed", "0", "--port", str(port),
                  "--metrics-top", "2", env={"NETSPY_TOKEN": TOKEN})  # fmt: skip
    url = served_url(child, "the eBPF server API")
    with httpx.Client(base_url=url, timeout=10) as http:
        assert http.get("/metrics").status_code == 401  # behind the token like every path
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for _ in range(200):  # the replay is stored within moments
            resp = http.get("/metrics", headers=auth)
            got = samples(resp.text)
            if got.get(("netspy_packet_drops_total", (("process", "nginx"), ("reason", "NETFILTER_DROP")))) == 7:
                break
        assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
        connects = {k[1]: v for k, v in got.items() if k[0] == "netspy_connects_total"}
        assert sum(connects.values()) == 60
        processes = {dict(labels)["process"] for labels in connects}
        assert "other" in processes and len(processes - {"other"}) == 2  # --metrics-top 2, then other
        named = sorted(processes - {"other"})[0]
        refused = connects[(("outcome", "refused"), ("process", named))]
        assert refused == 5  # each command: 15 connects, every third one refused
        assert got[("netspy_events_seen_total", ())] == 67
        assert got[("netspy_source_up", ())] == 1.0

        summary = http.post("/api/connection-summary", json={"command": named, "duration_seconds": 600},
                            headers=auth).json()  # fmt: skip
        scraped = sum(v for labels, v in connects.items() if dict(labels)["process"] == named)
        assert summary["count"] == scraped == 15

        again = samples(http.get("/metrics", headers=auth).text)  # labels stick between scrapes
        series = {k for k in got if k[0] == "netspy_connects_total"}
        assert {k for k in again if k[0] == "netspy_connects_total"} == series
    assert child.stop() == TERMINATED


def test_labels_are_bounded_and_sticky_so_counters_only_grow() -> None:
    exporter = MetricsExporter(top_n=2)
    info = SourceInfo(label="t", kind="embedded", generation="embedded", losses={"shed": 3})
    first = {("connection", "a", "ok"): 10, ("connection", "b", "ok"): 5, ("connection", "c", "ok"): 1}
    text = exporter.render(info, first).decode()
    got = samples(text)
    assert got[("netspy_connects_total", (("outcome", "ok"), ("process", "a")))] == 10
    assert got[("netspy_connects_total", (("outcome", "ok"), ("process", "other")))] == 1
    assert got[("netspy_events_lost_total", (("cause", "shed"),))] == 3
    # c overtakes both: it stays in "other" (a and b keep their labels), and no series shrinks
    second = {("connection", "a", "ok"): 11, ("connection", "b", "ok"): 5, ("connection", "c", "ok"): 500,
              ("connection", "d", "in_progress"): 2}  # fmt: skip
    later = samples(exporter.render(info, second).decode())
    for key, value in got.items():
        if key[0] == "netspy_connects_total":
            assert later[key] >= value
    assert later[("netspy_connects_total", (("outcome", "ok"), ("process", "other")))] == 500
    assert later[("netspy_connects_in_progress", ())] == 2
    assert not any(dict(k[1]).get("process") in ("c", "d") for k in later)


def test_drop_reasons_are_bounded_too() -> None:
    """An aggregator takes a drop's reason as its agents send it: 1,000 made-up reasons were 1,000 series, and a
    200 KB reason a label (an audit's). The first reasons counted keep a label, the rest are 'other', each label
    at most 64 characters."""
    from netspy_tui.serve.metrics import MAX_REASON_CHARS, MAX_REASONS

    exporter = MetricsExporter(top_n=2)
    info = SourceInfo(label="t", kind="embedded", generation="embedded")
    counted = {("packet_drop", "nginx", f"KREASON_{i:04d}"): 1000 - i for i in range(1000)}
    counted[("packet_drop", "nginx", "X" * 200_000)] = 5000
    got = samples(exporter.render(info, counted).decode())
    reasons = {dict(k[1])["reason"] for k in got if k[0] == "netspy_packet_drops_total"}
    assert len(reasons) == MAX_REASONS + 1 and "other" in reasons
    assert max(map(len, reasons)) <= MAX_REASON_CHARS
    assert sum(v for k, v in got.items() if k[0] == "netspy_packet_drops_total") == sum(counted.values())


async def test_drops_in_kernel_context_are_labelled_kernel_not_empty(tmp_path: Path) -> None:
    """A drop in kernel context (no process: pid 0, no name) is ``process="(kernel)"``, as the dashboard's drops
    list names it: an empty label value is the same as no label in PromQL (``{process=""}`` matches series without
    one) and reads as a bug on a dashboard. A process that names itself ``(kernel)`` is not taken for the kernel:
    it counts as ``other``. The kernel takes none of the ``--metrics-top`` processes' labels (here one)."""
    import asyncio

    from netspy_tui.collector.replay import ReplayCollector
    from netspy_tui.serve.app import create_app
    from netspy_tui.store import EventStore
    from netspy_tui.telemetry.embedded import EmbeddedSource

    lines = [drop_json(pid=0, command="", ago=20, reason="NO_SOCKET") for _ in range(5)]
    lines += [drop_json(pid=77, command="(kernel)", ago=20, reason="NO_SOCKET") for _ in range(3)]
    lines += [drop_json(pid=9, command="nginx", ago=20, reason="NO_SOCKET") for _ in range(2)]
    # (a connect is always a process's: one named "(kernel)", or with no name, is one of the others too)
    lines += [connection_json(pid=pid, command=command, ago=20) for pid, command in ((77, "(kernel)"), (78, ""))]
    lines += [connection_json(pid=10, command="curl", ago=20) for _ in range(3)]
    path = tmp_path / "rec.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    collector = ReplayCollector(path, speed=0)
    source = EmbeddedSource(collector, EventStore(), reason="test")
    await source.start()
    try:
        assert await asyncio.to_thread(collector.wait, 10)
        transport = httpx.ASGITransport(app=create_app(source, metrics_top=1))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            for _ in range(200):  # (the replay is stored within moments)
                got = samples((await http.get("/metrics")).text)
                drops = {dict(k[1])["process"]: v for k, v in got.items() if k[0] == "netspy_packet_drops_total"}
                connects = {dict(k[1])["process"]: v for k, v in got.items() if k[0] == "netspy_connects_total"}
                if sum(drops.values()) == 10 and sum(connects.values()) == 5:
                    break
                await asyncio.sleep(0.02)
    finally:
        await source.aclose()
    assert drops == {"(kernel)": 5, "other": 3, "nginx": 2}
    assert connects == {"curl": 3, "other": 2}


@pytest.mark.ebpf
def test_events_seen_counts_the_events_made_while_raw_events_are_shed(spawn: Callable[..., Child]) -> None:  # noqa: F811
    """``serve --raw-rate 1`` keeps about one raw event a second: 300 refused connects (each with its dropped SYN)
    are nearly all shed, their counts kept. ``netspy_events_seen_total`` is the events the collector made (the
    kernel's counts: what the scrape's connects and drops add up to, as the tools report them), not the few raw
    events it kept."""
    if os.geteuid() != 0:
        pytest.skip("needs root (eBPF)")
    child = spawn("serve", "--collector", "ebpf", "--raw-rate", "1", "--port", str(free_port()))
    url = served_url(child, "the eBPF server API")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for _ in range(300):
        with socket.socket() as s, pytest.raises(ConnectionRefusedError):
            s.connect(("127.0.0.1", port))

    def made(got: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
        families = ("netspy_connects_total", "netspy_connects_in_progress", "netspy_packet_drops_total")
        return sum(v for (name, _), v in got.items() if name in families)

    with httpx.Client(base_url=url, timeout=10) as http:  # (one connection: the scrapes make no connects)
        deadline = time.monotonic() + 20
        while True:
            got = samples(http.get("/metrics").text)
            refused = sum(v for (name, labels), v in got.items()
                          if name == "netspy_connects_total" and ("outcome", "refused") in labels)  # fmt: skip
            shed = got.get(("netspy_events_lost_total", (("cause", "shed"),)), 0)
            seen = got[("netspy_events_seen_total", ())]
            if (refused >= 300 and shed >= 500 and seen == made(got)) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert refused >= 300 and shed >= 500, got
    # every event made is seen, once, the shed ones too: what the counters add up to, the kept and the shed
    assert seen == made(got), got
    assert seen >= got[("netspy_events_stored", ())] + shed
