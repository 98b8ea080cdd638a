"""(experiment) UDP bytes from cgroup_skb programs (``udpbytes``), root only: datagrams of known sizes over
loopback, IPv4 and IPv6, connected and not, are counted exactly per socket (SO_COOKIE) and direction, and
each socket is charged to the process that made it."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import numpy as np
import pytest

from netspy_tui.collector.base import DIR_RX, DIR_TX
from netspy_tui.collector.ebpf import syscalls
from netspy_tui.collector.ebpf.udpbytes import UdpBytes
from netspy_tui.names.workload import cgroup2_mount
from tests.collector.test_ebpf import REQUIRE

SO_COOKIE = 57
SIZES = [1, 7, 512, 1400, 8000, 60_000, 0, 33]


@pytest.fixture
def udp() -> Iterator[UdpBytes]:
    mount = cgroup2_mount()
    if os.geteuid() != 0 or mount is None:
        pytest.skip("needs root and a cgroup2 mount")
    try:
        counter = UdpBytes(str(mount))
    except OSError as exc:
        if REQUIRE:
            pytest.fail(f"NETSPY_REQUIRE_EBPF=1 but the UDP byte programs cannot attach: {exc}")
        pytest.skip(f"cgroup_skb programs refused here: {exc}")
    yield counter
    counter.close()


def cookie(s: socket.socket) -> int:
    return int.from_bytes(s.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8), "little")


def sums(rows: np.ndarray, of: int, direction: int) -> tuple[int, int]:
    mine = rows[(rows["cookie"] == of) & (rows["direction"] == direction)]
    return int(mine["bytes"].sum()), int(mine["datagrams"].sum())


@pytest.mark.root
@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
@pytest.mark.parametrize("connected", [False, True])
def test_each_sockets_datagram_bytes_are_counted_exactly_in_both_directions(
    udp: UdpBytes, family: int, host: str, connected: bool
) -> None:
    with socket.socket(family, socket.SOCK_DGRAM) as rx, socket.socket(family, socket.SOCK_DGRAM) as tx:
        rx.bind((host, 0))
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        if connected:
            tx.connect(rx.getsockname()[:2])
        for size in SIZES:
            if connected:
                tx.send(b"u" * size)
            else:
                tx.sendto(b"u" * size, rx.getsockname()[:2])
            assert len(rx.recv(1 << 16)) == size
        got = udp.drain()
        assert sums(got, cookie(tx), DIR_TX) == (sum(SIZES), len(SIZES))
        assert sums(got, cookie(rx), DIR_RX) == (sum(SIZES), len(SIZES))
        assert sums(got, cookie(tx), DIR_RX) == (0, 0) and sums(got, cookie(rx), DIR_TX) == (0, 0)
        assert udp.owner(cookie(rx)) == udp.owner(cookie(tx))
        row = got[(got["cookie"] == cookie(tx)) & (got["direction"] == DIR_TX)][0]
        addr = socket.inet_pton(family, host)
        assert (int(row["family"]), int(row["lport"]), int(row["rport"])) == (
            family,
            tx.getsockname()[1],
            rx.getsockname()[1] if connected else 0,
        )
        # (the socket's own addresses: an unconnected, unbound sender has neither)
        assert bytes(row["laddr"])[: len(addr)] == (addr if connected else bytes(len(addr)))
        assert bytes(row["raddr"])[: len(addr)] == (addr if connected else bytes(len(addr)))
        owner = udp.owner(cookie(rx))
        assert owner is not None and owner[0] == os.getpid()


@pytest.mark.root
def test_tcp_traffic_is_not_counted(udp: UdpBytes) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with socket.create_connection(listener.getsockname()) as c:
            s, _ = listener.accept()
            with s:
                c.sendall(b"t" * 5000)
                assert len(s.recv(10_000)) > 0
                got = udp.drain()
                assert not np.isin(got["cookie"], [cookie(c), cookie(s)]).any()


@pytest.mark.root
def test_closing_detaches_everything(udp: UdpBytes) -> None:
    ids = [syscalls.prog_id(fd) for fd in udp.prog_fds]
    assert len(ids) == 3 and all(syscalls.prog_exists(i) for i in ids)
    udp.close()
    syscalls.rcu_barrier()
    assert not any(syscalls.prog_exists(i) for i in ids)
