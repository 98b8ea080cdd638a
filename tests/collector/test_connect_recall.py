"""connect() calls that start no attempt, and attempts the routing refused, as the tools report them (root,
real kernel).

* A non-blocking connect() called again once its attempt failed returns that attempt's error and starts
  nothing: by the time it returns, the kernel has disconnected the socket (its peer port is 0 again), so only
  the socket's state when the call began (SS_CONNECTING: where connect() is followed at its entry too), or the
  mark the call that returned EINPROGRESS left on the socket (where connect() is followed at its exit alone),
  says it is not a new attempt. One attempt each, refused, on both.
* A connect() to a blackhole route (Calico installs them) fails EINVAL before any packet: an attempt, shown as
  ``blackholed``; an EINVAL from a bad argument (short address, link-local IPv6 without a scope) is not one.
"""

from __future__ import annotations

import asyncio
import errno
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from mcp.client import Client

from netspy_tui.collector.ebpf import EbpfCollector
from netspy_tui.mcp_tools.server import create_server
from netspy_tui.telemetry.embedded import EmbeddedSource
from tests.collector.connect_paths import check_connect_path, on_connect_path
from tests.collector.netns import own_namespace
from tests.collector.test_traffic import started


@pytest.fixture
async def embedded(connect_path: str) -> AsyncIterator[EmbeddedSource]:
    """A live eBPF collector feeding an in-memory store, on each of the ways connect() is followed (the
    re-called connect is told apart differently on each)."""
    with on_connect_path(connect_path):
        source = await started()
    try:
        assert isinstance(source.collector, EbpfCollector)
        check_connect_path(source.collector, connect_path)
        yield source
    finally:
        await source.aclose()


RUNS = 4

RECALL = textwrap.dedent(
    """
    import errno, select, socket, sys
    fam = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
    host = "::1" if fam == socket.AF_INET6 else "127.0.0.1"
    p = socket.socket(fam); p.bind((host, 0)); port = p.getsockname()[1]; p.close()  # a closed port
    seen = []
    for _ in range(int(sys.argv[2])):
        s = socket.socket(fam)
        s.setblocking(False)
        first = s.connect_ex((host, port))
        poll = select.poll(); poll.register(s, select.POLLOUT); poll.poll(5000)
        again = s.connect_ex((host, port))  # reports the attempt's error: starts nothing
        seen.append((errno.errorcode[first], errno.errorcode[again]))
        s.close()
    # after success: connect() again returns 0 (it reports the attempt), then EISCONN: neither starts anything
    srv = socket.socket(fam); srv.bind((host, 0)); srv.listen(8)
    s = socket.socket(fam); s.setblocking(False)
    s.connect_ex(srv.getsockname()[:2]); poll = select.poll(); poll.register(s, select.POLLOUT); poll.poll(5000)
    seen.append(errno.errorcode.get(s.connect_ex(srv.getsockname()[:2]), "0"))
    seen.append(errno.errorcode.get(s.connect_ex(srv.getsockname()[:2]), "0"))
    s.close(); srv.close()
    print(port, seen, flush=True)
    sys.stdin.readline()
    """
)


async def tool(client: Client, name: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(name, args)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


def outcomes(summary: dict[str, Any]) -> dict[str, int]:
    return {c["key"]: c["count"] for c in summary["stats"]["outcomes"]}


async def until(client: Client, name: str, done: Any, **args: Any) -> dict[str, Any]:
    """The tool's answer once ``done(answer)`` holds, or the last answer at the deadline."""
    deadline = time.monotonic() + 10
    while True:
        got = await tool(client, name, **args)
        if done(got) or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.1)


def release(child: subprocess.Popen[str]) -> None:
    """Let the child that made the connects (and waited, its sockets open, for the tools to be read) end."""
    assert child.stdin is not None
    child.stdin.write("\n")
    child.stdin.flush()
    assert child.wait(timeout=10) == 0


