"""A TCP connection's identity when bytes come from the kernel's counters (:class:`TcpBytes`): a socket's memory
freed at a close and reused, before the next drain, for a connection between the same port numbers to another
address is another connection. The drain's pass over the open connections finds the new one where the old one was,
and the old one's counters arrive as it closed (``finals``): each must get exactly its own bytes. A kernel cannot be
made to reuse a socket's memory on demand, so the pass and the finals are given here as the kernel gives them."""

from __future__ import annotations

import numpy as np
import pytest

from netspy_tui.collector.base import DIR_CONNECT, DIR_RX, DIR_TX
from netspy_tui.collector.ebpf import programs as P
from netspy_tui.collector.ebpf.btf import BtfError
from netspy_tui.collector.ebpf.tcpcounters import COUNTERS, TcpBytes

SK, LPORT, RPORT, TGID = 0xFFFF_8880_1234_5600, 40_000, 443, 4242
FIRST, SECOND = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


class _Namespaces:
    wanted = False


class _Pass:
    """The iterator's pass, as :class:`TcpCounters` gives it: whatever the test set."""

    def __init__(self) -> None:
        self.rows = np.zeros(0, COUNTERS)
        self.namespaces = _Namespaces()

    def sample(self) -> np.ndarray:
        return self.rows


def _open(off: P.SockOffsets, raddr: bytes, sent: int, arrived: int) -> np.ndarray:
    row = np.zeros(1, COUNTERS)
    row["sk"], row["state"] = SK, 1  # ESTABLISHED
    row["bytes_acked"], row["bytes_received"] = sent + 1, arrived  # (+1: the SYN of the side that connected)
    common = row["common"][0]
    assert off.sk_family is not None and off.sk_num is not None and off.sk_dport is not None
    assert off.sk_rcv_saddr is not None and off.sk_daddr is not None
    common[off.sk_family : off.sk_family + 2] = np.frombuffer(P.AF_INET.to_bytes(2, "little"), "u1")
    common[off.sk_num : off.sk_num + 2] = np.frombuffer(LPORT.to_bytes(2, "little"), "u1")
    common[off.sk_dport : off.sk_dport + 2] = np.frombuffer(RPORT.to_bytes(2, "big"), "u1")
    common[off.sk_rcv_saddr : off.sk_rcv_saddr + 4] = np.frombuffer(bytes([127, 0, 0, 1]), "u1")
    common[off.sk_daddr : off.sk_daddr + 4] = np.frombuffer(raddr, "u1")
    return row


def _closed(raddr: bytes, sent: int, arrived: int) -> tuple[np.ndarray, np.ndarray]:
    keys, values = np.zeros(1, P.FINAL_KEY), np.zeros(1, P.FINAL)
    keys["sk"], keys["ports"] = SK, LPORT | RPORT << 16
    keys["raddr"][0][:4] = np.frombuffer(raddr, "u1")
    values["tgid"], values["opened"], values["comm"], values["oldstate"] = TGID, DIR_CONNECT, b"client", 1
    values["bytes_acked"], values["bytes_received"] = sent + 1, arrived
    return keys, values


def _bytes(rows: tuple[np.ndarray, np.ndarray]) -> dict[tuple[bytes, int], int]:
    keys, values = rows
    return {(bytes(v["raddr"][:4]), int(k["direction"])): int(v["bytes"]) for k, v in zip(keys, values, strict=True)}


def test_a_socket_reused_for_the_same_ports_to_another_address_between_drains_is_another_connection() -> None:
    try:
        off = P.SockOffsets.from_btf()
    except (OSError, BtfError) as exc:
        pytest.skip(f"no kernel BTF: {exc}")
    counters = _Pass()
    tcp = TcpBytes(counters, off, opened_fd=-1)  # type: ignore[arg-type]
    tcp._owners = lambda: {SK: (TGID, DIR_CONNECT, b"client")}  # type: ignore[method-assign]
    none = (np.zeros(0, P.FINAL_KEY), np.zeros(0, P.FINAL))
    counters.rows = _open(off, FIRST, 100, 50)
    assert _bytes(tcp.drain(none, None, 10**18)) == {(FIRST, DIR_TX): 100, (FIRST, DIR_RX): 50}
    # the first closed (300 bytes written, 80 arrived in all), and its memory holds the second, same ports
    counters.rows = _open(off, SECOND, 10, 5)
    got = _bytes(tcp.drain(_closed(FIRST, 300, 80), None, 10**18 + 10**9))
    assert got == {(FIRST, DIR_TX): 200, (FIRST, DIR_RX): 30, (SECOND, DIR_TX): 10, (SECOND, DIR_RX): 5}
    # and the second goes on from its own counters
    counters.rows = _open(off, SECOND, 17, 5)
    assert _bytes(tcp.drain(none, None, 10**18 + 2 * 10**9)) == {(SECOND, DIR_TX): 7}
