"""Traffic against the real kernel: bytes a test client and a test server moved over loopback come
back from ``get_traffic`` and ``/api/traffic`` exactly, for the right process and direction; SYN
retransmits against a full accept backlog equal the kernel's own RetransSegs delta.

The server is a child process (its own pid): it accepts one TCP connection, peeks at it
(MSG_PEEK: not counted), reads until EOF, answers ``REPLY`` bytes and reads the UDP datagrams. The
client is this process. Waits are bounded polls on the tool's own answer; the assertions are exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from mcp.client import Client

from netspy_tui.collector.ebpf import EbpfCollector, syscalls
from netspy_tui.errors import CollectorError
from netspy_tui.mcp_tools.server import create_server
from netspy_tui.models import LatencyStats, TrafficFlow, TrafficStats, ns_to_time
from netspy_tui.serve.app import create_app
from netspy_tui.store.sqlite import EventStore
from netspy_tui.telemetry.embedded import EmbeddedSource
from tests.collector.netns import own_namespace
from tests.collector.test_ebpf import REQUIRE

TCP_BYTES = 1_000_003
REPLY = 70_001
DATAGRAMS = (1000, 1, 1472, 9000, 3)
UDP_BYTES = sum(DATAGRAMS)

SERVER = textwrap.dedent(
    """
    import socket, sys
    host, datagrams, reply = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    t = socket.socket(family, socket.SOCK_STREAM)
    t.bind((host, 0))
    t.listen(1)
    u = socket.socket(family, socket.SOCK_DGRAM)
    u.bind((host, 0))
    print(t.getsockname()[1], u.getsockname()[1], flush=True)
    c, _ = t.accept()
    c.recv(16, socket.MSG_PEEK)
    n = 0
    while True:
        b = c.recv(65536)
        if not b:
            break
        n += len(b)
    c.sendall(b"r" * reply)
    c.close()
    m = sum(len(u.recv(65536)) for _ in range(datagrams))
    print(n, m, flush=True)
    """
)


#: A child in its own network namespace (its /proc/net/snmp counts only its own traffic): a listener
#: with listen(0) whose accept queue one connection fills, so the next SYN is dropped (ListenDrops
#: says when). Then the queued connection is accepted, so the SYN the client retransmits after ~1 s
#: gets in: a connect that succeeds after one SYN retransmit. Prints its pid, the listener's port, the
#: client's port, the RetransSegs delta around the attempt, its duration and its SO_ERROR.
SYN_RETRANSMIT = textwrap.dedent(
    """
    import ctypes, errno, os, select, socket, subprocess, sys, time
    if ctypes.CDLL(None, use_errno=True).unshare(0x40000000) != 0:  # CLONE_NEWNET
        sys.exit(f"unshare: errno {ctypes.get_errno()}")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    def counter(path, prefix, name):
        with open(path) as f:
            head, values = [line.split() for line in f if line.startswith(prefix)]
        return int(values[head.index(name)])
    def retrans():
        return counter("/proc/net/snmp", "Tcp:", "RetransSegs")
    def listen_drops():
        return counter("/proc/net/netstat", "TcpExt:", "ListenDrops")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    first = socket.create_connection(("127.0.0.1", port))  # fills the accept queue (never accepted)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # until the kernel has queued it (ss: Recv-Q of a listener)
        out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout.split()
        if out and out[1] == "1":
            break
        time.sleep(0.01)
    before, drops = retrans(), listen_drops()
    start = time.monotonic()
    c = socket.socket()
    c.setblocking(False)
    assert c.connect_ex(("127.0.0.1", port)) == errno.EINPROGRESS
    mine = c.getsockname()[1]
    deadline = time.monotonic() + 5
    while listen_drops() == drops and time.monotonic() < deadline:
        time.sleep(0.001)
    assert listen_drops() > drops, "the SYN was not dropped"
    assert time.monotonic() - start < 0.9, "too slow to free the queue before the retransmit"
    accepted, _ = listener.accept()  # room again: the retransmitted SYN gets in
    select.select([], [c], [], 10)
    err = c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    elapsed = time.monotonic() - start
    c.close()
    print(os.getpid(), port, mine, retrans() - before, elapsed, err, flush=True)
    """
)


@pytest.fixture
async def embedded() -> AsyncIterator[EmbeddedSource]:
    source = await started()
    try:
        yield source
    finally:
        await source.aclose()


async def started(byte_counters: bool = True) -> EmbeddedSource:
    """A live eBPF collector feeding an in-memory store, counting traffic (else the test is skipped);
    ``byte_counters`` False: with the per-call byte programs (what a kernel without the counters' hooks gets)."""
    collector = EbpfCollector(drain_interval=0.2, byte_counters=byte_counters)
    store = EventStore(None)
    source = EmbeddedSource(collector, store)
    try:
        await source.start()
    except CollectorError as exc:
        store.close()
        if REQUIRE:
            pytest.fail(f"NETSPY_REQUIRE_EBPF=1 but the eBPF collector cannot start: {exc}")
        pytest.skip(f"eBPF collector unavailable: {exc}")
    if not collector.counts_traffic:
        await source.aclose()
        pytest.skip("this kernel has no sock/sock_send_length and sock_recv_length tracepoints")
    return source


def send_then_read_all(conn: socket.socket, size: int) -> int:
    """Send ``size`` bytes on ``conn``, shut its writing side, and read until the peer closes: bytes read."""
    conn.sendall(b"s" * size)
    conn.shutdown(socket.SHUT_WR)
    got = 0
    while chunk := conn.recv(65536):
        got += len(chunk)
    return got


def exchange(host: str) -> tuple[int, int, int, int]:
    """Run the server child and talk to it: (server pid, its TCP port, its UDP port, our TCP port)."""
    child = subprocess.Popen([sys.executable, "-c", SERVER, host, str(len(DATAGRAMS)), str(REPLY)],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert child.stdout is not None
        tport, uport = map(int, child.stdout.readline().split())
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as t:
            t.connect((host, tport))
            my_port = t.getsockname()[1]
            got = send_then_read_all(t, TCP_BYTES)
        assert got == REPLY
        with socket.socket(family, socket.SOCK_DGRAM) as u:
            u.connect((host, uport))
            for size in DATAGRAMS:
                u.send(b"d" * size)
        line = child.stdout.readline()
        assert child.wait(timeout=10) == 0
        assert list(map(int, line.split())) == [TCP_BYTES, UDP_BYTES]  # what the server's application read
        return child.pid, tport, uport, my_port
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


async def poll(read: Callable[[], Awaitable[TrafficStats]], done: Callable[[TrafficStats], bool],
               within: float = 10.0) -> TrafficStats:  # fmt: skip
    """The stats once ``done`` holds, or the last ones read at the deadline (then the assertions fail
    with the numbers that were there)."""
    deadline = time.monotonic() + within
    while True:
        stats = await read()
        if done(stats) or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.05)


def flows(stats: TrafficStats, **match: Any) -> list[TrafficFlow]:
    return [f for f in stats.flows if all(getattr(f, k) == v for k, v in match.items())]


def expected(host: str, server: int, tport: int, uport: int, my_port: int) -> dict[str, dict[str, Any]]:
    """(pid, protocol, local port) -> what the tool must say."""
    me = os.getpid()
    return {
        "client tcp": dict(pid=me, protocol="TCP", local=host, local_port=my_port, remote=host, remote_port=tport,
                           tx_bytes=TCP_BYTES, rx_bytes=REPLY, direction="outbound"),
        # the server's side: accepted (a passive open), charged to the listening process
        "server tcp": dict(pid=server, protocol="TCP", local=host, local_port=tport, remote=host, remote_port=my_port,
                           tx_bytes=REPLY, rx_bytes=TCP_BYTES, direction="inbound"),
        "client udp": dict(pid=me, protocol="UDP", local=host, remote=host, remote_port=uport, tx_bytes=UDP_BYTES,
                           rx_bytes=0, direction=""),
        # an unconnected UDP socket has no peer address
        "server udp": dict(pid=server, protocol="UDP", local=host, local_port=uport, remote="", remote_port=0,
                           tx_bytes=0, rx_bytes=UDP_BYTES, direction=""),
    }  # fmt: skip


_FIGURES = ("tx_bytes", "rx_bytes", "direction")


def check(stats: TrafficStats, want: dict[str, dict[str, Any]]) -> None:
    for name, fields in want.items():
        key = {k: v for k, v in fields.items() if k not in _FIGURES}
        got = flows(stats, **key)
        assert len(got) == 1, f"{name}: {len(got)} flows match {key}: {stats.flows}"
        assert (got[0].tx_bytes, got[0].rx_bytes, got[0].direction) == (
            fields["tx_bytes"],
            fields["rx_bytes"],
            fields["direction"],
        ), (name, got)
        if fields["direction"]:  # a TCP connection opened and closed before anyone looked: its lifetime
            assert got[0].lifetime_us is not None and 0 < got[0].lifetime_us < 30_000_000, (name, got)


def complete(want: dict[str, dict[str, Any]]) -> Callable[[TrafficStats], bool]:
    def done(stats: TrafficStats) -> bool:
        for fields in want.values():
            key = {k: v for k, v in fields.items() if k not in _FIGURES}
            got = flows(stats, **key)
            if not got or sum(f.tx_bytes for f in got) < fields["tx_bytes"] or \
                    sum(f.rx_bytes for f in got) < fields["rx_bytes"]:  # fmt: skip
                return False
            if fields["direction"] and any(f.lifetime_us is None for f in got):  # (closed: its lifetime)
                return False
        return True

    return done


@pytest.mark.ebpf
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_get_traffic_reports_exact_bytes_per_process_and_direction(embedded: EmbeddedSource, host: str) -> None:
    server, tport, uport, my_port = exchange(host)
    want = expected(host, server, tport, uport, my_port)
    async with Client(create_server(embedded)) as client:

        async def read(pid: int | None = None) -> TrafficStats:
            args: dict[str, Any] = {"duration": 120, "limit": 200}
            if pid is not None:
                args["pid"] = pid
            result = await client.call_tool("get_traffic", args)
            assert not result.is_error, result.content
            assert result.structured_content is not None
            return TrafficStats.model_validate(result.structured_content["stats"])

        stats = await poll(read, complete(want))
        check(stats, want)
        # calls: the UDP sends one each; TCP's bytes come from the kernel's per-socket counters, which count no
        # calls: not counted (null), never a 0 beside the bytes
        (udp,) = flows(stats, pid=os.getpid(), protocol="UDP", remote_port=uport)
        assert (udp.tx_calls, udp.rx_calls) == (len(DATAGRAMS), 0)
        (tcp,) = flows(stats, pid=os.getpid(), protocol="TCP", local_port=my_port)
        assert (tcp.tx_calls, tcp.rx_calls) == (None, None), tcp
        # per process: the server's totals are exactly its own traffic
        mine = await read(server)
        assert (mine.rx_bytes, mine.tx_bytes) == (TCP_BYTES + UDP_BYTES, REPLY)
        assert [(p.pids, p.inbound, p.outbound) for p in mine.processes] == [([server], 1, 0)]
        assert (mine.inbound_connections, mine.outbound_connections, mine.closed_connections) == (1, 0, 1)
        text = (await client.call_tool("get_traffic", {"pid": server, "duration": 120})).content[0].text
        assert f"read {TCP_BYTES + UDP_BYTES:,} bytes" in text and f"sent {REPLY:,} bytes" in text


@pytest.mark.ebpf
async def test_api_traffic_serves_the_same_exact_figures(embedded: EmbeddedSource) -> None:
    server, tport, uport, my_port = exchange("127.0.0.1")
    want = expected("127.0.0.1", server, tport, uport, my_port)
    transport = httpx.ASGITransport(app=create_app(embedded))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:

        async def read() -> TrafficStats:
            resp = await http.get("/api/traffic", params={"duration_seconds": 120, "limit": 1000})
            assert resp.status_code == 200, resp.text
            return TrafficStats.model_validate(resp.json())

        check(await poll(read, complete(want)), want)
        resp = await http.get("/api/traffic", params={"pid": server, "duration_seconds": 120})
        body = resp.json()
        assert (body["rx_bytes"], body["tx_bytes"], body["available"]) == (TCP_BYTES + UDP_BYTES, REPLY, True)
        assert body["query_time"].endswith("Z")
        assert (await http.get("/api/traffic", params={"limit": 1001})).status_code == 400


@pytest.mark.ebpf
async def test_syn_retransmits_equal_retranssegs_and_the_slow_connect_takes_over_a_second(
        embedded: EmbeddedSource) -> None:  # fmt: skip
    if shutil.which("ip") is None or shutil.which("ss") is None:
        pytest.fail("iproute2 (ip, ss) is needed to make the test's network namespace")
    out = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", SYN_RETRANSMIT], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    pid, port, mine, delta, elapsed, err = out.stdout.split()
    pid, port, mine, delta = int(pid), int(port), int(mine), int(delta)
    assert (int(err), delta) == (0, 1), f"expected one SYN retransmit and success, got {delta} and errno {err}"
    async with Client(create_server(embedded)) as client:

        async def read() -> TrafficStats:
            result = await client.call_tool("get_traffic", {"pid": pid, "duration": 120})
            assert not result.is_error, result.content
            return TrafficStats.model_validate(result.structured_content["stats"])

        stats = await poll(read, lambda s: s.retransmits >= delta)
        assert stats.retransmits == delta
        (flow,) = flows(stats, remote_port=port, local_port=mine)
        assert (flow.pid, flow.protocol, flow.remote, flow.retransmits, flow.direction) == (
            pid,
            "TCP",
            "127.0.0.1",
            delta,
            "outbound",
        )
        assert [(p.pids, p.retransmits) for p in stats.processes] == [([pid], delta)]
        text = (await client.call_tool("get_traffic", {"pid": pid, "duration": 120})).content[0].text
        assert f"{delta} TCP segment" in text and "retransmitted" in text

        async def latency() -> LatencyStats:
            result = await client.call_tool("get_connect_latency", {"pid": pid, "duration": 120})
            assert not result.is_error, result.content
            return LatencyStats.model_validate(result.structured_content["stats"])

        slow = await poll(latency, lambda s: any(g.destination == f"127.0.0.1:{port}" and g.attempts >= 2
                                                 for g in s.destinations))  # fmt: skip
        (group,) = [g for g in slow.destinations if g.destination == f"127.0.0.1:{port}"]
        # the queue-filling connect (fast) and the one that waited for its SYN to be sent again
        assert (group.attempts, group.outcomes, group.pids) == (2, {"ok": 2}, [pid])
        assert 1_000_000 <= group.max_us <= float(elapsed) * 1e6 + 1000, (group, elapsed)
        assert group.p50_us < 5000


@pytest.mark.ebpf
async def test_a_plain_loopback_connect_takes_under_5_ms(embedded: EmbeddedSource) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    with listener, socket.create_connection(("127.0.0.1", port)):
        pass
    async with Client(create_server(embedded)) as client:

        async def latency() -> LatencyStats:
            result = await client.call_tool("get_connect_latency", {"pid": os.getpid(), "duration": 120})
            assert not result.is_error, result.content
            return LatencyStats.model_validate(result.structured_content["stats"])

        stats = await poll(latency, lambda s: any(g.destination == f"127.0.0.1:{port}" for g in s.destinations))
        (group,) = [g for g in stats.destinations if g.destination == f"127.0.0.1:{port}"]
        assert (group.attempts, group.outcomes) == (1, {"ok": 1})
        assert 0 < group.max_us < 5000


@pytest.mark.ebpf
async def test_a_handshake_end_the_kernel_skipped_has_no_latency_not_the_time_until_its_socket_was_freed(
    embedded: EmbeddedSource,
) -> None:
    """A non-blocking connect whose handshake end tcp_state did not see (its run skipped by the kernel; detached
    here while the SYN waits at a full listener) is resolved when its socket is freed, seconds later: listed ok,
    with no connect latency — not the time from connect() to the socket's free as if it were the handshake's."""
    from netspy_tui.models import ConnectionList  # noqa: PLC0415
    from tests.collector.test_kernel_truth import FullListener, detach, wait_writable_or_error  # noqa: PLC0415

    assert isinstance(embedded.collector, EbpfCollector)
    full = FullListener()
    s = socket.socket()
    s.setblocking(False)
    try:
        assert s.connect_ex(("127.0.0.1", full.port)) == errno.EINPROGRESS
        detach(embedded.collector, "tcp_state")
        full.drain()  # the next SYN retransmit (~1 s) completes the handshake
        await asyncio.to_thread(wait_writable_or_error, s, 8)
        peer, _ = full.srv.accept()  # (drain() took the filler: this is ours)
        await asyncio.sleep(1.0)  # held open: freed well after its handshake ended
        peer.close()  # the peer closes first: this side's close ends in LAST_ACK and frees the socket at once
        s.settimeout(5)
        assert await asyncio.to_thread(s.recv, 1) == b""
    finally:
        s.close()
        full.close()
    async with Client(create_server(embedded)) as client:

        async def listed() -> ConnectionList:
            result = await client.call_tool("list_connections", {"pid": os.getpid(), "max_events": 1000})
            assert not result.is_error, result.content
            return ConnectionList.model_validate(result.structured_content)

        deadline = time.monotonic() + 10
        while not (mine := [e for e in (await listed()).events if e.destination == full.dest]) or any(
            e.outcome != "ok" for e in mine
        ):
            assert time.monotonic() < deadline, mine
            await asyncio.sleep(0.05)
        assert [e.outcome for e in mine] == ["ok"], mine
        result = await client.call_tool("get_connect_latency", {"pid": os.getpid(), "duration": 120})
        assert not result.is_error, result.content
        stats = LatencyStats.model_validate(result.structured_content["stats"])  # type: ignore[index]
        assert [g for g in stats.destinations if g.destination == full.dest] == []


#: the boundary test: datagrams sent back to back from just before a second starts until after it
BOUNDARIES, BEFORE_NS, AFTER_NS = 4, 30_000_000, 6_000_000
#: how far the kernel's wall clock (monotonic + the offset the reader measured) may be from time.time_ns()
CLOCK_SLACK_NS = 200_000
NS = 1_000_000_000


@pytest.mark.ebpf
@pytest.mark.parametrize("kind", ["raw_tracepoint", "tracepoint"])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_udp_bytes_beside_the_tcp_counters_are_exact_with_each_kind_of_program(
        kind: str, host: str, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """With the TCP counters (the default), on a kernel that refuses BTF-typed programs on sock_send_length /
    sock_recv_length (``raw_tracepoint``) or raw tracepoints too (``tracepoint``): UDP datagrams are counted
    exactly each way (a MSG_PEEK read not counted) and a TCP transfer once (the counters'; the UDP-only programs
    leave it alone), as get_traffic shows them."""
    real_load, real_open = syscalls.prog_load, syscalls.raw_tracepoint_open

    def load(prog_type: int, insns: bytes, name: str, *args: Any, **kwargs: Any) -> int:
        if prog_type == syscalls.BPF_PROG_TYPE_TRACING and name in ("sock_send", "sock_recv"):
            raise syscalls.BpfError(errno.EPERM, "loading program")
        return real_load(prog_type, insns, name, *args, **kwargs)

    def open_raw(name: str | None, prog_fd: int) -> int:
        if kind == "tracepoint" and name in ("sock_send_length", "sock_recv_length"):
            raise syscalls.BpfError(errno.EPERM, "attaching program to raw tracepoint")
        return real_open(name, prog_fd)

    monkeypatch.setattr(syscalls, "prog_load", load)
    monkeypatch.setattr(syscalls, "raw_tracepoint_open", open_raw)
    sizes = [1, 7, 512, 1400, 8000, 33]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    source = await started()
    try:
        assert source.collector is not None and source.collector.tcp_bytes_from_counters, source.collector
        kinds = {name: k for name, k, _, _ in source.collector.programs()}
        assert (kinds["sock_send"], kinds["sock_recv"]) == (kind, kind), kinds
        with socket.socket(family, socket.SOCK_DGRAM) as rx, socket.socket(family, socket.SOCK_DGRAM) as tx:
            rx.bind((host, 0))
            tx.connect(rx.getsockname()[:2])
            uport = rx.getsockname()[1]
            for size in sizes:
                tx.send(b"u" * size)
                rx.recv(1 << 16, socket.MSG_PEEK)
                assert len(rx.recv(1 << 16)) == size
        with socket.socket(family) as listener:
            listener.bind((host, 0))
            listener.listen()
            tport = listener.getsockname()[1]
            with socket.create_connection(listener.getsockname()[:2]) as client:
                server, _ = listener.accept()
                with server:
                    client.sendall(b"t" * 5000)
                    got = 0
                    while got < 5000:
                        got += len(server.recv(10000))

        def figures(stats: TrafficStats) -> tuple[int, int, int]:
            udp = [f for f in stats.flows if f.protocol == "UDP"]
            return (sum(f.tx_bytes for f in udp if f.remote_port == uport),
                    sum(f.rx_bytes for f in udp if f.local_port == uport),
                    sum(f.tx_bytes for f in stats.flows if f.protocol == "TCP" and f.remote_port == tport))  # fmt: skip

        async with Client(create_server(source)) as mcp:

            async def read() -> TrafficStats:
                return (await traffic_report(mcp, os.getpid()))[0]

            want = (sum(sizes), sum(sizes), 5000)
            await poll(read, lambda stats: figures(stats) == want)
            await asyncio.sleep(0.5)  # (a few drains more: nothing counted twice)
            assert figures(await read()) == want
    finally:
        await source.aclose()


async def started_as(kind: str, monkeypatch: pytest.MonkeyPatch) -> EmbeddedSource:
    """:func:`started`: ``counters``, as the product starts (TCP bytes from the kernel's counters, UDP bytes from
    the send() / recv() programs, which leave at once for a TCP socket); else with the per-call byte programs
    counting every call, attached as ``kind``, as on a kernel without the counters (``tp_btf``), one that refuses
    BTF-typed programs too (``raw_tracepoint``), and raw tracepoints too (``tracepoint``: perf tracepoint
    programs)."""
    if kind == "counters":
        source = await started()
        assert source.collector is not None
        if not source.collector.tcp_bytes_from_counters:
            await source.aclose()
            pytest.fail(f"bytes are counted per call here: {source.collector.notes}")
        return source
    if kind != "tp_btf":
        real_load, real_open = syscalls.prog_load, syscalls.raw_tracepoint_open

        def load(prog_type: int, *args: Any, **kwargs: Any) -> int:
            if prog_type == syscalls.BPF_PROG_TYPE_TRACING:
                raise syscalls.BpfError(errno.EPERM, "loading program")
            return real_load(prog_type, *args, **kwargs)

        def open_raw(name: str | None, prog_fd: int) -> int:
            if kind == "tracepoint":
                raise syscalls.BpfError(errno.EPERM, "attaching program to raw tracepoint")
            return real_open(name, prog_fd)

        monkeypatch.setattr(syscalls, "prog_load", load)
        monkeypatch.setattr(syscalls, "raw_tracepoint_open", open_raw)
    source = await started(byte_counters=False)
    assert source.collector is not None
    kinds = {name: k for name, k, _, _ in source.collector.programs()}
    if kinds["sock_send"] != kind or kinds["sock_recv"] != kind:
        await source.aclose()
        pytest.fail(f"byte programs attached as {kinds['sock_send']}/{kinds['sock_recv']}, not {kind}")
    return source


@pytest.mark.ebpf
@pytest.mark.parametrize("kind", ["counters", "tp_btf", "raw_tracepoint", "tracepoint"])
async def test_bytes_sent_around_second_boundaries_are_stored_in_the_second_they_were_sent(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The byte programs read the clock only when the kernel's tick count has moved (a per-CPU cache of the
    second): datagrams sent back to back across a second's start are stored in the second each was sent in,
    exactly, however the programs are attached (BTF-typed, raw tracepoint, perf tracepoint)."""
    source = await started_as(kind, monkeypatch)
    try:
        known: dict[int, int] = {}  # second -> bytes of the datagrams surely sent in it
        either: dict[int, int] = {}  # second -> bytes of those sent too close to its start or end to say
        total = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:  # fmt: skip
            rx.bind(("127.0.0.1", 0))
            rx.setblocking(False)
            tx.connect(rx.getsockname())
            port = rx.getsockname()[1]
            # BOUNDARIES second starts with sends surely on each side; a start the test woke up too late for (a
            # loaded machine: no send before it) does not count, the next one is tried
            first, straddled = time.time_ns() // NS + 1, 0
            for b in range(first, first + 30):
                if straddled == BOUNDARIES:
                    break
                edge = b * NS
                await asyncio.sleep(max(0.0, (edge - BEFORE_NS - time.time_ns()) / 1e9))
                size = 0
                sides: set[int] = set()
                while (t0 := time.time_ns()) < edge + AFTER_NS:
                    size = size % 40 + 1
                    tx.send(b"b" * size)
                    t1 = time.time_ns()
                    total += size
                    lo, hi = (t0 - CLOCK_SLACK_NS) // NS, (t1 + CLOCK_SLACK_NS) // NS
                    for second in {lo, hi}:
                        into = known if lo == hi else either
                        into[second] = into.get(second, 0) + size
                    if lo == hi:
                        sides.add(lo)
                straddled += {b - 1, b} <= sides
                while True:  # (read them: the receive buffer stays empty)
                    try:
                        rx.recv(64)
                    except BlockingIOError:
                        break
        me = os.getpid()

        def sent(stats: TrafficStats) -> int:
            return sum(f.tx_bytes for f in stats.flows if f.protocol == "UDP" and f.remote_port == port)

        async def at(second: int | None = None) -> TrafficStats:
            now = ns_to_time(second * NS if second is not None else time.time_ns())
            return source.store.traffic(me, None, 1 if second is not None else 120, now=now, limit=1000)

        assert sent(await poll(at, lambda stats: sent(stats) >= total)) == total
        seconds = sorted(set(known) | set(either))
        got = {s: sent(await at(s)) for s in seconds}
        for s in seconds:
            assert known.get(s, 0) <= got[s] <= known.get(s, 0) + either.get(s, 0), (s, got, known, either)
        assert straddled == BOUNDARIES
        assert len([s for s in seconds if known.get(s, 0)]) >= BOUNDARIES + 1  # (each side of each start)
    finally:
        await source.aclose()


def take_turns(seconds: float) -> tuple[list[int], list[int], list[int], list[int]]:
    """On one CPU, three UDP sockets send in turns of 1-20 datagrams to three receiving sockets, which are read
    in turns too, now and then with a pause longer than a kernel tick: (bytes each sender sent, each
    receiver read, the receivers' ports, the senders' ports)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})  # (this thread only)
    rng = random.Random(15)
    rxs = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    txs = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    sent, read = [0, 0, 0], [0, 0, 0]

    def drain(j: int) -> None:
        while True:
            try:
                read[j] += len(rxs[j].recv(65536))
            except BlockingIOError:
                return

    try:
        for rx, tx in zip(rxs, txs, strict=True):
            rx.bind(("127.0.0.1", 0))
            rx.setblocking(False)
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            tx.connect(rx.getsockname())
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            i = rng.randrange(3)
            for _ in range(rng.randint(1, 20)):
                size = rng.randint(1, 200)
                txs[i].send(b"t" * size)
                sent[i] += size
            drain(rng.randrange(3))
            if rng.random() < 0.05:
                time.sleep(0.005)
        for j in range(3):
            drain(j)
        return sent, read, [s.getsockname()[1] for s in rxs], [s.getsockname()[1] for s in txs]
    finally:
        for s in rxs + txs:
            s.close()
        os.sched_setaffinity(0, before)