@pytest.mark.ebpf
@pytest.mark.parametrize("family", ["4", "6"])
async def test_connect_again_after_a_nonblocking_attempt_failed_is_not_another_attempt(
    embedded: EmbeddedSource,  # noqa: F811
    family: str,
) -> None:
    child = subprocess.Popen([sys.executable, "-c", RECALL, family, str(RUNS)], stdin=subprocess.PIPE,  # noqa: ASYNC220
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert child.stdout is not None and child.stdin is not None
        line = await asyncio.to_thread(child.stdout.readline)
        port_text, seen = line.split(" ", 1)
        assert seen.strip() == repr([("EINPROGRESS", "ECONNREFUSED")] * RUNS + ["0", "EISCONN"])
        async with Client(create_server(embedded)) as client:
            # RUNS refused + the one that connected; the calls that reported them add nothing
            summary = await until(client, "get_network_summary", lambda s: s["count"] >= RUNS + 1, pid=child.pid)
            await asyncio.sleep(1.0)  # (anything counted twice would be drained by now)
            summary = await tool(client, "get_network_summary", pid=child.pid)
            assert summary["count"] == RUNS + 1, summary["text"]
            patterns = await tool(client, "analyze_patterns", pid=child.pid)
            assert outcomes(patterns) == {"refused": RUNS, "ok": 1}, patterns["stats"]["outcomes"]
            listed = await tool(client, "list_connections", pid=child.pid, max_events=100)
            to_port = [e for e in listed["events"] if e["destination_port"] == int(port_text)]
            assert (
                sorted((e["return_code"], e["outcome"]) for e in to_port) == [(-errno.EINPROGRESS, "refused")] * RUNS
            ), to_port
            latency = await tool(client, "get_connect_latency", pid=child.pid)
            assert latency["stats"]["attempts"] == RUNS + 1, latency["stats"]
        release(child)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


BLACKHOLE = textwrap.dedent(
    """
    import ctypes, errno, socket, struct, sys
    libc = ctypes.CDLL(None, use_errno=True)
    seen = []
    for fam, dst in ((socket.AF_INET, "203.0.113.9"), (socket.AF_INET6, "2001:db8:bb::9")):
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(fam, kind) as s:
                seen.append(errno.errorcode.get(s.connect_ex((dst, 80))))
    # EINVAL for the arguments: none is an attempt
    v4 = struct.pack("!HH4s8x", socket.AF_INET, 80, socket.inet_aton("203.0.113.9"))
    v4 = struct.pack("=H", socket.AF_INET) + v4[2:]
    for length in (8, 200, 0xFFFFFFFF):  # shorter than sockaddr_in, longer than sockaddr_storage, negative
        with socket.socket() as s:
            libc.connect.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            rc = libc.connect(s.fileno(), v4.ljust(256, b"\\0"), length)
            seen.append(errno.errorcode.get(ctypes.get_errno()) if rc else "0")
    for kind, dst in ((socket.SOCK_STREAM, "fe80::1"), (socket.SOCK_DGRAM, "fe80::1"), (socket.SOCK_DGRAM, "ff02::1")):
        with socket.socket(socket.AF_INET6, kind) as s:  # they need a scope id
            seen.append(errno.errorcode.get(s.connect_ex((dst, 80))))
    print(seen, flush=True)
    sys.stdin.readline()
    """
)


@pytest.fixture
def blackholed_ns() -> Iterator[str]:
    """A network namespace whose routes blackhole 203.0.113.0/24 and 2001:db8:bb::/48 (removed after)."""
    blackholes = (["route", "add", "blackhole", "203.0.113.0/24"],
                  ["-6", "route", "add", "blackhole", "2001:db8:bb::/48"])  # fmt: skip
    with own_namespace("nsrecall", blackholes, required=False) as name:
        yield name


@pytest.mark.ebpf
async def test_a_blackhole_route_is_an_attempt_blackholed_and_bad_arguments_are_not(
    embedded: EmbeddedSource,  # noqa: F811
    blackholed_ns: str,
) -> None:
    child = subprocess.Popen(["ip", "netns", "exec", blackholed_ns, sys.executable, "-c", BLACKHOLE],  # noqa: ASYNC220
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert child.stdout is not None and child.stdin is not None
        seen = await asyncio.to_thread(child.stdout.readline)
        assert seen.strip() == repr(["EINVAL"] * 10)
        async with Client(create_server(embedded)) as client:
            await until(client, "get_network_summary", lambda s: s["count"] >= 4, pid=child.pid)
            await asyncio.sleep(1.0)  # (anything counted from the bad calls would be drained by now)
            summary = await tool(client, "get_network_summary", pid=child.pid)
            assert summary["count"] == 4, summary["text"]
            patterns = await tool(client, "analyze_patterns", pid=child.pid)
            assert outcomes(patterns) == {"blackholed": 4}, patterns["stats"]["outcomes"]
            assert patterns["failure_ratio"] == 1.0
            listed = await tool(client, "list_connections", pid=child.pid, max_events=100)
            assert sorted((e["destination"], e["protocol"], e["return_code"], e["outcome"])
                          for e in listed["events"]) == sorted(
                (dst, proto, -errno.EINVAL, "blackholed")
                for dst in ("203.0.113.9:80", "[2001:db8:bb::9]:80") for proto in ("TCP", "UDP")
            )  # fmt: skip
        release(child)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
