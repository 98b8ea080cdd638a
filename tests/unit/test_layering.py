import subprocess
import sys


def test_core_and_cli_single_command_path_do_not_import_textual():
    code = (
        "import sys, netspy_tui.cli, netspy_tui.mcp_tools.server, netspy_tui.mcp_tools.gateway, "
        "netspy_tui.telemetry.client, netspy_tui.analysis.aggregate, netspy_tui.models; "
        "print('textual' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