@pytest.mark.ebpf
@pytest.mark.parametrize("kind", ["counters", "tp_btf", "raw_tracepoint", "tracepoint"])
async def test_sockets_taking_turns_on_one_cpu_get_exactly_their_bytes_across_drains(
        kind: str, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A CPU sums a run of calls on one socket in a slot of its own, added to the traffic map when another
    socket takes the slot over or the reader drains the map: sockets taking turns on one CPU, for several
    drains (every 0.2 s) and kernel ticks, each get exactly the bytes they sent and read, the last ones
    (left in a slot when the sending stopped) included, however the programs are attached."""
    source = await started_as(kind, monkeypatch)
    try:
        sent, read, rx_ports, tx_ports = await asyncio.to_thread(take_turns, 1.5)
        assert all(sent) and all(read)
        me = os.getpid()

        def figures(stats: TrafficStats) -> tuple[list[int], list[int]]:
            tx = [sum(f.tx_bytes for f in flows(stats, protocol="UDP", local_port=port)) for port in tx_ports]
            rx = [sum(f.rx_bytes for f in flows(stats, protocol="UDP", local_port=port)) for port in rx_ports]
            return tx, rx

        async def mine() -> TrafficStats:
            return source.store.traffic(me, None, 120, limit=1000)

        stats = await poll(mine, lambda stats: figures(stats) == (sent, read))
        assert figures(stats) == (sent, read)
    finally:
        await source.aclose()


def one_after_another(n: int) -> tuple[list[int], list[int]]:
    """From one CPU, ``n`` short TCP connections one after another between a client and a server socket of
    this process (as a proxy's are): each connects, is accepted, sends 1,000 × its number bytes and closes, and
    the server side reads them and closes, so the kernel hands each new socket the memory of one just freed:
    (each client's local port, the bytes it sent)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(8)
            ports, sizes = [], []
            for i in range(1, n + 1):
                c = socket.create_connection(listener.getsockname())
                s, _ = listener.accept()
                ports.append(c.getsockname()[1])
                c.sendall(b"x" * (1000 * i))
                c.close()
                got = 0
                while chunk := s.recv(65536):
                    got += len(chunk)
                s.close()
                assert got == 1000 * i
                sizes.append(got)
        return ports, sizes
    finally:
        os.sched_setaffinity(0, before)


@pytest.mark.ebpf
@pytest.mark.parametrize("kind", ["counters", "tp_btf", "raw_tracepoint", "tracepoint"])
async def test_connections_one_after_another_each_get_exactly_their_own_bytes(
        kind: str, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A socket freed and its memory reused by the next connection within the same second (and tick, on the
    same CPU) is another connection: each gets its own bytes, none is charged to the one before."""
    source = await started_as(kind, monkeypatch)
    try:
        ports, sizes = await asyncio.to_thread(one_after_another, 8)
        me = os.getpid()

        def figures(stats: TrafficStats) -> list[int]:
            return [sum(f.tx_bytes for f in flows(stats, protocol="TCP", local_port=port)) for port in ports]

        async def mine() -> TrafficStats:
            return source.store.traffic(me, None, 120, limit=1000)

        stats = await poll(mine, lambda stats: figures(stats) == sizes)
        assert figures(stats) == sizes, [(f.local_port, f.tx_bytes, f.tx_calls) for f in stats.flows]
    finally:
        await source.aclose()


#: One side of a bulk TCP transfer through a lossy link (run in a network namespace by ``ip netns exec``):
#: ``sink``/``client`` read until EOF; ``upload``/``server`` send N bytes in ONE sendall() (one send() call: the
#: kernel reports its bytes when it returns, after every retransmit) and print their pid, the connection's ports,
#: the namespace's RetransSegs and TCPRetransFail deltas around the transfer and the socket's
#: tcpi_total_retrans; ``prev`` makes 50 loopback connections freed at once (SO_LINGER 0) on the same CPU, so the
#: kernel hands the next socket the memory of one of them, and exits. Only the test's processes use the namespace:
#: its counters are theirs.
BULK = textwrap.dedent(
    """
    import ctypes, os, socket, struct, sys
    role, host, port, n, cpu = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    ctypes.CDLL(None).prctl(15, ("rt_" + role).encode(), 0, 0, 0)
    os.sched_setaffinity(0, {cpu})
    def counters():
        out = {}
        for path in ("/proc/net/snmp", "/proc/net/netstat"):
            with open(path) as f:
                lines = [line.split() for line in f]
            for head, values in zip(lines[::2], lines[1::2]):
                out.update({head[0] + k: int(v) for k, v in zip(head[1:], values[1:])})
        return out["Tcp:RetransSegs"], out["TcpExt:TCPRetransFail"]
    def drain(c):
        while c.recv(1 << 16):
            pass
    def send(c, before):
        me, peer = c.getsockname()[1], c.getpeername()[1]
        c.sendall(b"r" * n)
        c.shutdown(socket.SHUT_WR)
        drain(c)  # until the peer has read everything and closed: nothing left to retransmit
        after = counters()
        info = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        c.close()
        print(os.getpid(), me, peer, after[0] - before[0], after[1] - before[1], struct.unpack_from("I", info, 100)[0],
              flush=True)
    if role == "prev":
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(64)
        for _ in range(50):
            s = socket.create_connection(ls.getsockname())
            s.send(b"p" * 10)
            c, _ = ls.accept()
            c.recv(10)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
            c.close()
        print(os.getpid(), flush=True)
    elif role in ("sink", "server"):
        ls = socket.socket()
        ls.bind((host, 0))
        ls.listen(1)
        print(ls.getsockname()[1], flush=True)
        c, _ = ls.accept()
        if role == "sink":
            drain(c)
            c.close()
        else:
            send(c, counters())
    else:
        before = counters()
        c = socket.create_connection((host, port))
        if role == "client":
            drain(c)
            c.close()
        else:
            send(c, before)
    """
)


@contextlib.contextmanager
def lossy_link() -> Iterator[tuple[str, str, str, str]]:
    """Namespaces a and b joined by a veth whose a end sends through a tiny tbf queue (20 Mbit/s, 8 KB: a
    bulk sender overruns it, its segments are dropped and retransmitted, and some retransmissions are
    dropped by the qdisc too): (a, b, a's address, b's address)."""
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            pytest.fail(f"iproute2 ({tool}) is needed for the test's network namespaces")
    token = secrets.token_hex(3)
    net = f"10.{100 + secrets.randbelow(150)}.{secrets.randbelow(256)}"
    a, b = f"nsrt-{token}-a", f"nsrt-{token}-b"
    made = []

    def run(*args: str) -> None:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=10)
        assert done.returncode == 0, f"{' '.join(args)}: {done.stderr.strip()}"

    try:
        for ns in (a, b):
            run("ip", "netns", "add", ns)
            made.append(ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "link", "add", f"vr{token}a", "netns", a, "type", "veth", "peer", "name", f"vr{token}b", "netns", b)
        for ns, dev, addr in ((a, f"vr{token}a", f"{net}.1"), (b, f"vr{token}b", f"{net}.2")):
            run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            run("ip", "-n", ns, "link", "set", dev, "up")
        run("ip", "netns", "exec", a, "tc", "qdisc", "add", "dev", f"vr{token}a", "root", "tbf", "rate", "20mbit",
            "burst", "4k", "limit", "8k")  # fmt: skip
        yield a, b, f"{net}.1", f"{net}.2"
    finally:
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def bulk(ns: str, role: str, host: str = "", port: int = 0, cpu: int = 0) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", BULK, role, host, str(port),
                             str(BULK_BYTES), str(cpu)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def answer(p: subprocess.Popen[str]) -> list[int]:
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    return [int(x) for x in out.split()]


BULK_BYTES = 3_000_000


def transfer(upload: bool) -> tuple[int, int, int, int, int, int]:
    """3 MB through the lossy link, sent by a process in namespace a (``upload``: it connected; else it
    accepted): (its pid, the pid of ``prev``, its port, its peer's port, RetransSegs delta, TCPRetransFail
    delta)."""
    cpu = min(os.sched_getaffinity(0))
    with lossy_link() as (a, b, addr_a, addr_b):
        if upload:
            sink = bulk(b, "sink", addr_b)
            assert sink.stdout is not None
            port = int(sink.stdout.readline())
            (prev,) = answer(bulk(a, "prev", cpu=cpu))
            pid, me, peer, segs, failed, total = answer(bulk(a, "upload", addr_b, port, cpu))
            answer(sink)
        else:
            prev = 0
            server = bulk(a, "server", addr_a, cpu=cpu)
            assert server.stdout is not None
            port = int(server.stdout.readline())
            client = bulk(b, "client", addr_a, port)
            pid, me, peer, segs, failed, total = answer(server)
            answer(client)
    # (the sender's socket is the only one in namespace a that sent through the tbf queue)
    assert segs == total, f"RetransSegs delta {segs} but the socket's tcpi_total_retrans {total}"
    assert segs > 0 and failed > 0, f"the link did not drop retransmissions: RetransSegs {segs}, failed {failed}"
    return pid, prev, me, peer, segs, failed


@pytest.mark.ebpf
@pytest.mark.parametrize(
    ("upload", "kind"),
    [
        (True, "counters"),
        (False, "counters"),
        (True, "tp_btf"),
        (False, "tp_btf"),
        (True, "raw_tracepoint"),
        (True, "tracepoint"),
    ],
    ids=["connected", "accepted", "connected-per-call", "accepted-per-call", "connected-raw", "connected-perf"],
)
async def test_retransmits_equal_retranssegs_failed_ones_included_and_belong_to_the_sender(
        upload: bool, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A process sends 3 MB in one send() through a qdisc that drops: every retransmission the kernel counts
    in RetransSegs (those the qdisc dropped again, TCPRetransFail, included) is charged to that process, the
    one that connected (``connected``) or listened and accepted (``accepted``), though the kernel sends them
    from timers and softirqs before its send() returns; none to a process whose sockets were freed just before
    (their memory is the new socket's) nor to pid 0; however the programs are attached."""
    embedded = await started_as(kind, monkeypatch)
    try:
        assert embedded.collector is not None
        expected = "tp_btf" if kind == "counters" else kind
        assert {name: k for name, k, _, _ in embedded.collector.programs()}["tcp_retransmit"] == expected
        await retransmits_of_one_sender(embedded, upload)
    finally:
        await embedded.aclose()


async def retransmits_of_one_sender(embedded: EmbeddedSource, upload: bool) -> None:
    assert embedded.collector is not None
    skipped = {name: n for name, _, _, n in embedded.collector.program_stats()}
    pid, prev, me, peer, segs, failed = await asyncio.to_thread(transfer, upload)
    async with Client(create_server(embedded)) as client:

        async def read(who: int | None = None) -> TrafficStats:
            args: dict[str, Any] = {"duration": 120, "limit": 200}
            if who is not None:
                args["pid"] = who
            result = await client.call_tool("get_traffic", args)
            assert not result.is_error, result.content
            return TrafficStats.model_validate(result.structured_content["stats"])

        stats = await poll(read, lambda s: sum(f.retransmits for f in flows(s, local_port=me, remote_port=peer))
                           >= segs)  # fmt: skip
        charged = {(f.pid, f.command): f.retransmits for f in flows(stats, local_port=me, remote_port=peer)
                   if f.retransmits}  # fmt: skip
        # (a run the kernel skipped, counted as the program's recursion miss: a softirq's retransmit on a CPU
        # where a BPF program of the same kind was running. Then, and only then, fewer: at most 64 each, GSO)
        misses = {name: n - skipped.get(name, 0) for name, _, _, n in embedded.collector.program_stats()}
        owner, want = (pid, "rt_upload" if upload else "rt_server"), segs
        if misses["tcp_retransmit"]:
            want = charged.get(owner, 0)
            assert segs - 64 * misses["tcp_retransmit"] <= want < segs, (segs, failed, misses, charged)
        elif charged.get(owner, 0) < segs:
            # (a known residual, about one run in ten here, on a host where other collectors attach and detach
            # programs on the same tracepoint all the time: the program ran once or twice less than an ftrace
            # instance saw the event, no recursion miss counted; 1-19 segments of ~900, never another owner)
            want = charged[owner]
            assert segs - segs // 33 <= want, (segs, failed, charged)  # (3 %: 19 of ~900 seen once)
        assert charged == {owner: want}, (segs, failed, charged, misses)
        mine = await read(pid)
        assert mine.retransmits == want
        assert [(p.pids, p.retransmits) for p in mine.processes] == [([pid], want)]
        if prev:
            assert (await read(prev)).retransmits == 0


def churn(k: int) -> int:
    """``k`` loopback TCP connections of this process to its own listener, one after another, each moving 100
    bytes each way: the listener's port."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        for _ in range(k):
            with socket.create_connection(listener.getsockname()) as c:
                s, _ = listener.accept()
                with s:
                    c.sendall(b"c" * 100)
                    assert len(s.recv(100)) == 100
                    s.sendall(b"s" * 100)
                    assert len(c.recv(100)) == 100
        return int(listener.getsockname()[1])


@pytest.mark.ebpf
@pytest.mark.parametrize("byte_counters", [True, False], ids=["counters", "per-call"])
async def test_a_full_traffic_map_is_reported_as_the_calls_and_connections_it_could_not_place(
        monkeypatch: pytest.MonkeyPatch, byte_counters: bool) -> None:  # fmt: skip
    """The kernel's traffic map holds a few keys only (as a host with more sockets than it holds would find
    it): what did not fit is counted in totals with no process, and get_traffic says how many send/read calls,
    retransmits and connections those were (it said bytes), at least every one of this process's that is not in
    its own rows."""
    from netspy_tui.collector.ebpf import collector as collector_mod

    monkeypatch.setattr(collector_mod, "TRAFFIC_ENTRIES", 8)
    k = 300
    embedded = await started(byte_counters)
    try:
        port = await asyncio.to_thread(churn, k)
        me = os.getpid()
        async with Client(create_server(embedded)) as client:

            async def report() -> tuple[TrafficStats, dict[str, int], str]:
                result = await client.call_tool("get_traffic", {"pid": me, "duration": 120, "limit": 200})
                assert not result.is_error, result.content
                body = result.structured_content
                return TrafficStats.model_validate(body["stats"]), body["losses"], result.content[0].text

            def placed(stats: TrafficStats) -> int:
                calls = sum(
                    (f.tx_calls or 0) + (f.rx_calls or 0) for f in stats.flows if port in (f.local_port, f.remote_port)
                )
                return calls + stats.inbound_connections + stats.outbound_connections + stats.closed_connections

            # 4 connection events (opened and closed, each side) each, and with per-call programs 4 calls (a send
            # and a read each side); the kernel's TCP counters go through no kernel map (nothing of them to lose)
            made = (4 if byte_counters else 8) * k
            deadline = time.monotonic() + 10
            while True:
                stats, losses, text = await report()
                full = losses.get("traffic_full", 0)
                if placed(stats) + full >= made or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
        assert full >= made - placed(stats) > 0, (full, placed(stats), made)
        assert f"{full:,} send/read calls, retransmits and opened or closed connections counted without their " \
               "process and connection (kernel traffic map full; their bytes and connections are in the totals)" \
               in text  # fmt: skip
        assert "bytes counted without" not in text
    finally:
        await embedded.aclose()


FORKED_SERVER = textwrap.dedent(
    """
    import os, socket, sys
    t = socket.socket()
    t.bind(("127.0.0.1", 0))
    t.listen(1)
    print(t.getsockname()[1], flush=True)
    child = os.fork()
    if child == 0:  # the worker: accepts and reads what the listening parent never touches
        c, _ = t.accept()
        n = 0
        while b := c.recv(65536):
            n += len(b)
        c.sendall(b"w" * int(sys.argv[1]))
        c.close()
        print(os.getpid(), n, flush=True)
        os._exit(0)
    t.close()
    os.waitpid(child, 0)
    """
)


def forked_exchange(reply: int) -> tuple[int, int, int]:
    """Send TCP_BYTES to FORKED_SERVER's worker and read its reply: (parent pid, worker pid, port)."""
    child = subprocess.Popen([sys.executable, "-c", FORKED_SERVER, str(reply)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        with socket.create_connection(("127.0.0.1", port)) as c:
            got = send_then_read_all(c, TCP_BYTES)
        assert got == reply
        worker, n = map(int, child.stdout.readline().split())
        assert n == TCP_BYTES and child.wait(timeout=10) == 0
        return child.pid, worker, port
    finally:
        child.kill()


@pytest.mark.ebpf
async def test_a_connection_accepted_in_a_forked_worker_is_charged_to_the_worker(embedded: EmbeddedSource) -> None:
    """A server that listens in one process and accepts in a forked worker (pre-fork servers): the connection's
    bytes, both ways, are the worker's, not the listening parent's (bytes from the kernel's counters are charged
    to a connection's owner: the process that accepted it)."""
    reply = 4_321
    parent, worker, port = await asyncio.to_thread(forked_exchange, reply)

    async def of(pid: int) -> TrafficStats:
        return embedded.store.traffic(pid, None, 120, limit=100)

    stats = await poll(lambda: of(worker), lambda s: bool(flows(s, protocol="TCP", local_port=port)))
    (flow,) = flows(stats, protocol="TCP", local_port=port)
    assert (flow.rx_bytes, flow.tx_bytes) == (TCP_BYTES, reply)
    # (the parent keeps the inbound connection's row: it listened; none of the bytes)
    assert all(f.rx_bytes == f.tx_bytes == 0 for f in flows(await of(parent), protocol="TCP", local_port=port))


HOLDER = textwrap.dedent(
    """
    import socket, sys
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    print(client.getsockname()[1], flush=True)
    sys.stdin.readline()  # the collector has started: now move bytes
    client.sendall(b"p" * int(sys.argv[1]))
    got = 0
    while got < int(sys.argv[1]):
        got += len(server.recv(65536))
    print(got, flush=True)
    sys.stdin.readline()
    """
)


@pytest.mark.ebpf
async def test_a_connection_open_before_the_collector_started_is_charged_to_the_process_holding_it() -> None:
    """A long-lived connection (a database pool, an ssh session) opened before the collector started: the kernel
    never showed it opening, so its owner comes from the start's scan of every process's open sockets, and its
    bytes from then on are that process's, not pid 0's."""
    n = 77_777
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,  # noqa: ASYNC220
                              text=True)  # fmt: skip
    try:
        assert holder.stdin is not None and holder.stdout is not None
        port = int(holder.stdout.readline())
        source = await started()
        try:
            await asyncio.sleep(0.5)  # (a drain or two: the connection's counters seen before its bytes move)
            holder.stdin.write("go\n")
            holder.stdin.flush()
            assert int(await asyncio.to_thread(holder.stdout.readline)) == n

            async def of_holder() -> TrafficStats:
                return source.store.traffic(holder.pid, None, 120, limit=100)

            stats = await poll(of_holder, lambda s: bool(flows(s, protocol="TCP", local_port=port)))
            (flow,) = flows(stats, protocol="TCP", local_port=port)
            assert flow.tx_bytes == n and flow.pid == holder.pid, flow
            assert not flows(source.store.traffic(0, None, 120, limit=100), protocol="TCP", local_port=port)
        finally:
            await source.aclose()
    finally:
        holder.kill()
        holder.wait(timeout=10)


CLOSER = textwrap.dedent(
    """
    import socket, sys
    n = int(sys.argv[1])
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    print(client.getsockname()[1], listener.getsockname()[1], flush=True)
    sys.stdin.readline()  # the collector has started and read the connection: move bytes, then close it at once
    client.sendall(b"p" * n)
    got = 0
    while got < n:
        got += len(server.recv(65536))
    server.sendall(b"q" * n)
    back = 0
    while back < n:
        back += len(client.recv(65536))
    client.close()
    server.close()
    print(got, back, flush=True)
    sys.stdin.readline()
    """
)


@pytest.mark.ebpf
async def test_a_connection_open_before_the_collector_started_that_closes_is_counted_exactly() -> None:
    """A connection opened before the collector started (the kernel never showed it opening) moves bytes after
    the start and closes before the next drain: its bytes since the start are counted exactly, the ones it moved
    after the last pass that found it too (its final counters, kept at its close), and no ``tcp_tail_uncounted``
    loss is reported for it: its first pass registered it with the state program."""
    n = 123_457
    holder = subprocess.Popen([sys.executable, "-c", CLOSER, str(n)], stdin=subprocess.PIPE,  # noqa: ASYNC220
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdin is not None and holder.stdout is not None
        cport, sport = map(int, holder.stdout.readline().split())
        source = await started()
        try:
            await asyncio.sleep(1.0)  # (drains: the connection's counters read before its bytes move)
            tail_before = (await source.losses(120)).get("tcp_tail_uncounted", 0)
            holder.stdin.write("go\n")
            holder.stdin.flush()
            assert list(map(int, (await asyncio.to_thread(holder.stdout.readline)).split())) == [n, n]

            async def of_holder() -> TrafficStats:
                return source.store.traffic(holder.pid, None, 120, limit=100)

            def both_counted(s: TrafficStats) -> bool:
                sides = [flows(s, protocol="TCP", local_port=port) for port in (cport, sport)]
                return all([(f.tx_bytes, f.rx_bytes) for f in side] == [(n, n)] for side in sides)

            stats = await poll(of_holder, both_counted)
            (client,) = flows(stats, protocol="TCP", local_port=cport)
            (server,) = flows(stats, protocol="TCP", local_port=sport)
            assert (client.tx_bytes, client.rx_bytes, client.pid) == (n, n, holder.pid), client
            assert (server.tx_bytes, server.rx_bytes, server.pid) == (n, n, holder.pid), server
            await asyncio.sleep(1.0)  # (drains: a connection missing from two passes without a final is judged)
            assert (await source.losses(120)).get("tcp_tail_uncounted", 0) == tail_before
        finally:
            await source.aclose()
    finally:
        holder.kill()
        holder.wait(timeout=10)


#: One end of a TCP connection kept open in a network namespace of its own (``ip netns exec``): ``serve``
#: listens, prints its port, accepts, reads N bytes and answers M; ``call PORT`` connects, prints its own port,
#: sends N and reads M. Each prints ``done`` with what it read, then holds the connection until stdin closes.
HELD_IN_NS = textwrap.dedent(
    """
    import socket, sys
    role, n, m = sys.argv[1], int(sys.argv[3]), int(sys.argv[4])
    def read(c, k):
        got = 0
        while got < k:
            b = c.recv(min(65536, k - got))
            if not b:
                break
            got += len(b)
        return got
    if role == "serve":
        listener = socket.create_server(("127.0.0.1", 0))
        print(listener.getsockname()[1], flush=True)
        c, _ = listener.accept()
        got = read(c, n)
        c.sendall(b"m" * m)
    else:
        c = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
        print(c.getsockname()[1], flush=True)
        c.sendall(b"n" * n)
        got = read(c, m)
    print("done", got, flush=True)
    sys.stdin.read()
    """
)


Held = tuple[subprocess.Popen[str], int, subprocess.Popen[str], int]


@contextlib.asynccontextmanager
async def held_in_namespace(n: int, m: int) -> AsyncIterator[Held]:
    """A client and a server in a namespace of the test's own that moved ``n`` bytes one way and ``m`` the other on
    a connection they hold open until the end (closed by :func:`release`): (server, its port, client, its port)."""
    with own_namespace("nsbytes-") as ns:
        procs: list[subprocess.Popen[str]] = []
        try:

            def side(*args: str) -> subprocess.Popen[str]:
                p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", HELD_IN_NS, *args, str(n),
                                      str(m)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
                procs.append(p)
                return p

            def line(p: subprocess.Popen[str]) -> str:
                assert p.stdout is not None
                return p.stdout.readline()

            server = side("serve", "0")
            port = int(await asyncio.to_thread(line, server))
            client = side("call", str(port))
            client_port = int(await asyncio.to_thread(line, client))
            assert (await asyncio.to_thread(line, server)).split() == ["done", str(n)]
            assert (await asyncio.to_thread(line, client)).split() == ["done", str(m)]
            yield server, port, client, client_port
        finally:
            for p in procs:
                p.kill()
                p.wait(timeout=10)


def release(*procs: subprocess.Popen[str]) -> None:
    """Let :data:`HELD_IN_NS`'s ends close their connection and exit."""
    for p in procs:
        assert p.stdin is not None
        p.stdin.close()
    for p in procs:
        assert p.wait(timeout=10) == 0


def held_flows(server: subprocess.Popen[str], port: int, client: subprocess.Popen[str], client_port: int, n: int,
               m: int) -> dict[str, dict[str, Any]]:  # fmt: skip
    return {
        "client": dict(pid=client.pid, protocol="TCP", local_port=client_port, remote_port=port, tx_bytes=n,
                       rx_bytes=m, direction="outbound"),
        "server": dict(pid=server.pid, protocol="TCP", local_port=port, remote_port=client_port, tx_bytes=m,
                       rx_bytes=n, direction="inbound"),
    }  # fmt: skip


def sent_all(want: dict[str, dict[str, Any]]) -> Callable[[TrafficStats], bool]:
    def there(stats: TrafficStats) -> bool:
        return all(sum(f.tx_bytes for f in flows(stats, **{k: v for k, v in w.items() if k not in _FIGURES}))
                   >= w["tx_bytes"] for w in want.values())  # fmt: skip

    return there


def held_figures(stats: TrafficStats, want: dict[str, dict[str, Any]]) -> dict[str, list[tuple[Any, ...]]]:
    """name -> [(tx, rx, direction, closed)] of each of the held connection's flows"""
    return {name: [(f.tx_bytes, f.rx_bytes, f.direction, f.lifetime_us is not None)
                   for f in flows(stats, **{k: v for k, v in w.items() if k not in _FIGURES})]
            for name, w in want.items()}  # fmt: skip


async def traffic_report(client: Client, pid: int | None = None) -> tuple[TrafficStats, dict[str, int], str]:
    result = await client.call_tool(
        "get_traffic", {"duration": 120, "limit": 200} | ({} if pid is None else {"pid": pid})
    )
    assert not result.is_error, result.content
    assert result.structured_content is not None
    body = result.structured_content
    return TrafficStats.model_validate(body["stats"]), body["losses"], result.content[0].text


async def held_report(client: Client, want: dict[str, dict[str, Any]]) -> tuple[TrafficStats, dict[str, int], str]:
    """:func:`traffic_report` of each process of :func:`held_flows` (one query each), their flows together: the host's
    own connections stay out (an unfiltered query lists the host's ``limit`` largest flows, and a held connection's
    zero-byte flows rank after every flow of a busy host that moved a byte)."""
    reports = [await traffic_report(client, w["pid"]) for w in want.values()]
    stats = reports[0][0].model_copy(update={"flows": [f for r in reports for f in r[0].flows]})
    return stats, reports[-1][1], reports[-1][2]


@pytest.mark.ebpf
async def test_an_open_connection_in_another_network_namespace_shows_its_exact_bytes_while_open(
        embedded: EmbeddedSource) -> None:  # fmt: skip
    """A container's connection (here a namespace ``ip netns add`` made, a client and a server in it): while it
    is still open, get_traffic says exactly the bytes each side sent and read, for each process, although the
    collector runs in another network namespace (the kernel's TCP iterator reads only the namespace of the thread
    that starts it: one pass per namespace). Before, such a connection showed its bytes only when it closed."""
    n, m = 654_321, 12_345
    async with held_in_namespace(n, m) as (server, port, client, client_port):
        want = held_flows(server, port, client, client_port, n, m)
        async with Client(create_server(embedded)) as mcp:

            async def read() -> TrafficStats:
                return (await held_report(mcp, want))[0]

            stats = await poll(read, sent_all(want))
            assert server.poll() is None and client.poll() is None, "the connection closed before the check"
            assert held_figures(stats, want) == {"client": [(n, m, "outbound", False)],
                                                 "server": [(m, n, "inbound", False)]}  # fmt: skip


@pytest.mark.ebpf
async def test_namespaces_past_the_bound_are_counted_and_their_connections_counted_when_they_close(
        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The collector reads at most MAX_NAMESPACES namespaces besides its own live (here 0: a host with more
    containers than that): the others are counted (``tcp_netns_unread``, in get_traffic's losses with what it
    means), their open connections show no bytes, and each connection's bytes are all there once it closes."""
    from netspy_tui.collector.ebpf import tcpcounters

    monkeypatch.setattr(tcpcounters, "MAX_NAMESPACES", 0)
    n, m = 54_321, 1_234
    embedded = await started()
    try:
        async with held_in_namespace(n, m) as (server, port, client, client_port), \
                Client(create_server(embedded)) as mcp:  # fmt: skip
            want = held_flows(server, port, client, client_port, n, m)
            # a busy host: more connections that moved bytes than get_traffic's limit lists (largest first), all
            # stored before the check (the held connection's zero-byte flows rank after every one of them)
            k = 100
            churned = await asyncio.to_thread(churn, k)

            async def churn_report() -> tuple[TrafficStats, dict[str, int]]:
                return (await traffic_report(mcp, os.getpid()))[:2]

            def churn_stored(stats: TrafficStats) -> bool:
                return sum(f.tx_bytes == f.rx_bytes == 100 for f in stats.flows
                           if f.protocol == "TCP" and churned in (f.local_port, f.remote_port)) == 2 * k  # fmt: skip

            assert churn_stored((await poll_report(churn_report, churn_stored))[0])
            deadline = time.monotonic() + 10
            while True:  # (found by the scan a connection no pass finds asks for, within a second or two; the
                # loss alone may come from another namespace on the host first: wait for both flows too)
                stats, losses, text = await held_report(mcp, want)
                if losses.get("tcp_netns_unread") and all(held_figures(stats, want).values()):
                    break
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert losses.get("tcp_netns_unread", 0) >= 1, losses
            assert "network namespaces whose TCP connections are not read while open" in text
            await asyncio.sleep(0.5)  # (a few drains more: still no pass in it)
            stats = (await held_report(mcp, want))[0]
            assert held_figures(stats, want) == {"client": [(0, 0, "outbound", False)],
                                                 "server": [(0, 0, "inbound", False)]}  # fmt: skip
            await asyncio.to_thread(release, server, client)

            async def read() -> TrafficStats:
                return (await held_report(mcp, want))[0]

            stats = await poll(read, sent_all(want))
            assert held_figures(stats, want) == {"client": [(n, m, "outbound", True)],
                                                 "server": [(m, n, "inbound", True)]}  # fmt: skip
    finally:
        await embedded.aclose()


@pytest.mark.ebpf
async def test_closes_beyond_the_kernels_map_of_closing_connections_are_counted_as_lost(
        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The kernel keeps each closing TCP connection's counters until the next drain in a map of bounded size (here
    4: a host closing more connections between two drains than it holds): each close that finds it full is
    counted (``finals_full``) and get_traffic and server_status say so, and that the counts are not exact. Before,
    those closes were lost silently: a connection opened and closed within a drain was in no figure at all."""
    from netspy_tui.collector.ebpf import collector as collector_mod

    monkeypatch.setattr(collector_mod, "FINALS_ENTRIES", 4)
    k = 60
    embedded = await started()
    try:
        port = await asyncio.to_thread(churn, k)
        async with Client(create_server(embedded)) as client:

            async def report() -> tuple[TrafficStats, dict[str, int], str, bool]:
                result = await client.call_tool("get_traffic", {"pid": os.getpid(), "duration": 120, "limit": 200})
                assert not result.is_error, result.content
                body = result.structured_content
                return (TrafficStats.model_validate(body["stats"]), body["losses"], result.content[0].text,
                        body["counts_exact"])  # fmt: skip

            def exact(stats: TrafficStats) -> int:
                """connection ends (each side) whose 100 bytes each way are all counted"""
                ends = [f for f in stats.flows if f.protocol == "TCP" and port in (f.local_port, f.remote_port)]
                return sum(f.tx_bytes == f.rx_bytes == 100 for f in ends)

            deadline = time.monotonic() + 10
            while True:
                stats, losses, text, counts_exact = await report()
                lost = losses.get("finals_full", 0)
                if exact(stats) + lost >= 2 * k or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            # every close is either in the figures with its bytes or counted as lost (a few drains at most ran during
            # the churn, each keeping 4: most were lost)
            assert lost > 0 and exact(stats) + lost >= 2 * k, (lost, exact(stats))
            assert f"{lost:,} TCP connections that closed while the kernel's map of closing connections was full" \
                   in text and not counts_exact  # fmt: skip
            status = (await client.call_tool("server_status", {})).content[0].text
            assert "TCP connections that closed while the kernel's map of closing connections was full" in status
    finally:
        await embedded.aclose()


@pytest.mark.ebpf
async def test_a_fallback_to_per_call_byte_programs_keeps_no_closing_connections_counters(
        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A host where the kernel's TCP iterator cannot load (here: refused) counts bytes with the per-call
    programs, and server_status says why. Nothing drains the closing connections' counters then, so the state
    program must keep none: before, every close wrote one into a map that filled (here at 4) and stayed full, each
    later close a failed write (now counted as a loss that was none: the per-call figures are exact)."""
    from netspy_tui.collector.ebpf import collector as collector_mod

    monkeypatch.setattr(collector_mod, "FINALS_ENTRIES", 4)

    def refused() -> None:
        raise OSError(errno.EPERM, "iterator refused")

    monkeypatch.setattr(collector_mod, "TcpCounters", refused)
    k = 20
    embedded = await started()
    try:
        session = embedded.collector._session  # type: ignore[attr-defined]
        assert session is not None and session.maps.finals is None and session.tcp_bytes is None
        port = await asyncio.to_thread(churn, k)
        async with Client(create_server(embedded)) as client:

            async def report() -> tuple[TrafficStats, dict[str, int]]:
                result = await client.call_tool("get_traffic", {"pid": os.getpid(), "duration": 120, "limit": 200})
                assert not result.is_error, result.content
                body = result.structured_content
                return TrafficStats.model_validate(body["stats"]), body["losses"]

            def ends(stats: TrafficStats) -> list[TrafficFlow]:
                return [f for f in stats.flows if f.protocol == "TCP" and port in (f.local_port, f.remote_port)]

            stats, losses = await poll_report(report, lambda s: len(ends(s)) == 2 * k and all(
                f.tx_bytes == f.rx_bytes == 100 for f in ends(s)))  # fmt: skip
            assert [(f.tx_bytes, f.rx_bytes) for f in ends(stats)] == [(100, 100)] * (2 * k)
            assert not losses.get("finals_full"), losses
            status = (await client.call_tool("server_status", {})).content[0].text
            assert (
                "bytes counted by a program on every send() and recv() (each call pays for it): "
                "no BPF iterator over TCP sockets ([Errno 1] iterator refused)"
            ) in status
            assert "closing connections was full" not in status
    finally:
        await embedded.aclose()


async def poll_report(read: Callable[[], Awaitable[tuple[TrafficStats, dict[str, int]]]],
                      done: Callable[[TrafficStats], bool], within: float = 10.0
                      ) -> tuple[TrafficStats, dict[str, int]]:  # fmt: skip
    deadline = time.monotonic() + within
    while True:
        stats, losses = await read()
        if done(stats) or time.monotonic() > deadline:
            return stats, losses
        await asyncio.sleep(0.05)
