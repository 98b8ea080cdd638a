"""Choosing the collector: explicit kinds, and auto falling back from eBPF when eBPF cannot load."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from netspy_tui.collector.auto import open_collector, start_collector
from netspy_tui.collector.procfs import ProcfsCollector
from netspy_tui.collector.replay import ReplayCollector
from netspy_tui.errors import CollectorError
from netspy_tui.models import ConnectionEvent, PacketDropEvent
from tests.factories import connection_json

REPO = Path(__file__).parents[2]


def discard(events: Sequence[ConnectionEvent | PacketDropEvent]) -> None:
    return None


def test_explicit_procfs() -> None:
    collector, reason = start_collector("procfs", discard, procfs_interval=0.2)
    try:
        assert isinstance(collector, ProcfsCollector) and collector.running and collector.interval == 0.2
        assert reason == "procfs sampling: requested"
    finally:
        collector.stop()
    unstarted, reason = open_collector("procfs")
    assert isinstance(unstarted, ProcfsCollector) and not unstarted.running and reason.startswith("procfs")


def test_replay_needs_a_file(tmp_path: Path) -> None:
    with pytest.raises(CollectorError, match="needs a recording"):
        start_collector("replay", discard)
    path = tmp_path / "rec.jsonl"
    path.write_text(json.dumps(connection_json()) + "\n")
    collector, reason = start_collector("replay", discard, replay_path=path, replay_speed=0)
    try:
        assert isinstance(collector, ReplayCollector) and collector.wait(5)
        assert reason == f"replay of {path} as fast as possible"
    finally:
        collector.stop()
    # a recording given with kind auto means replay
    collector, reason = open_collector("auto", replay_path=path, replay_speed=2)
    assert isinstance(collector, ReplayCollector) and reason.endswith("at 2x speed")


def _as_nobody(code: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run a check as an unprivileged user")
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", sys.executable, "-c", code]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO)
    if "ModuleNotFoundError" in done.stderr or "Permission denied" in done.stderr:
        pytest.skip(f"the checkout is not readable by nobody: {done.stderr.strip()[-200:]}")
    return done


@pytest.mark.root
def test_explicit_ebpf_fails_with_collector_error_when_unprivileged() -> None:
    done = _as_nobody(
        "import sys\n"
        "from netspy_tui.collector.auto import start_collector\n"
        "from netspy_tui.errors import CollectorError\n"
        "try:\n"
        "    start_collector('ebpf', lambda events: None)\n"
        "except CollectorError as exc:\n"
        "    print(exc); sys.exit(3)\n"
        "print('eBPF started as nobody')\n"
    )
    assert done.returncode == 3, done.stdout + done.stderr
    message = done.stdout.strip()
    assert message == (
        "eBPF needs root. Run as root (or with CAP_BPF, CAP_PERFMON and CAP_DAC_READ_SEARCH) or use --collector procfs."
    )


@pytest.mark.root
def test_auto_falls_back_to_procfs_with_the_ebpf_error_as_reason() -> None:
    done = _as_nobody(
        "from netspy_tui.collector.auto import start_collector, open_collector\n"
        "c, reason = start_collector('auto', lambda events: None, procfs_interval=0.1)\n"
        "print(c.name); print(reason); c.stop()\n"
        "c2, reason2 = open_collector('auto')\n"
        "print(c2.name); print(reason2)\n"
    )
    assert done.returncode == 0, done.stderr
    name, reason, guessed, guess_reason = done.stdout.strip().splitlines()
    assert name == "procfs" and guessed == "procfs"
    assert reason == "procfs sampling: eBPF needs root"  # short: the dashboard's header shows it at 80 columns
    assert guess_reason == "procfs sampling: eBPF needs root (running as uid 65534)"


@pytest.mark.root
def test_the_capabilities_named_are_the_ones_checked_tracefs_included() -> None:
    """CAP_BPF and CAP_PERFMON alone cannot read tracefs (root's, 0700): eBPF is refused saying what it needs, not
    tried; with CAP_DAC_READ_SEARCH too, this process is taken as able to load it."""
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run a check as an unprivileged user")
    code = (
        "from netspy_tui.collector.auto import open_collector, start_collector\n"
        "from netspy_tui.collector.ebpf import EbpfCollector\n"
        "from netspy_tui.errors import CollectorError\n"
        "print(open_collector('auto')[1])\n"
        "try:\n"
        "    EbpfCollector().start(lambda batch: None)\n"
        "except CollectorError as exc:\n"
        "    print(exc.message)\n"
        "collector, reason = start_collector('auto', lambda events: None, procfs_interval=0.1)\n"
        "collector.stop()\n"
        "print(reason)\n"
    )
    said = {}
    for caps in ("+bpf,+perfmon", "+bpf,+perfmon,+dac_read_search"):
        check = code if "dac" not in caps else code.split("try:")[0]  # (with every capability: only the guess)
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", f"--inh-caps={caps}",
               f"--ambient-caps={caps}", sys.executable, "-c", check]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO)
        if "ModuleNotFoundError" in done.stderr or "Permission denied" in done.stderr:
            pytest.skip(f"the checkout is not readable by nobody: {done.stderr.strip()[-200:]}")
        assert done.returncode == 0, done.stderr
        said[caps] = done.stdout.splitlines()
    assert said["+bpf,+perfmon"] == [
        "procfs sampling: eBPF needs root (running as uid 65534)",
        "eBPF needs root",
        "procfs sampling: eBPF needs root",
    ]
    assert said["+bpf,+perfmon,+dac_read_search"] == ["eBPF: running as uid 65534 (not yet loaded)"]


@pytest.mark.ebpf
def test_auto_picks_ebpf_as_root() -> None:
    if os.geteuid() != 0 and not os.environ.get("NETSPY_REQUIRE_EBPF"):
        pytest.skip("needs root")
    try:
        collector, reason = start_collector("auto", discard)
    except CollectorError as exc:  # pragma: no cover - a kernel without eBPF support
        if os.environ.get("NETSPY_REQUIRE_EBPF"):
            raise
        pytest.skip(f"eBPF cannot load here: {exc}")
    try:
        if collector.name != "ebpf" and not os.environ.get("NETSPY_REQUIRE_EBPF"):
            pytest.skip(f"eBPF cannot load here: {reason}")
        assert collector.name == "ebpf" and reason == "eBPF: tracepoints loaded as root"
        assert collector.programs()
    finally:
        collector.stop()


@pytest.mark.root
@pytest.mark.parametrize("value", ["maybe", "2", "disabled"])
def test_a_mistyped_byte_counter_setting_is_refused_not_taken_as_on_or_fallen_back_from(value: str) -> None:
    """NETSPY_EBPF_BYTE_COUNTERS takes 1/true/yes/on or 0/false/no/off: anything else is one actionable line and
    exit 1 (auto does not quietly fall back to procfs over it)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (auto picks eBPF only as root)")
    env = {**os.environ, "NETSPY_EBPF_BYTE_COUNTERS": value}
    cmd = [sys.executable, "-m", "netspy_tui", "serve", "--port", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
    assert done.returncode == 1, done
    assert done.stderr.strip().splitlines() == [
        f"netspy-tui: NETSPY_EBPF_BYTE_COUNTERS={value!r} is not an on/off setting. "
        "Set NETSPY_EBPF_BYTE_COUNTERS to 1 or 0 (or unset it)."
    ], done.stderr


@pytest.mark.ebpf
@pytest.mark.parametrize(("value", "on"), [("0", False), ("off", False), ("No", False), ("false", False),
                                           ("1", True), ("on", True), ("YES", True), ("", True)])  # fmt: skip
def test_the_byte_counter_setting_takes_the_usual_spellings(monkeypatch: pytest.MonkeyPatch, value: str,
                                                            on: bool) -> None:  # fmt: skip
    from netspy_tui.collector.ebpf import EbpfCollector

    monkeypatch.setenv("NETSPY_EBPF_BYTE_COUNTERS", value)
    assert EbpfCollector().byte_counters is on
