"""The README is generated from the product where it can be: keep it true."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.quiet

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _quick_start() -> list[str]:
    section = README.split("## Quick start", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_key_table_is_the_key_registry():
    from netspy_tui.tui.keys import markdown_table

    assert markdown_table() in README


def test_quick_start_is_clone_install_run_test_and_ci_runs_the_same_lines():
    clone, install, run, test = _quick_start()
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["urls"]
    assert clone == f"git clone {urls['Source']}.git && cd netspy-tui"
    # a venv (Debian's system pip refuses to install outside one), the app alone, no test tools
    assert install == "python3 -m venv .venv && .venv/bin/pip install ."
    # as root, by the script's path: sudo does not search the venv's bin
    assert run == "sudo .venv/bin/netspy-tui"
    assert test == '.venv/bin/pip install ".[test]" && .venv/bin/python -m pytest'
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    commands = [line for line in ci if line and not line.startswith("#")]
    assert commands[-2:] == [install, test], "the last two commands of .ci/run must be the README's lines"
    assert "Python ≥ 3.11" in README.split("## Quick start", 1)[1].split("```", 1)[0]


def test_every_mcp_tool_is_documented():
    from netspy_tui.cli import TOOLS

    for tool in TOOLS:
        assert f"`{tool}`" in README


def test_screenshots_referenced_exist():
    for path in re.findall(r"\]\((screenshots/[^)]+)\)", README):
        assert (ROOT / path).is_file(), path


def _performance_section() -> tuple[str, str]:
    """(the Performance section, the README without it)."""
    before, rest = README.split("\n## Performance\n", 1)
    section, after = rest.split("\n## ", 1)
    return section, before + "\n## " + after


def test_measured_figures_live_in_the_performance_table_and_its_fleet_row_is_latest_json():
    # Prose elsewhere points to the table: a second copy of a figure goes stale when the bench re-runs.
    section, elsewhere = _performance_section()
    measured = re.findall(r"×\s?\d[\d.]*|\d[\d,]*(?:\.\d+)? events/s|\d[\d,]* per aggregator CPU-second", elsewhere)
    assert not measured, f"measured figures outside ## Performance (point to its table instead): {measured}"
    latest = json.loads((ROOT / "bench" / "results" / "latest.json").read_text(encoding="utf-8"))
    fleet = {m["name"].strip(): m for m in latest["areas"]["fleet"]["metrics"]}
    (row,) = [line for line in section.splitlines() if line.startswith("| fleet:")]
    ingest = fleet["aggregator ingest, 3 agents, dashboard open (events/s)"]["value"]
    per_cpu = fleet["events ingested per aggregator CPU-second (what one core sustains)"]["value"]
    ring = fleet["agent CPU with --forward / without (2,000 events/s, eBPF ring records)"]
    replay = fleet["agent CPU with --forward / without (2,000 events/s, serve --replay)"]["value"]
    assert f"| {round(ingest, -2):,.0f} events/s" in row
    assert f"{round(per_cpu, -2):,.0f} per aggregator CPU-second" in row
    low, high = ring["spread"]
    assert f"×{ring['value']:.2f} (rounds {low:.2f}-{high:.2f}" in row
    assert f"/ ×{replay:.2f} (" in row


def test_the_mcp_client_configs_name_the_script_the_quick_start_installs():
    # The quick start installs into the clone's .venv/bin, which is on no PATH: a bare "netspy-tui" is not found.
    (block,) = [b for b in re.findall(r"```json\n(.*?)```", README, re.S) if "mcpServers" in b]
    (server,) = json.loads(block)["mcpServers"].values()
    install = _quick_start()[1]
    assert ".venv/bin/pip install" in install
    assert server["command"].startswith("/") and server["command"].endswith("/.venv/bin/netspy-tui")
    assert server["args"] == ["mcp"]
    (inspector,) = re.findall(r"`npx @modelcontextprotocol/inspector ([^`]*)`", README)
    assert inspector == '"$PWD/.venv/bin/netspy-tui" mcp'
