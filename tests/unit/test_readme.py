"""The README is generated from the product where it can be: keep it true."""

from __future__ import annotations

import re
from pathlib import Path

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


def test_quick_start_is_install_run_test_and_ci_runs_the_same_test_command():
    install, run, test = _quick_start()
    assert install.startswith("pip install") and run == "netspy-tui"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test in ci.splitlines()


def test_every_mcp_tool_is_documented():
    from netspy_tui.cli import TOOLS

    for tool in TOOLS:
        assert f"`{tool}`" in README


def test_screenshots_referenced_exist():
    for path in re.findall(r"\]\((screenshots/[^)]+)\)", README):
        assert (ROOT / path).is_file(), path
