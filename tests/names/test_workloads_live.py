"""A process the test moves into a container-like cgroup connects; the tools name its workload
(real kernel, the embedded eBPF collector, a real MCP session)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from netspy_tui.errors import CollectorError
from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.names import WorkloadResolver
from netspy_tui.names.workload import cgroup2_mount
from netspy_tui.store import EventStore
from netspy_tui.telemetry.embedded import EmbeddedSource

REQUIRE = os.environ.get("NETSPY_REQUIRE_EBPF") == "1"
CID = "c0ffee" + "1" * 52 + "d00d00"

CHILD = """
import socket, sys
sys.stdin.readline()                       # moved into its cgroup: connect now
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print("connected", flush=True)
sys.stdin.readline()                       # stay alive until the test is done
"""


@pytest.mark.ebpf
@pytest.mark.parametrize(("relative", "shown"), [(f"docker-{CID}.scope", f"docker {CID[:12]}"),
                                                  ("billing.service", "billing.service")])  # fmt: skip
async def test_a_containers_connects_carry_its_workload(tmp_path: Path, relative: str, shown: str) -> None:
    mount = cgroup2_mount()
    if mount is None or os.geteuid() != 0:
        if REQUIRE:
            pytest.fail("NETSPY_REQUIRE_EBPF=1 but there is no cgroup v2 mount or no root")
        pytest.skip("needs root and a cgroup v2 mount")
    parent = mount / f"netspy-test-{uuid.uuid4().hex[:8]}"
    directory = parent / relative
    directory.mkdir(parents=True)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    store = EventStore(tmp_path / "events.db")
    try:
        source = await EmbeddedSource.launch("ebpf", store)
    except CollectorError as exc:
        directory.rmdir()
        parent.rmdir()
        if REQUIRE:
            pytest.fail(f"NETSPY_REQUIRE_EBPF=1 but the eBPF collector cannot start: {exc}")
        pytest.skip(f"eBPF collector unavailable: {exc}")
    # a plain child the test talks to line by line (its moves and reads are quick, nothing else is waiting)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(port)],  # noqa: ASYNC220
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        (directory / "cgroup.procs").write_text(str(child.pid))
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "connected"
        async with open_gateway(source, workloads=WorkloadResolver(mount=mount)) as gw:
            for _ in range(200):  # the collector stores it within a drain interval or two
                result = await gw.call("list_connections", {"pid": child.pid})
                events = (result.data or {}).get("events") or []
                if any(e["destination_port"] == port for e in events):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"no connect of pid {child.pid} to port {port}: {result.text}")
            event = next(e for e in events if e["destination_port"] == port)
            assert event["workload"] == shown
            assert f"[{shown}]" in result.text
            for _ in range(200):  # the kernel's counts arrive with the next drain
                processes = await gw.call("list_processes", {"duration": 60})
                rows = [p for p in processes.data["processes"] if child.pid in p["pids"]]
                if rows:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"pid {child.pid} not in list_processes: {processes.text}")
            row = rows[0]
            assert shown in row["workloads"]  # beside the other python processes' workloads
            assert shown in processes.text
    finally:
        child.kill()
        child.wait()
        listener.close()
        await source.aclose()
        directory.rmdir()
        parent.rmdir()
