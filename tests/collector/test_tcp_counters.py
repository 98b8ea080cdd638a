"""The kernel's per-socket TCP byte counters read by a BPF iterator (``tcpcounters``) against the kernel's own
``TCP_INFO`` of the same sockets (root only): the numbers a counter-based TCP byte count would start from,
and what they hold beside the data (the active opener's SYN, each FIN)."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from netspy_tui.collector.ebpf import btf, syscalls
from netspy_tui.collector.ebpf.tcpcounters import TcpCounters
from tests.collector.netns import own_namespace
from tests.collector.test_ebpf import REQUIRE

#: struct tcp_info: tcpi_bytes_acked, tcpi_bytes_received (u64 each)
TCPI_BYTES_AT = 120


@pytest.fixture
def counters() -> Iterator[TcpCounters]:
    if os.geteuid() != 0:
        pytest.skip("needs root (BPF iterators)")
    try:
        reader = TcpCounters()
    except (OSError, btf.BtfError) as exc:
        if REQUIRE:
            pytest.fail(f"NETSPY_REQUIRE_EBPF=1 but the TCP counter iterator cannot load: {exc}")
        pytest.skip(f"no TCP counter iterator on this kernel: {exc}")
    yield reader
    reader.close()


def tcp_info(s: socket.socket) -> tuple[int, int]:
    raw = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    acked, received = struct.unpack_from("<QQ", raw, TCPI_BYTES_AT)
    return acked, received


def acked(s: socket.socket, expected: int) -> None:
    """Wait (5 s at most) until the kernel says ``expected`` bytes of ``s`` were acknowledged."""
    deadline = time.monotonic() + 5
    while tcp_info(s)[0] != expected and time.monotonic() < deadline:
        time.sleep(0.005)


def row_of(rows: np.ndarray, s: socket.socket) -> np.void:
    """The sample's row of connected socket ``s`` (its local port and its peer's)."""
    lport, rport = s.getsockname()[1], s.getpeername()[1]
    ports = rows["ports"].astype(np.uint64)
    mine = rows[((ports >> 16) == lport) & ((ports & 0xFFFF) == socket.htons(rport))]
    assert len(mine) == 1, f"{len(mine)} rows for 127.0.0.1:{lport} -> {rport}"
    return mine[0]


@pytest.mark.root
def test_a_pass_reads_each_connections_counters_as_tcp_info_reports_them(counters: TcpCounters) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        with client, server:
            client.sendall(b"x" * 123_457)
            got = 0
            while got < 123_457:
                got += len(server.recv(1 << 20))
            server.sendall(b"y" * 999)
            assert len(client.recv(4096)) == 999
            acked(client, 123_457 + 1)  # (each side's data acknowledged: the peer read it all)
            acked(server, 999)
            rows = counters.sample()[0]
            c, s = row_of(rows, client), row_of(rows, server)
            assert (int(c["bytes_acked"]), int(c["bytes_received"])) == tcp_info(client) == (123_457 + 1, 999)
            assert (int(s["bytes_acked"]), int(s["bytes_received"])) == tcp_info(server) == (999, 123_457)
            assert int(c["write_seq"]) == int(c["snd_una"]) and int(c["state"]) == 1  # ESTABLISHED
            # the FIN: counted in the receiver's bytes_received, and in the sender's bytes_acked once acknowledged
            client.shutdown(socket.SHUT_WR)
            assert server.recv(10) == b""
            acked(client, 123_457 + 2)  # (the FIN's ACK may still be in flight)
            rows = counters.sample()[0]
            assert int(row_of(rows, server)["bytes_received"]) == tcp_info(server)[1] == 123_457 + 1
            assert int(row_of(rows, client)["bytes_acked"]) == tcp_info(client)[0] == 123_457 + 2


@pytest.mark.root
def test_the_iterator_link_is_closed_with_the_reader() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (BPF iterators)")
    try:
        reader = TcpCounters()
    except (OSError, btf.BtfError) as exc:
        pytest.skip(f"no TCP counter iterator on this kernel: {exc}")
    prog_id = syscalls.prog_id(reader._prog)
    reader.close()
    syscalls.rcu_barrier()
    assert not syscalls.prog_exists(prog_id)


@pytest.mark.root
def test_a_pass_in_another_namespace_says_where_its_rows_came_from_and_the_namespace_stays_while_counted(
    counters: TcpCounters,
) -> None:
    """A connection in an ``ip netns`` namespace is read by that namespace's pass, its row tagged with it; once
    ``ip netns del`` takes its name (the scan finds it nowhere), the namespace is still read while connections
    counted from it are kept (``keep``), and let go after."""
    with own_namespace("nskeep") as name:
        path = f"/run/netns/{name}"
        ino = os.stat(path).st_ino
        made: list[socket.socket] = []

        def inside() -> None:  # (sockets belong to the namespace of the thread that makes them)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                syscalls.setns_net(fd)
            finally:
                os.close(fd)
            listener = socket.create_server(("127.0.0.1", 0))
            client = socket.create_connection(listener.getsockname())
            made.extend([listener, client, listener.accept()[0]])

        thread = threading.Thread(target=inside)
        thread.start()
        thread.join()
        try:
            client = made[1]
            rows, where, read = counters.sample()
            assert ino in read and counters.namespaces.home in read
            lport, rport = client.getsockname()[1], client.getpeername()[1]
            ports = rows["ports"].astype(np.uint64)
            mine = ((ports >> 16) == lport) & ((ports & 0xFFFF) == socket.htons(rport))
            assert where[mine].tolist() == [ino]
            subprocess.run(["ip", "netns", "del", name], check=True, timeout=10)
            counters.namespaces.keep = {ino}
            counters.namespaces.scan()
            assert ino in counters.namespaces.fds and ino in counters.sample()[2]
            counters.namespaces.keep = set()
            counters.namespaces.scan()
            assert ino not in counters.namespaces.fds
        finally:
            for s in made:
                s.close()
