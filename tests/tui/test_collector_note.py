"""The header says which collector runs and why, at the smallest terminal the README names (80x24)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.models import SourceInfo
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.tui.app import NetspyApp
from tests.tui.conftest import Clock, demo_events, wait_for
from tests.tui.screen_text import screen_lines


def note_of_an_unprivileged_start() -> str:
    """What ``start_collector("auto")`` says as an ordinary user: a child that drops root (after its imports:
    the interpreter may live where nobody can read) and starts the collector the dashboard would."""
    code = textwrap.dedent(
        """
        import os
        import netspy_tui.collector.ebpf, netspy_tui.collector.procfs, psutil
        from netspy_tui.collector.auto import start_collector
        if os.geteuid() == 0:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
        collector, reason = start_collector("auto", lambda events: None, procfs_interval=0.1)
        collector.stop()
        print(collector.name)
        print(reason)
        """
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    name, reason = child.stdout.splitlines()
    assert name == "procfs", (name, reason)
    return reason


class SampledSource(MemorySource):
    """The demo's events, reported as procfs sampling reports itself."""

    async def info(self) -> SourceInfo:
        info = await super().info()
        return info.model_copy(update={"label": "procfs sampling (embedded)", "collector": "procfs", "sampled": True})


async def test_an_unprivileged_start_shows_why_not_ebpf_and_what_sampling_misses_at_80x24() -> None:
    note = note_of_an_unprivileged_start()
    assert note == "procfs sampling: eBPF needs root"
    clock = Clock()
    async with open_gateway(SampledSource(demo_events())) as gateway:
        app = NetspyApp(gateway, interval=0.25, clock=clock, source_note=note)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: app.polls > 0, "a poll")
            await pilot.pause()
            header = screen_lines(app)[:3]
            assert any(
                "procfs sampling: eBPF needs root · short-lived connections can be missed" in line for line in header
            ), header


def unowned_note_of_an_unprivileged_sample() -> list[str]:
    """What the sampler says as an ordinary user while root holds a connection: a child that drops root after
    this process (root) connected to a listener of its own, and samples the sockets once."""
    import socket

    code = textwrap.dedent(
        """
        import os, psutil
        from netspy_tui.collector.procfs import ProcfsCollector
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
        collector = ProcfsCollector()
        collector._sample(psutil.net_connections("inet"))
        print("\\n".join(collector.notes))
        """
    )
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with socket.create_connection(listener.getsockname()):  # (root's own connection, held while the child samples)
            accepted, _ = listener.accept()
            with accepted:
                child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    return child.stdout.splitlines()


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to hold a connection an ordinary user cannot read")
async def test_procfs_says_in_the_header_that_other_users_connections_are_not_shown() -> None:
    """Without root, other users' connections vanished without a word (an audit's): the sampler counts those whose
    process it cannot read, and the header says so beside its other limits."""
    notes = unowned_note_of_an_unprivileged_sample()
    pattern = r"[1-9][\d,]* connections? of other users' processes not shown \(their owners need root to read\)"
    assert len(notes) == 1 and re.fullmatch(pattern, notes[0]), notes

    class Unowned(SampledSource):
        async def info(self) -> SourceInfo:
            return (await super().info()).model_copy(update={"notes": notes})

    async with open_gateway(Unowned(demo_events())) as gateway:
        app = NetspyApp(gateway, interval=0.25, clock=Clock(), source_note="procfs sampling: eBPF needs root")
        async with app.run_test(size=(200, 24)) as pilot:
            await wait_for(pilot, lambda: notes[0] in "\n".join(screen_lines(app)[:3]), "the note in the header")


async def test_the_drops_view_of_procfs_sampling_says_drops_are_not_collected_not_that_there_were_none() -> None:
    """procfs sampling sees no packet drops at all: "No packet drops in the last 1m" read as none dropped (an
    audit's). The drops view says they are not collected, and how to get them."""
    events = [e for e in demo_events() if e.type == "connection"]  # (what sampling can see)
    async with open_gateway(SampledSource(events)) as gateway:
        app = NetspyApp(gateway, interval=0.25, clock=Clock(), source_note="procfs sampling: eBPF needs root")
        async with app.run_test(size=(200, 30)) as pilot:
            await wait_for(pilot, lambda: app.polls > 0, "a poll")
            await pilot.press("d")
            said = "Packet drops are not collected by procfs sampling: run netspy-tui as root for eBPF"
            await wait_for(pilot, lambda: any(said in line for line in screen_lines(app)), "the drops view's line")
            assert not any("No packet drops" in line for line in screen_lines(app))


async def test_a_source_note_that_does_not_fit_whole_is_left_out_not_cut() -> None:
    """At 80 columns, with another note on the second line, the source's note was cut to a stub ("· replay of",
    "· recorded demo · clock fixed at 2026-11-24 12:…"). It is shown whole or not at all (the first line and
    :status name the source), and comes back when there is room."""
    from tests.tui.scenes import SCENES, demo_app

    app = demo_app()
    note = "recorded demo · clock fixed at 2026-11-24 12:00:00 UTC"
    async with app.run_test(size=(80, 24)) as pilot:
        await SCENES["main"](pilot)
        assert note in screen_lines(app)[1]
        await pilot.press("enter")  # focus the selected connection's process: a note before the source's
        await wait_for(pilot, lambda: app.dashboard.focus_subject is not None, "focus")
        await pilot.pause()
        second = screen_lines(app)[1]
        assert "focus process" in second and "recorded" not in second and "…" not in second, second
        await pilot.resize_terminal(120, 30)
        await pilot.pause()
        assert "focus process" in screen_lines(app)[1] and note in screen_lines(app)[1]
