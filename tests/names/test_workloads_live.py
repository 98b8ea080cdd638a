"""A process the test moves into a container-like cgroup connects; the tools name its workload
(real kernel, the embedded eBPF collector, a real MCP session)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

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


@asynccontextmanager
async def cgroup_and_collector(tmp_path: Path, relative: str) -> AsyncIterator[tuple[Path, Path, int, EmbeddedSource]]:
    """A cgroup made for the test under the cgroup2 mount, a loopback listener and the embedded eBPF
    collector: (mount, the cgroup's directory, the listener's port, the source); all removed after."""
    mount = cgroup2_mount()
    if mount is None or os.geteuid() != 0:
        if REQUIRE:
            pytest.fail("NETSPY_REQUIRE_EBPF=1 but there is no cgroup v2 mount or no root")
        pytest.skip("needs root and a cgroup v2 mount")
    parent = mount / f"netspy-test-{uuid.uuid4().hex[:8]}"
    directory = parent / relative
    directory.mkdir(parents=True)
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        try:
            source = await EmbeddedSource.launch("ebpf", EventStore(tmp_path / "events.db"))
        except CollectorError as exc:
            if REQUIRE:
                pytest.fail(f"NETSPY_REQUIRE_EBPF=1 but the eBPF collector cannot start: {exc}")
            pytest.skip(f"eBPF collector unavailable: {exc}")
        try:
            yield mount, directory, listener.getsockname()[1], source
        finally:
            await source.aclose()
    finally:
        listener.close()
        directory.rmdir()
        parent.rmdir()


async def wait_for_connect(gw: Any, pid: int, port: int) -> dict[str, Any]:
    """list_connections' event for ``pid``'s connect to ``port`` (the collector stores it within a
    drain interval or two)."""
    for _ in range(200):
        result = await gw.call("list_connections", {"pid": pid})
        events = [e for e in (result.data or {}).get("events") or [] if e["destination_port"] == port]
        if events:
            return dict(events[0], text=result.text)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no connect of pid {pid} to port {port}: {result.text}")


@pytest.mark.ebpf
@pytest.mark.parametrize(("relative", "shown"), [(f"docker-{CID}.scope", f"docker {CID[:12]}"),
                                                  ("billing.service", "billing.service")])  # fmt: skip
async def test_a_containers_connects_carry_its_workload(tmp_path: Path, relative: str, shown: str) -> None:
    async with cgroup_and_collector(tmp_path, relative) as (mount, directory, port, source):
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
                event = await wait_for_connect(gw, child.pid, port)
                assert event["workload"] == shown
                assert f"[{shown}]" in event["text"]
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


SHORT_LIVED = """
import socket, sys
sys.stdin.readline()                       # moved into its cgroup: connect, then exit at once
socket.create_connection(("127.0.0.1", int(sys.argv[1]))).close()
"""


@pytest.mark.ebpf
async def test_a_process_gone_before_anyone_read_its_cgroup_still_has_its_workload(tmp_path: Path) -> None:
    """The kernel reads the cgroup id when the process connects; the reader resolves it to the
    cgroup's path while the cgroup is there. The process has exited and been reaped (its /proc entry
    is gone) before any tool asks: the tools still name its workload."""
    cid = uuid.uuid4().hex * 2
    shown = f"containerd {cid[:12]}"
    async with cgroup_and_collector(tmp_path, f"cri-containerd-{cid}.scope") as (mount, directory, port, source):
        child = subprocess.Popen([sys.executable, "-c", SHORT_LIVED, str(port)], stdin=subprocess.PIPE, text=True)  # noqa: ASYNC220
        try:
            (directory / "cgroup.procs").write_text(str(child.pid))
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.wait(timeout=30) == 0  # noqa: ASYNC101 - a child that exits at once
            assert not os.path.exists(f"/proc/{child.pid}")  # noqa: ASYNC240 - one stat, nothing waits on it
            async with open_gateway(source, workloads=WorkloadResolver(mount=mount)) as gw:
                assert (await wait_for_connect(gw, child.pid, port))["workload"] == shown
                for _ in range(200):  # the kernel's counts arrive with the next drain
                    processes = await gw.call("list_processes", {"duration": 60, "group_by": "workload"})
                    if shown in processes.text:
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError(f"workload {shown} not in list_processes: {processes.text}")
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
