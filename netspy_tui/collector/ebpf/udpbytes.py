"""(experiment) UDP payload bytes per socket from cgroup_skb programs, with no program on send() or recv().

Where fentry on udp_sendmsg / udp_recvmsg is refused (this project's kernels: EPERM) the per-call hooks left
for UDP are sock/sock_send_length and sock_recv_length, whose dispatch alone costs every TCP write too. A
cgroup_skb program on the cgroup2 root runs per packet instead (a loopback 64-byte TCP write loop makes
~0.17 segments per write), returns at once for anything but UDP, and counts a UDP datagram's payload (its
length less the IP and UDP headers; one header per GSO skb, before segmentation) for its socket's cookie and
direction (egress: sent; ingress: arrived at the socket). A cgroup/sock_create program remembers which process
made each UDP socket (its owner: the bytes of a socket that only receives are charged to it).

:class:`UdpBytes` owns the programs, links and maps; :meth:`UdpBytes.drain` returns (cookie, direction,
bytes, datagrams) sums since the last call and :meth:`UdpBytes.owner` a socket's creator.
"""

from __future__ import annotations

import os

import numpy as np

from netspy_tui.collector.base import DIR_RX, DIR_TX
from netspy_tui.collector.ebpf import syscalls
from netspy_tui.collector.ebpf.asm import DW, FP, R0, R1, R2, R3, R4, R6, R7, R8, Asm, B, Reg, W

SKB_LOAD_BYTES, GET_SOCKET_COOKIE, GET_CURRENT_PID_TGID, GET_CURRENT_COMM = 26, 46, 14, 16
MAP_LOOKUP, MAP_UPDATE = 1, 2
BPF_NOEXIST = 1
BPF_PROG_TYPE_CGROUP_SOCK = 9
BPF_CGROUP_INET_SOCK_CREATE = 2
IPPROTO_UDP = 17
SKB_LEN = 0  # struct __sk_buff.len
SKB_DATA, SKB_DATA_END = 76, 80  # struct __sk_buff.data, data_end (packet pointers)
BPF_SOCK_PROTOCOL = 12  # struct bpf_sock.protocol

KEY = np.dtype([("cookie", "<u8"), ("direction", "<u4"), ("second", "<u4")])
"""The socket (its cookie), the direction and the wall-clock second the datagram went by."""
VALUE = np.dtype([("bytes", "<u8"), ("datagrams", "<u8"), ("family", "<u4"), ("lport", "<u4"), ("rport", "<u4"),
                  ("pad", "<u4"), ("laddr", "u1", (16,)), ("raddr", "u1", (16,))])  # fmt: skip
"""Sums, and the socket's addresses as the first datagram found them (as ``__sk_buff`` has them: ``rport``
network order in its upper half on little-endian, ``lport`` host order; IPv4 addresses in the first 4 bytes).
:meth:`UdpBytes.drain` gives both ports in host order."""
#: struct __sk_buff: the socket's family, addresses and ports (read from skb->sk)
SKB_FAMILY, SKB_REMOTE_IP4, SKB_LOCAL_IP4, SKB_REMOTE_IP6, SKB_LOCAL_IP6 = 88, 92, 96, 100, 116
SKB_REMOTE_PORT, SKB_LOCAL_PORT = 132, 136
AF_INET = 2
OWNER = np.dtype([("tgid", "<u8"), ("comm", "S16")])
ENTRIES = 16384


DRAINED = np.dtype([("cookie", "<u8"), ("direction", "<u4"), ("second", "<u4"), ("bytes", "<u8"),
                    ("datagrams", "<u8"), ("family", "<u4"), ("lport", "<u4"), ("rport", "<u4"),
                    ("laddr", "u1", (16,)), ("raddr", "u1", (16,))])  # fmt: skip
KTIME_GET_NS = 5
NS = 1_000_000_000
#: ld_imm64's source for "the address of a map's value" (uapi BPF_PSEUDO_MAP_VALUE)
PSEUDO_MAP_VALUE = 2


