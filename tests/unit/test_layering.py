"""The layers stay one-directional: the contracts in pyproject.toml's [tool.importlinter], checked here."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept():
    """`lint-imports` over this checkout: every import points down the layers, and Textual, MCP and
    openai are imported only where the contracts allow (the README's Design section names the layers)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    out = subprocess.run(
        [sys.executable, "-c", code, "--no-cache"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout, out.stdout


def test_core_and_cli_single_command_path_do_not_import_textual():
    code = (
        "import sys, netspy_tui.cli, netspy_tui.mcp_tools.server, netspy_tui.mcp_tools.gateway, "
        "netspy_tui.telemetry.client, netspy_tui.analysis.aggregate, netspy_tui.models; "
        "print('textual' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
