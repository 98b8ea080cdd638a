"""Bytes per TCP connection without eBPF: the kernel's socket diagnostics (netlink ``sock_diag``,
what ``ss -ti`` reads), sampled. Unprivileged users may read them for every socket.

Each sample asks for the TCP sockets that are connected (IPv4 and IPv6) with their ``tcp_info``
and turns the growth of its counters since the last sample into the store's traffic rows: bytes
sent (``bytes_sent - bytes_retrans``: data bytes, each once) and read (``bytes_received``), TCP
segments retransmitted (``total_retrans``), and one opened connection (inbound when its local port
is listening) for a socket first seen after the first sample. Sockets are told apart by the
kernel's socket cookie. What a sample cannot see: connections that opened and closed between two
samples, the last bytes of a connection that closed, and UDP (the kernel keeps no byte counters
for it) — the tools say "sampled".

pyroute2 (a maintained netlink library) does the netlink work; it is imported only when a
procfs collector samples traffic.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any

from netspy_tui.collector.base import DIR_ACCEPT, DIR_CONNECT, DIR_RETRANS, DIR_RX, DIR_TX

logger = logging.getLogger(__name__)

#: INET_DIAG_INFO as an extension bit (``1 << (INET_DIAG_INFO - 1)``)
_EXT_INFO = 1 << 1
#: (local address, local port, remote address, remote port)
Endpoints = tuple[str, int, str, int]


def normal_address(text: str) -> str:
    """An address as the store keeps it: IPv4-mapped IPv6 as IPv4, no zone."""
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


class TrafficSampler:
    """Deltas of the kernel's per-socket TCP counters between calls to :meth:`sample`."""

    def __init__(self) -> None:
        from pyroute2.netlink.diag import SS_CONN, DiagSocket  # noqa: PLC0415

        self._states = SS_CONN
        self._socket = DiagSocket()
        try:
            self._socket.bind()
        except BaseException:
            self._socket.close()
            raise
        self._last: dict[int, tuple[int, int, int]] = {}  # cookie -> (sent, read, retransmits)
        self._primed = False
        self._waiting: set[int] = set()  # cookies of sockets whose owner was not known at their last sample

    def close(self) -> None:
        self._socket.close()

    def _sockets(self) -> list[tuple[int, Endpoints, tuple[int, int, int]]]:
        """(cookie, endpoints, (sent, read, retransmits)) of every connected TCP socket."""
        out = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in self._socket.get_sock_stats(family=family, states=self._states, extensions=_EXT_INFO):
                info = msg.get_attr("INET_DIAG_INFO")
                if info is None:
                    continue
                sent = info.get("tcpi_bytes_sent")  # (kernel 4.19+; before: bytes acknowledged)
                if sent is None:
                    sent = info.get("tcpi_bytes_acked")
                else:
                    sent -= info.get("tcpi_bytes_retrans") or 0
                ends = (normal_address(msg["idiag_src"]), int(msg["idiag_sport"]), normal_address(msg["idiag_dst"]),
                        int(msg["idiag_dport"]))  # fmt: skip
                counters = (int(sent or 0), int(info.get("tcpi_bytes_received") or 0),
                            int(info.get("tcpi_total_retrans") or 0))  # fmt: skip
                out.append((int(msg["idiag_cookie"]), ends, counters))
        return out

    def sample(self, owners: dict[Endpoints, tuple[int, str]], listening: set[int], now_ns: int) -> list[Any]:
        """Traffic rows for what moved since the last sample (none from the first one: it is the
        baseline). ``owners``: the process (pid, command) of each socket's endpoints, where known
        (a socket not among them waits one sample for its owner, then is charged to pid 0: not attributed);
        ``listening``: local ports with a listener."""
        rows: list[Any] = []
        second = now_ns // 1_000_000_000
        seen: dict[int, tuple[int, int, int]] = {}
        waiting: set[int] = set()
        for cookie, ends, counters in self._sockets():
            seen[cookie] = counters
            if not self._primed:
                continue
            before = self._last.get(cookie)
            owner = owners.get(ends)
            if owner is None and cookie not in self._waiting:
                # not in the process list read before this dump (opened in between): its bytes wait for the next
                # sample, which knows its process (they were charged to pid 0, nameless, for good)
                waiting.add(cookie)
                if before is None:
                    del seen[cookie]  # (new at the next sample: its open and all its bytes then)
                else:
                    seen[cookie] = before
                continue
            pid, command = owner or (0, "")
            head = (second, pid, command, "TCP", *ends)
            if before is None:
                before = (0, 0, 0)
                opened = DIR_ACCEPT if ends[1] in listening else DIR_CONNECT
                rows.append((*head, opened, 1, 1, now_ns, now_ns))
            for direction, now_value, then in zip((DIR_TX, DIR_RX, DIR_RETRANS), counters, before, strict=True):
                if now_value > then:  # (calls: unknown when sampled; retransmissions for DIR_RETRANS)
                    delta = now_value - then
                    rows.append((*head, direction, delta, delta if direction == DIR_RETRANS else 0, now_ns, now_ns))
        self._last = seen
        self._waiting = waiting
        self._primed = True
        return rows