def _lookup_add(a: Asm, sums_fd: int, missing: str) -> None:
    """sums[key at FP-32] += r8 bytes and one datagram, then to ``out``; no such entry: to ``missing``."""
    a.ld_map_fd(R1, sums_fd)
    a.mov(R2, FP).add(R2, -32)
    a.call(MAP_LOOKUP)
    a.jeq(R0, 0, missing)
    a.atomic(DW, R0, 0, R8, 0x00)
    a.mov(R1, 1)
    a.atomic(DW, R0, 8, R1, 0x00)
    a.ja("out")


def _add(a: Asm, sums_fd: int, p: str, overflow_fd: int, direction: int) -> None:
    """sums[(cookie, direction, second) at FP-32] += r8 bytes, one datagram; a new entry gets the socket's
    addresses; a full map adds them to ``overflow_fd`` (the collector's traffic overflow array: slot
    ``(direction - 1) * 2`` bytes, the next one datagrams). Ends at ``out``."""
    _lookup_add(a, sums_fd, p + "new")
    a.label(p + "new")
    v = -32 - VALUE.itemsize
    a.zero_stack(v, VALUE.itemsize)
    a.stx(DW, FP, v, R8)
    a.st(DW, FP, v + 8, 1)
    a.ldx(W, R1, R6, SKB_FAMILY).stx(W, FP, v + 16, R1)
    a.ldx(W, R2, R6, SKB_LOCAL_PORT).stx(W, FP, v + 20, R2)
    a.ldx(W, R2, R6, SKB_REMOTE_PORT).stx(W, FP, v + 24, R2)
    a.jne(R1, AF_INET, p + "new6")
    a.ldx(W, R2, R6, SKB_LOCAL_IP4).stx(W, FP, v + 32, R2)
    a.ldx(W, R2, R6, SKB_REMOTE_IP4).stx(W, FP, v + 48, R2)
    a.ja(p + "new_put")
    a.label(p + "new6")
    for i in range(0, 16, 4):
        a.ldx(W, R2, R6, SKB_LOCAL_IP6 + i).stx(W, FP, v + 32 + i, R2)
        a.ldx(W, R2, R6, SKB_REMOTE_IP6 + i).stx(W, FP, v + 48 + i, R2)
    a.label(p + "new_put")
    a.ld_map_fd(R1, sums_fd)
    a.mov(R2, FP).add(R2, -32)
    a.mov(R3, FP).add(R3, v)
    a.mov(R4, BPF_NOEXIST)
    a.call(MAP_UPDATE)
    a.jeq(R0, 0, "out")
    _lookup_add(a, sums_fd, p + "full")  # (another CPU made the entry meanwhile: add to it)
    a.label(p + "full")
    for slot, amount in ((0, R8), (1, None)):
        a.st(W, FP, -4, (direction - 1) * 2 + slot)
        a.ld_map_fd(R1, overflow_fd)
        a.mov(R2, FP).add(R2, -4)
        a.call(MAP_LOOKUP)
        a.jeq(R0, 0, "out")
        if amount is None:
            a.mov(R1, 1)
            a.atomic(DW, R0, 0, R1, 0x00)
        else:
            a.atomic(DW, R0, 0, amount, 0x00)
    a.ja("out")


def _ip_header(a: Asm, base: Reg, off: int, p: str) -> None:
    """The IP header's first 10 bytes at ``base + off``: a UDP datagram on to ``udp`` with r7 = its IP
    header's length, anything else to ``out``."""
    a.ldx(B, R1, base, off)
    a.rsh(R1, 4)
    a.jeq(R1, 4, p + "v4")
    a.jne(R1, 6, "out")
    a.ldx(B, R1, base, off + 6)  # IPv6 next header (extension headers: not counted)
    a.jne(R1, IPPROTO_UDP, "out")
    a.mov(R7, 40)
    a.ja("udp")
    a.label(p + "v4")
    a.ldx(B, R1, base, off + 9)
    a.jne(R1, IPPROTO_UDP, "out")
    a.ldx(B, R7, base, off)
    a.and_(R7, 0xF).lsh(R7, 2)
    a.ja("udp")


