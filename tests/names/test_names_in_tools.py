"""Destination names in the tools' results, as users and agents see them: `--tool` on the command
line and a real in-process MCP session, against a DNS server on 127.0.0.1 the test starts."""

from __future__ import annotations

import json
import os

import pytest

from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.names import NameResolver
from netspy_tui.telemetry.memory import MemorySource
from tests.factories import connection, connection_json
from tests.names.dns_server import PtrServer

NAMES = {"93.184.216.34": "example.com", "2001:db8::7": "v6.example.net"}


def _recording(tmp_path, events: list[dict]) -> str:  # type: ignore[no-untyped-def]
    path = tmp_path / "rec.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return str(path)


def test_tool_lists_names_beside_addresses(run_cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rec = _recording(tmp_path, [connection_json(ip="93.184.216.34", ago=5), connection_json(ip="10.9.9.9", ago=4),
                                connection_json(ip="2001:db8::7", ago=3)])  # fmt: skip
    with PtrServer(NAMES) as server:
        args = ["--replay", rec, "--replay-speed", "0", "--dns-server", f"127.0.0.1:{server.port}"]
        out = run_cli("--tool", "list_connections", *args)
        assert out.returncode == 0, out.stderr
        assert "example.com (93.184.216.34:443)" in out.stdout
        assert "v6.example.net ([2001:db8::7]:443)" in out.stdout
        assert "10.9.9.9:443" in out.stdout  # no name: the address alone
        asked = server.count
        assert asked >= 3

        out = run_cli("--tool", "list_connections", "--json", *args)
        events = {e["destination_ip"]: e for e in json.loads(out.stdout)["data"]["events"]}
        assert events["93.184.216.34"]["hostname"] == "example.com"
        assert events["10.9.9.9"].get("hostname") is None

        out = run_cli("--tool", "analyze_patterns", "--duration", "600", *args)
        assert "example.com (93.184.216.34:443) 1" in out.stdout, out.stdout

        before = server.count
        out = run_cli("--tool", "list_connections", "--no-dns", *args)
        assert out.returncode == 0 and "example.com" not in out.stdout and "93.184.216.34:443" in out.stdout
        assert server.count == before  # --no-dns asks nothing at all


def test_a_bad_dns_server_is_one_line_and_exit_2(run_cli) -> None:  # type: ignore[no-untyped-def]
    out = run_cli("--tool", "list_connections", "--dns-server", "not-an-address")
    assert out.returncode == 2
    assert "--dns-server" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.asyncio
async def test_a_live_view_gets_names_on_the_next_call_without_waiting() -> None:
    source = MemorySource([connection(ip="93.184.216.34"), connection(ip="127.0.0.53", port=53, pid=os.getpid())])
    with PtrServer(NAMES) as server:
        names = NameResolver(nameservers=["127.0.0.1"], port=server.port, hosts_path=None)
        try:
            async with open_gateway(source, names=names) as gw:  # names_wait 0: never waits
                first = await gw.call("list_connections", {})
                assert "example.com" not in first.text
                names.resolve(["93.184.216.34"], wait=10)
                second = await gw.call("list_connections", {})
                assert "example.com (93.184.216.34:443)" in second.text
        finally:
            names.close()


@pytest.mark.asyncio
async def test_own_dns_questions_are_marked() -> None:
    with PtrServer({}) as server:
        names = NameResolver(nameservers=["127.0.0.1"], port=server.port, hosts_path=None)
        source = MemorySource([connection(ip="127.0.0.1", port=server.port, pid=os.getpid(), protocol="UDP")])
        try:
            async with open_gateway(source, names=names, names_wait=2.0) as gw:
                result = await gw.call("list_connections", {})
                assert "[netspy-tui's own DNS query]" in result.text
                assert result.data["events"][0]["own_dns_query"] is True
        finally:
            names.close()


def test_names_are_settings_too(run_cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """dns / dns_server in the config file or the environment, shown with their source."""
    rec = _recording(tmp_path, [connection_json(ip="93.184.216.34", ago=5)])
    with PtrServer(NAMES) as server:
        env = {"NETSPY_DNS_SERVER": f"127.0.0.1:{server.port}"}
        out = run_cli("--tool", "list_connections", "--replay", rec, "--replay-speed", "0", env=env)
        assert "example.com (93.184.216.34:443)" in out.stdout, out.stderr
        config = tmp_path / "netspy.toml"
        config.write_text("dns = false\n")
        before = server.count
        env["NETSPY_CONFIG"] = str(config)
        out = run_cli("--tool", "list_connections", "--replay", rec, "--replay-speed", "0", env=env)
        assert out.returncode == 0 and "example.com" not in out.stdout
        assert server.count == before
        shown = run_cli("--show-config", env=env).stdout
        assert any(line.split()[:1] == ["dns"] and "file" in line for line in shown.splitlines()), shown
        assert any(line.split()[:1] == ["dns_server"] and "NETSPY_DNS_SERVER" in line for line in shown.splitlines())
    bad = run_cli("--tool", "list_connections", env={"NETSPY_DNS_SERVER": "nowhere:99999"})
    assert bad.returncode == 2 and "dns_server" in bad.stderr and "Traceback" not in bad.stderr
