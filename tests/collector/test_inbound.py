"""Inbound connections against the real kernel, as an outside agent sees them: a test server (a child
process, its own pid) accepts N TCP connections from this process over loopback, and
``list_connections(direction="inbound")`` through a real MCP session lists exactly those N — the server's
pid and name, the port it listened on, and each client port that connected — while the default
(``outbound``, connect() attempts) and ``get_network_summary`` stay what they were: the server connected
nowhere. Waits are bounded polls on the tool's own answer; the assertions are exact.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from mcp.client import Client

from netspy_tui.mcp_tools.server import create_server
from netspy_tui.models import ConnectionList
from netspy_tui.telemetry.embedded import EmbeddedSource
from tests.collector.test_traffic import embedded  # noqa: F401  (the fixture: a live eBPF collector)

N = 20

SERVER = textwrap.dedent(
    """
    import socket, sys
    host, n = sys.argv[1], int(sys.argv[2])
    t = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    t.bind((host, 0))
    t.listen(n)
    print(t.getsockname()[1], flush=True)
    for _ in range(n):
        c, _ = t.accept()
        while c.recv(4096):
            pass
        c.close()
    sys.stdin.readline()  # alive until the test has read its name
    """
)


async def listed(client: Client, **args: Any) -> ConnectionList:
    result = await client.call_tool("list_connections", {"max_events": 1000, **args})
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return ConnectionList.model_validate(result.structured_content)


@pytest.mark.ebpf
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_connections_a_test_server_accepted_are_listed_as_inbound(
    embedded: EmbeddedSource,  # noqa: F811
    host: str,
) -> None:
    child = subprocess.Popen([sys.executable, "-c", SERVER, host, str(N)], stdin=subprocess.PIPE,  # noqa: ASYNC220
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert child.stdout is not None and child.stdin is not None
        port = int(child.stdout.readline())
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        mine = set()
        for _ in range(N):
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.connect((host, port))
                mine.add(s.getsockname()[1])
        name = Path(f"/proc/{child.pid}/comm").read_text().strip()  # noqa: ASYNC240
        async with Client(create_server(embedded)) as client:
            deadline = time.monotonic() + 10
            while True:
                inbound = await listed(client, pid=child.pid, direction="inbound")
                if len(inbound.events) >= N or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert inbound.direction == "inbound" and inbound.inbound_available is True
            assert inbound.total_count == N, inbound.events
            got = inbound.events
            assert {(e.direction, e.pid, e.command, e.protocol, e.destination_ip, e.destination_port, e.peer_ip)
                    for e in got} == {("inbound", child.pid, name, "TCP", host, port, host)}  # fmt: skip
            assert sorted(e.peer_port or 0 for e in got) == sorted(mine)
            assert len({e.id for e in got}) == N

            text = await client.call_tool("list_connections", {"pid": child.pid, "direction": "inbound"})
            first = text.content[0].text  # type: ignore[union-attr]
            assert f"{N} of {N} inbound connections" in first and "accepted on " in first

            # outside agents that do not ask see what they saw before: the server made no connect()
            assert (await listed(client, pid=child.pid)).events == []
            summary = await client.call_tool("get_network_summary", {"pid": child.pid})
            assert summary.structured_content is not None and summary.structured_content["count"] == 0

            # both sides of the loopback connections: this process's N connects and the server's N accepts (asked
            # by process: the 1,000 newest of the whole host's need not hold them while other tests connect)
            both = [e for pid in (os.getpid(), child.pid)
                    for e in (await listed(client, direction="all", pid=pid, max_events=1000)).events]  # fmt: skip
            ours = [e for e in both if (e.direction == "outbound" and e.pid == os.getpid()
                                        and e.destination_port == port) or
                    (e.direction == "inbound" and e.pid == child.pid)]  # fmt: skip
            assert sorted(e.direction for e in ours) == ["inbound"] * N + ["outbound"] * N
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(timeout=10) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
