"""What a one-shot ``--tool`` imports: the in-process MCP pair and the HTTP client, nothing of the dashboard,
the AI client, the collector, the store or the server side (issue 17).

The child runs with ``-X importtime`` (every module it imports is listed on stderr). The ``mcp`` SDK itself
imports part of an HTTP server stack (``mcp.server.mcpserver`` imports starlette, ``sse_starlette`` imports
uvicorn): those are allowed only as far as importing the SDK's client and server classes alone imports them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.factories import connection_json
from tests.fake_ebpf_server import FakeEbpfServer

_LINE = re.compile(r"import time:\s+\d+ \|\s+\d+ \|\s*(\S+)")
#: Never on the one-shot path (the AI client only when an AI tool runs).
FORBIDDEN = (
    "textual",
    "openai",
    "prometheus_client",
    "numpy",
    "netspy_tui.tui",
    "netspy_tui.ai",
    "netspy_tui.collector",
    "netspy_tui.store",
    "netspy_tui.serve",
    "netspy_tui.mcp_tools.ai_bridge",
    "rich",  # the SDK's MCPServer() imports it for a root log handler netspy-tui replaces with its own
    "tomllib",  # the config file's parser: only when there is a file
    "pydantic_settings",  # the settings read the environment themselves (~15 ms of every start)
)
#: Server-side HTTP stack: allowed only where the SDK's own import brings it.
SERVER_STACK = ("uvicorn", "starlette", "sse_starlette")


def _imported(argv: list[str], env: dict[str, str]) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", *argv], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return {m.group(1) for line in out.stderr.splitlines() if (m := _LINE.match(line))}


def _under(modules: set[str], package: str) -> set[str]:
    return {m for m in modules if m == package or m.startswith(package + ".")}


@pytest.fixture(scope="module")
def server():
    with FakeEbpfServer("current", events=[connection_json(pid=7, command="curl", ago=3)]) as srv:
        yield srv


@pytest.mark.parametrize("tool", ["get_network_summary", "list_connections"])
def test_tool_imports_no_dashboard_ai_or_server_stack(tool, server, cli_env):
    modules = _imported(["-m", "netspy_tui", "--tool", tool, "--server", server.url], cli_env)
    assert "netspy_tui.cli" in modules and "mcp.client" in modules  # the listing is real
    for package in FORBIDDEN:
        assert not _under(modules, package), f"--tool {tool} imported {sorted(_under(modules, package))[:5]}"
    floor = _imported(["-c", "from mcp.client import Client; from mcp.server.mcpserver import MCPServer"], cli_env)
    for package in SERVER_STACK:
        extra = _under(modules, package) - floor
        assert not extra, f"--tool {tool} imported more of {package} than the SDK does: {sorted(extra)[:5]}"


def test_building_the_server_leaves_the_root_logger_alone(cli_env):
    """The SDK's ``MCPServer()`` would put a rich handler on the root logger of a program embedding the server."""
    code = (
        "import logging, sys; from netspy_tui.mcp_tools.server import create_server; "
        "from netspy_tui.telemetry.memory import MemorySource; create_server(MemorySource([])); "
        "print(logging.getLogger().handlers, logging.getLogger().level, 'rich' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["[]", "30", "False"]


def test_pydantic_plugins_are_not_looked_for_unless_asked(server, cli_env, tmp_path):
    """pydantic looks for plugins (the ``pydantic`` entry points of every installed distribution) when the first
    model is built: ~30 ms of every start. netspy-tui sets ``PYDANTIC_DISABLE_PLUGINS`` unless the environment
    sets it: a plugin installed beside it (a distribution made here, on the path) is not loaded; with the
    variable set, even empty, pydantic looks as before and loads it."""
    site = tmp_path / "site"
    info = site / "marker_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: marker-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[pydantic]\nmarker = marker_plugin:plugin\n")
    marker = tmp_path / "loaded"
    (site / "marker_plugin.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "class Plugin:\n"
        "    def new_schema_validator(self, *args, **kwargs):\n"
        "        return None, None, None\n"
        "plugin = Plugin()\n"
    )
    env = {**cli_env, "PYTHONPATH": str(site) + os.pathsep + cli_env.get("PYTHONPATH", "")}
    env.pop("PYDANTIC_DISABLE_PLUGINS", None)
    argv = [sys.executable, "-m", "netspy_tui", "--tool", "get_network_summary", "--server", server.url]
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and "1 outbound connection attempt" in out.stdout, out.stderr[-2000:]
    assert not marker.exists()
    out = subprocess.run(argv, capture_output=True, text=True, env={**env, "PYDANTIC_DISABLE_PLUGINS": ""},
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert marker.exists()  # the plugin is found, so the first run's absence of the marker means something
