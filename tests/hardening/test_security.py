"""Who can reach what: loopback by default, the token on every request, body limits, no shell, no leaked secrets.

Covered elsewhere (not repeated): every path of the API without the token is 401 and the token is
compared in constant time (tests/serve/test_live.py::test_without_the_token_every_path_is_401), the
MCP route behind ``serve_source`` needs the token (test_serve_source_mounts_mcp_behind_the_token),
413 on declared and streamed bodies (test_bodies_over_the_limit_are_413, test_streamed_overflow_in_process),
the exposure warning for non-loopback binds (test_serve_async_warns_when_exposed_without_token),
``--show-config`` masking (tests/cli/test_single_command.py::test_show_config_masks_secrets), the
OpenAI key never echoed by AI errors or verbose logs (tests/ai/test_errors.py, tests/cli/test_ai_cli.py).
"""

from __future__ import annotations

import ast
import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil

from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.telemetry.client import HttpSource
from netspy_tui.tui.app import NetspyApp
from tests.factories import connection_json
from tests.fake_ebpf_server import FakeEbpfServer
from tests.hardening.conftest import DEMO, REPO, TERMINATED, Child, Cli, free_port
from tests.tui.scenes import wait_for

TOKEN = "hardening-token-7f3a9c2e51"
KEY = "sk-hardening-key-0123456789abcdef"
BIG = 2 * 1024 * 1024  # over the 1 MiB default limit
MCP_INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def listening(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket of process ``pid``."""
    return [
        (c.laddr.ip, c.laddr.port)
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN
    ]


def served_url(child: Child, what: str) -> str:
    line = child.wait_for(f"serving {what} on ")
    return line.split(" on ", 1)[1].strip()


async def mcp_call(url: str, token: str | None) -> str:
    import httpx2
    from mcp.client import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=20) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            result = await client.call_tool("get_network_summary", {"duration": 600})
            return result.content[0].text  # type: ignore[union-attr]


def test_serve_binds_loopback_and_guards_every_path_with_the_token(spawn: Callable[..., Child]) -> None:
    port = free_port()
    child = spawn(
        "serve",
        "--replay",
        str(DEMO),
        "--replay-speed",
        "0",
        "--port",
        str(port),
        "--verbose",
        env={"NETSPY_TOKEN": TOKEN, "OPENAI_API_KEY": KEY},
    )
    url = served_url(child, "the eBPF server API")
    assert url == f"http://127.0.0.1:{port}"
    assert listening(child.proc.pid) == [("127.0.0.1", port)]

    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, timeout=10) as http:
        for method, path in (
            ("GET", "/health"),
            ("GET", "/api/events"),
            ("POST", "/api/connection-summary"),
            ("POST", "/mcp"),
            ("GET", "/mcp"),
            ("GET", "/no/such/path"),
        ):
            resp = http.request(method, path, json=MCP_INIT if path == "/mcp" else None)
            assert resp.status_code == 401, (method, path, resp.text)
            assert TOKEN not in resp.text
        wrong = http.post("/mcp", json=MCP_INIT, headers={**MCP_HEADERS, "Authorization": f"Bearer {TOKEN[:-1]}"})
        assert wrong.status_code == 401
        assert http.get("/health", headers=auth).status_code == 200
        for path in ("/api/connection-summary", "/mcp"):
            big = http.post(path, content=b" " * BIG, headers={**auth, **MCP_HEADERS})
            assert (big.status_code, big.text) == (413, "Request body too large: the limit is 1048576 bytes\n")
    assert "made" in asyncio.run(mcp_call(url + "/mcp", TOKEN))
    assert child.stop() == TERMINATED
    logs = "".join(child.err)
    assert "GET /health" in logs  # --verbose access log was on: the secrets had every chance to appear
    assert TOKEN not in logs and KEY not in logs and "Traceback" not in logs


def test_mcp_http_binds_loopback_and_requires_the_token(spawn: Callable[..., Child]) -> None:
    """`mcp --http --token` used to accept every request: the token was silently ignored."""
    port = free_port()
    child = spawn(
        "mcp",
        "--http",
        "--port",
        str(port),
        "--replay",
        str(DEMO),
        "--replay-speed",
        "0",
        "--token",
        TOKEN,
        "--verbose",
    )
    url = served_url(child, "MCP (streamable HTTP)")
    assert url == f"http://127.0.0.1:{port}/mcp"
    assert listening(child.proc.pid) == [("127.0.0.1", port)]
    with httpx.Client(timeout=10) as http:
        anonymous = http.post(url, json=MCP_INIT, headers=MCP_HEADERS)
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")
        assert http.get(url.removesuffix("/mcp") + "/anything").status_code == 401
        big = http.post(url, content=b"{" + b" " * BIG, headers={**MCP_HEADERS, "Authorization": f"Bearer {TOKEN}"})
        assert big.status_code == 413
        other = http.get(url.removesuffix("/mcp") + "/health", headers={"Authorization": f"Bearer {TOKEN}"})
        assert (other.status_code, other.text) == (404, "404 page not found\n")  # only /mcp is served
    assert "made" in asyncio.run(mcp_call(url, TOKEN))
    assert child.stop() == TERMINATED
    assert TOKEN not in "".join(child.err)


def test_mcp_http_without_a_token_still_binds_loopback_only(spawn: Callable[..., Child]) -> None:
    port = free_port()
    child = spawn("mcp", "--http", "--port", str(port), "--replay", str(DEMO), "--replay-speed", "0")
    url = served_url(child, "MCP (streamable HTTP)")
    assert listening(child.proc.pid) == [("127.0.0.1", port)]
    assert "made" in asyncio.run(mcp_call(url, None))
    warnings = "".join(child.err)
    assert "without a token" not in warnings  # loopback: nothing to warn about


# --- no shell ---------------------------------------------------------------------------------

_SHELL_CALLS = {("os", "system"), ("os", "popen"), ("asyncio", "create_subprocess_shell"), ("pty", "spawn")}
_EXEC_PREFIXES = ("execl", "execv", "spawnl", "spawnv", "posix_spawn")


def _shell_uses(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = ""
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            name = f"{func.value.id}.{func.attr}"
            if (func.value.id, func.attr) in _SHELL_CALLS or (
                func.value.id == "os" and func.attr.startswith(_EXEC_PREFIXES)
            ):
                found.append((node.lineno, name))
        elif isinstance(func, ast.Name):
            name = func.id
            if name in ("eval", "exec", "system", "popen"):
                found.append((node.lineno, name))
        for kw in node.keywords:
            if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                found.append((node.lineno, f"{name}(shell=...)"))
        if name.startswith("subprocess.") and node.args and not isinstance(node.args[0], (ast.List, ast.Tuple)):
            found.append((node.lineno, f"{name} with a command that is not a literal argument list"))
    return found


def test_no_shell_is_ever_invoked() -> None:
    offenders = []
    files = sorted((REPO / "netspy_tui").rglob("*.py"))
    assert len(files) > 40
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        offenders += [f"{path.relative_to(REPO)}:{line}: {what}" for line, what in _shell_uses(tree)]
    assert offenders == []


def test_the_shell_guard_finds_what_it_looks_for() -> None:
    sample = ast.parse(
        "import os, subprocess\nos.system('ls ' + x)\nsubprocess.run(cmd, shell=True)\n"
        "subprocess.run(f'ls {x}')\nos.execvp('sh', ['sh'])\neval(x)\nsubprocess.run(['ls', x])\n"
    )
    assert [line for line, _ in _shell_uses(sample)] == [2, 3, 3, 4, 5, 6]


# --- secrets ------------------------------------------------------------------------------------


def test_secrets_never_reach_output_logs_or_errors(cli: Cli, tmp_path: Path) -> None:
    """The token from a config file (not the environment), the key in the environment, a URL password;
    a server that echoes the Authorization header back in its error body."""
    config = tmp_path / "netspy.toml"
    config.write_text(f'token = "{TOKEN}"\n')
    env = {"NETSPY_CONFIG": str(config), "OPENAI_API_KEY": KEY}
    with FakeEbpfServer("current", events=[connection_json(ago=1)]) as srv:
        ok = cli("--tool", "list_connections", "--server", srv.url, "--verbose", env=env)
        assert ok.returncode == 0, ok.stderr
        assert srv.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"
        srv.fail_with(500, f"rejected Authorization: Bearer {TOKEN} for hunter2pw")
        leaky = cli(
            "--tool",
            "list_connections",
            "--server",
            srv.url.replace("//", "//admin:hunter2pw@"),
            "--verbose",
            "--json",
            env=env,
        )
        status = cli(
            "--tool", "server_status", "--server", srv.url.replace("//", "//admin:hunter2pw@"), "--json", env=env
        )
    assert leaky.returncode == 1 and "answered 500" in leaky.stderr and "Bearer ****" in leaky.stderr
    assert "admin:****@127.0.0.1" in leaky.stderr
    assert "admin:****@127.0.0.1" in json.loads(status.stdout)["data"]["source"]["label"]
    for run in (ok, leaky, status):
        everything = run.stdout + run.stderr
        assert TOKEN not in everything and KEY not in everything and "hunter2pw" not in everything
    show = cli("--show-config", "--server", "http://admin:hunter2pw@127.0.0.1:9", env=env)
    assert "hunter2pw" not in show.stdout and TOKEN not in show.stdout and "admin:****@" in show.stdout


def test_a_key_in_a_urls_query_is_masked_like_a_password(cli: Cli, tmp_path: Path) -> None:
    """``?api_key=`` on an AI proxy's URL, ``?token=`` on a server's: masked in errors, --show-config and the
    --verbose log, as the password of ``user:password@`` is."""
    log = tmp_path / "verbose.log"
    env = {"NETSPY_CONFIG": str(tmp_path / "none.toml"), "NETSPY_MODEL": "m",
           "OPENAI_BASE_URL": "http://127.0.0.1:9/v1?api_key=QSECRET99%2Bx&api-version=2024-06-01"}  # fmt: skip
    ai = cli("--tool", "ai_insights", "--summary-text", "x", "--verbose", "--log-file", str(log), env=env)
    server = cli("--tool", "server_status", "--server", "http://127.0.0.1:9/?token=TOK9&BARE", env=env)
    show = cli("--show-config", "--server", "http://127.0.0.1:9/?token=TOK9", env=env)
    assert ai.returncode == 1 and "127.0.0.1:9/v1?api_key=****&api-version=****" in ai.stderr, ai.stderr
    assert server.returncode == 1 and "?token=****&****" in server.stdout + server.stderr, server.stdout
    assert "?token=****" in show.stdout and "?api_key=****" in show.stdout, show.stdout
    for text in (ai.stdout, ai.stderr, server.stdout, server.stderr, show.stdout, show.stderr, log.read_text()):
        assert "QSECRET99" not in text and "TOK9" not in text and "BARE" not in text  # (as written and decoded)


def _read_export(directory: Path) -> str:
    return next(directory.glob("netspy-connections-*.json")).read_text(encoding="utf-8")


async def test_dashboard_export_carries_no_credentials(tmp_path: Path) -> None:
    with FakeEbpfServer("current", events=[connection_json(ago=1, command="curl")]) as srv:
        url = srv.url.replace("//", "//admin:hunter2pw@")
        source = HttpSource(url, token=TOKEN, retries=0)
        try:
            async with open_gateway(source) as gateway:
                app = NetspyApp(gateway, interval=0.2, export_dir=tmp_path)
                async with app.run_test(size=(160, 45)) as pilot:
                    await wait_for(pilot, lambda: app.dashboard.connections.row_count == 1, "first row")
                    await wait_for(
                        pilot,
                        lambda: app.dashboard.rendered is not None and app.dashboard.rendered.status is not None,
                        "status",
                    )
                    await pilot.press("e")
                    await wait_for(pilot, lambda: bool(list(tmp_path.glob("netspy-connections-*.json"))), "export")
                    screen = app.export_screenshot()
        finally:
            await source.aclose()
    exported = _read_export(tmp_path)
    assert "admin:****@127.0.0.1" in json.loads(exported)["source"]
    for text in (exported, screen):
        assert "hunter2pw" not in text and TOKEN not in text
