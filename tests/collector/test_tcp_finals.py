"""(experiment) A TCP connection's bytes from the kernel's own per-socket counters as it closes (root only):
``EbpfCollector(tcp_finals=True)`` keeps ``struct tcp_sock``'s counters of each connection it saw opening at
its close, and :func:`programs.final_bytes` must turn them into exactly the bytes each side's application
wrote and the bytes that arrived, whichever side closes first, and when a close with unread data resets
the connection."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import numpy as np
import pytest

from netspy_tui.collector.base import DIR_ACCEPT, DIR_CONNECT
from netspy_tui.collector.ebpf import EbpfCollector
from netspy_tui.collector.ebpf import programs as P
from tests.collector.test_ebpf import Recorder, start_or_skip

N, M = 123_457, 9_999


@pytest.fixture(scope="module")
def collector() -> Iterator[EbpfCollector]:
    c = EbpfCollector(tcp_finals=True, byte_counters=False)  # (the reader drains nothing of it)
    start_or_skip(c, Recorder())
    if not P.SockOffsets.from_btf().tcp_counters:
        c.stop()
        pytest.skip("no BTF for struct tcp_sock's counters")
    yield c
    c.stop()


def finals_for(collector: EbpfCollector, pairs: set[tuple[int, int]], timeout: float = 10.0) -> dict:
    """{(sport, dport): FINAL row} for each port pair of ``pairs`` once each has closed (bounded wait)."""
    got: dict[tuple[int, int], np.void] = {}
    deadline = time.monotonic() + timeout
    while set(got) != pairs and time.monotonic() < deadline:
        keys, values = collector.drain_tcp_finals()
        for key, value in zip(keys, values, strict=True):
            ports = int(key["ports"])
            pair = (ports & 0xFFFF, ports >> 16)
            if pair in pairs:
                got[pair] = value
        time.sleep(0.02)
    assert set(got) == pairs, f"closed connections seen: {sorted(got)} of {sorted(pairs)}"
    return got


def exchange(server_closes_first: bool = False, client_leaves_unread: bool = False) -> tuple[int, int, int]:
    """One loopback connection: the client writes N, the server reads them all and writes M; then both
    close. Returns (client port, server port, whether the client's close reset it)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        cport, sport = client.getsockname()[1], listener.getsockname()[1]
        client.sendall(b"x" * N)
        got = 0
        while got < N:
            got += len(server.recv(1 << 20))
        server.sendall(b"y" * M)
        if client_leaves_unread:
            time.sleep(0.05)  # (the M bytes in the client's receive queue: its close resets the connection)
            client.close()
            with pytest.raises(ConnectionResetError):
                while server.recv(1 << 16):
                    pass
            server.close()
            return cport, sport, 1
        got = 0
        while got < M:
            got += len(client.recv(1 << 20))
        first, second = (server, client) if server_closes_first else (client, server)
        first.shutdown(socket.SHUT_WR)
        assert second.recv(10) == b""
        second.close()
        assert first.recv(10) == b""
        first.close()
        return cport, sport, 0


@pytest.mark.ebpf
@pytest.mark.parametrize("server_closes_first", [False, True])
def test_a_closed_connections_own_counters_give_exactly_the_bytes_each_side_wrote_and_received(
    collector: EbpfCollector, server_closes_first: bool
) -> None:
    cport, sport, _ = exchange(server_closes_first=server_closes_first)
    finals = finals_for(collector, {(cport, sport), (sport, cport)})
    client, server = finals[(cport, sport)], finals[(sport, cport)]
    assert (int(client["opened"]), int(server["opened"])) == (DIR_CONNECT, DIR_ACCEPT)
    sent, received = P.final_bytes(np.array([client, server], P.FINAL))
    assert (sent.tolist(), received.tolist()) == ([N, M], [M, N])


@pytest.mark.ebpf
def test_a_close_with_unread_data_resets_and_still_counts_exactly(collector: EbpfCollector) -> None:
    cport, sport, _ = exchange(client_leaves_unread=True)
    finals = finals_for(collector, {(cport, sport), (sport, cport)})
    sent, received = P.final_bytes(np.array([finals[(cport, sport)], finals[(sport, cport)]], P.FINAL))
    # the client's kernel acknowledged the M bytes its application never read: they arrived
    assert (sent.tolist(), received.tolist()) == ([N, M], [M, N])