def _count_program(sums_fds: list[int], direction: int, ctl_fd: int | None, overflow_fd: int) -> bytes:
    """``ctl_fd``: the collector's ctl array (its value: the live map of ``sums_fds``, then the offset from
    ``bpf_ktime_get_ns`` to wall-clock ns), else one map and seconds since boot."""
    a = Asm()
    a.mov(R6, R1)
    # the IP header's first 10 bytes (cgroup_skb data starts at the network header): read in place when the
    # linear data holds them (no helper call: most packets are TCP and leave here), else copied out
    a.ldx(W, R2, R6, SKB_DATA)
    a.ldx(W, R3, R6, SKB_DATA_END)
    a.mov(R1, R2).add(R1, 10)
    a.jmp("jgt", R1, R3, "copy")
    _ip_header(a, R2, 0, "d")
    a.label("copy")
    a.zero_stack(-16, 16)
    a.mov(R1, R6).mov(R2, 0).mov(R3, FP).add(R3, -16).mov(R4, 10)
    a.call(SKB_LOAD_BYTES)
    a.jne(R0, 0, "out")
    _ip_header(a, FP, -16, "c")
    a.label("udp")
    a.ldx(W, R8, R6, SKB_LEN)
    a.sub(R8, R7).sub(R8, 8)  # r8 = payload bytes
    a.jmp("jslt", R8, 0, "out")
    a.mov(R1, R6)
    a.call(GET_SOCKET_COOKIE)
    a.stx(DW, FP, -32, R0)
    a.st(W, FP, -24, direction)
    a.call(KTIME_GET_NS)
    if ctl_fd is not None:
        a.ld_imm64(R1, ctl_fd, PSEUDO_MAP_VALUE)
        a.ldx(DW, R1, R1, 8)
        a.add(R0, R1)
    a.alu64("div", R0, NS)
    a.stx(W, FP, -20, R0)
    if ctl_fd is not None and len(sums_fds) > 1:
        a.ld_imm64(R1, ctl_fd, PSEUDO_MAP_VALUE)
        a.ldx(DW, R1, R1, 0)  # ctl.active: the live map
        a.jne(R1, 0, "live1")
    for i, sums_fd in enumerate(sums_fds[:2] if ctl_fd is not None else sums_fds[:1]):
        if i:
            a.label("live1")
        _add(a, sums_fd, f"m{i}", overflow_fd, direction)
    a.label("out")
    a.mov(R0, 1).exit()  # (let every packet through)
    return a.assemble()


def _owner_program(owners_fd: int) -> bytes:
    a = Asm()
    a.mov(R6, R1)
    a.ldx(W, R1, R6, BPF_SOCK_PROTOCOL)
    a.jne(R1, IPPROTO_UDP, "out")
    a.mov(R1, R6)
    a.call(GET_SOCKET_COOKIE)
    a.stx(DW, FP, -8, R0)
    a.zero_stack(-32, 24)
    a.call(GET_CURRENT_PID_TGID)
    a.rsh(R0, 32).stx(DW, FP, -32, R0)
    a.mov(R1, FP).add(R1, -24).mov(R2, 16)
    a.call(GET_CURRENT_COMM)
    a.ld_map_fd(R1, owners_fd)
    a.mov(R2, FP).add(R2, -8)
    a.mov(R3, FP).add(R3, -32)
    a.mov(R4, 0)
    a.call(MAP_UPDATE)
    a.label("out")
    a.mov(R0, 1).exit()
    return a.assemble()


class UdpBytes:
    """The programs attached to the cgroup2 root ``cgroup_dir``; raises :class:`syscalls.BpfError` (or OSError)
    when this kernel refuses any of them, with nothing left attached."""

    def __init__(self, cgroup_dir: str, ctl_fd: int | None = None, overflow_fd: int | None = None) -> None:
        self.fds: list[int] = []
        self.prog_fds: list[int] = []
        self.link_fds: list[int] = []
        try:
            maps = 2 if ctl_fd is not None else 1
            self.sums = [
                syscalls.map_create(syscalls.BPF_MAP_TYPE_HASH, KEY.itemsize, VALUE.itemsize, ENTRIES, f"netspy_udp{i}")
                for i in range(maps)
            ]
            self.fds.extend(self.sums)
            if overflow_fd is None:  # (standalone: an array of its own, as the collector's traffic overflow)
                overflow_fd = syscalls.map_create(syscalls.BPF_MAP_TYPE_ARRAY, 4, 8, 12, "netspy_udpof")
                self.fds.append(overflow_fd)
            self.overflow = overflow_fd
            self.owners = syscalls.map_create(syscalls.BPF_MAP_TYPE_LRU_HASH, 8, OWNER.itemsize, 65536,
                                              "netspy_udpown")  # fmt: skip
            self.fds.append(self.owners)
            cg = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self.fds.append(cg)
            prog = syscalls.prog_load(BPF_PROG_TYPE_CGROUP_SOCK, _owner_program(self.owners), "netspy_udpown",
                                      attach_type=BPF_CGROUP_INET_SOCK_CREATE)  # fmt: skip
            self.fds.append(prog)
            self.prog_fds.append(prog)
            self.link_fds.append(syscalls.link_create(prog, cg, BPF_CGROUP_INET_SOCK_CREATE))
            for attach, direction in ((syscalls.BPF_CGROUP_INET_EGRESS, DIR_TX),
                                      (syscalls.BPF_CGROUP_INET_INGRESS, DIR_RX)):  # fmt: skip
                insns = _count_program(self.sums, direction, ctl_fd, self.overflow)
                prog = syscalls.prog_load(syscalls.BPF_PROG_TYPE_CGROUP_SKB, insns, "netspy_udpbytes",
                                          attach_type=attach)  # fmt: skip
                self.fds.append(prog)
                self.prog_fds.append(prog)
                self.link_fds.append(syscalls.link_create(prog, cg, attach))
        except BaseException:
            self.close()
            raise

    def drain(self, index: int = 0) -> np.ndarray:
        """(cookie, direction, second, bytes, datagrams, the socket's family, ports (host order) and addresses)
        summed since the last drain (taken out of the map). Exact only when no datagram goes by meanwhile (an
        entry's add between the batch's read and its delete is lost): the collector drains the map a program
        writes no more: with a ctl map, ``index`` is the idle one after the collector's flip and grace period."""
        raw_keys, raw_values, n = syscalls.map_batch(
            self.sums[index], KEY.itemsize, VALUE.itemsize, ENTRIES, delete=True
        )
        keys = np.frombuffer(raw_keys, KEY)[:n]
        values = np.frombuffer(raw_values, VALUE)[:n]
        out = np.zeros(n, DRAINED)
        for name in ("cookie", "direction", "second"):
            out[name] = keys[name]
        for name in ("bytes", "datagrams", "family", "lport", "laddr", "raddr"):
            out[name] = values[name]
        port = values["rport"] >> 16  # (__sk_buff.remote_port: network order, in the upper half on little-endian)
        out["rport"] = ((port & 0xFF) << 8) | (port >> 8)
        return out

    def owner(self, cookie: int) -> tuple[int, str] | None:
        """(tgid, process name) of the process that made UDP socket ``cookie``, if seen."""
        raw = syscalls.map_lookup(self.owners, cookie.to_bytes(8, "little"), OWNER.itemsize)
        if raw is None:
            return None
        value = np.frombuffer(raw, OWNER)[0]
        return int(value["tgid"]), bytes(value["comm"]).decode("utf-8", "replace")

    def take_links(self) -> list[int]:
        """The links' fds (owner, sent, read, as ``prog_fds``), handed over: the caller closes them (detaching)."""
        links, self.link_fds = self.link_fds, []
        return links

    def detach(self) -> None:
        """The programs off the cgroup (the maps stay readable)."""
        for fd in reversed(self.link_fds):
            syscalls.close_fd(fd)
        self.link_fds.clear()

    def close(self) -> None:
        self.detach()
        for fd in reversed(self.fds):
            syscalls.close_fd(fd)
        self.fds.clear()
        self.prog_fds.clear()
