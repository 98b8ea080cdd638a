"""The eBPF programs (hand-assembled) and the record they all write.

Programs (all ``BPF_PROG_TYPE_TRACEPOINT``):

``connect_enter`` (syscalls/sys_enter_connect)
    Saves ``{uservaddr, addrlen, ts, skaddr=0, fd}`` in ``inflight[pid_tgid]``. The sockaddr is
    not read here: the user page may not be resident yet, and a tracepoint program cannot fault.
``tcp_state`` (sock/inet_sock_set_state)
    CLOSE->SYN_SENT happens inside ``connect()`` in the caller's context: store ``skaddr`` into
    ``inflight[pid_tgid]`` and create ``socks[skaddr]``. SYN_SENT->x (any context) publishes the
    new state into ``socks[skaddr]`` with an atomic fetch-or; if ``connect()`` already returned
    (EXITED bit set) it writes an OUTCOME record.
``tcp_reset`` (tcp/tcp_receive_reset, when the kernel has it)
    Sets the RESET bit in ``socks[skaddr]``: a SYN_SENT->CLOSE after a RST is "refused".
``connect_exit`` (syscalls/sys_exit_connect)
    Reads the sockaddr (pointer saved at enter), drops anything but AF_INET/AF_INET6, reads the
    socket's type and protocol from the fd (BTF offsets), and hands off with ``socks[skaddr]``:
    fetch-or EXITED; if the state was already known it goes into this CONNECT record, otherwise
    the record is flagged PENDING and ``tcp_state`` sends the OUTCOME later. Whichever of the two
    comes second deletes the entry, so exactly one of them reports the outcome. The ring record is
    reserved *before* the hand-off, so an OUTCOME record always follows its CONNECT record.
``skb_drop`` (skb/kfree_skb)
    Skips ordinary frees (reasons in :data:`SKIPPED_DROP_REASONS`, numbers looked up by name
    from the tracepoint format) and records the reason, packet length and, for IPv4/IPv6, the
    L4 protocol, destination address and port read from the packet headers. The pid/comm is the
    current task's only when the tracepoint did not fire in interrupt context (common_flags):
    drops in softirq (most receive-path drops) have pid 0 and an empty command.

Every record is :data:`RECORD` (80 bytes), written with ``BPF_RB_NO_WAKEUP`` unless the ring is
more than a quarter full, in which case the reader is woken at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from netspy_tui.collector.ebpf import btf as btf_mod
from netspy_tui.collector.ebpf.asm import ATOMIC_ADD as _ADD
from netspy_tui.collector.ebpf.asm import ATOMIC_OR as _OR
from netspy_tui.collector.ebpf.asm import DW, FETCH, FP, R0, R1, R2, R3, R4, R6, R7, R8, R9, Asm, B, H, Reg, W
from netspy_tui.collector.ebpf.tracefs import Tracepoint

log = logging.getLogger(__name__)

# helper function ids (include/uapi/linux/bpf.h, stable ABI)
MAP_LOOKUP, MAP_UPDATE, MAP_DELETE = 1, 2, 3
KTIME_GET_NS = 5
GET_CURRENT_PID_TGID = 14
GET_CURRENT_COMM = 16
GET_CURRENT_TASK = 35
PROBE_READ_USER = 112
PROBE_READ_KERNEL = 113
RINGBUF_OUTPUT, RINGBUF_RESERVE, RINGBUF_SUBMIT, RINGBUF_DISCARD, RINGBUF_QUERY = 130, 131, 132, 133, 134
RB_NO_WAKEUP, RB_FORCE_WAKEUP = 1, 2
RB_AVAIL_DATA = 0

AF_INET, AF_INET6 = 2, 10
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
IPPROTO_TCP, IPPROTO_UDP = 6, 17
ENOTSOCK, EBADF = 88, 9

# trace_entry.common_flags bits (kernel/trace/trace.h): the event fired in interrupt context
TRACE_FLAG_HARDIRQ, TRACE_FLAG_SOFTIRQ, TRACE_FLAG_NMI = 0x08, 0x10, 0x40

# record kinds
KIND_CONNECT, KIND_OUTCOME, KIND_DROP = 1, 2, 3

# record flags; in socks[] values DONE/RESET/EXITED and the new state (bits 8-15) are used
F_TCP = 1 << 0  # connect(): the socket went CLOSE -> SYN_SENT, the kernel says it is TCP
F_DONE = 1 << 1  # the SYN_SENT -> x transition happened; x is in bits 8-15
F_RESET = 1 << 2  # a RST arrived while in SYN_SENT
F_EXITED = 1 << 3  # (kernel only) connect() returned
F_PENDING = 1 << 4  # connect(): outcome not known yet, an OUTCOME record will follow
F_SOCKINFO = 1 << 5  # connect(): socket type and protocol read from the socket
F_IRQ = 1 << 6  # drop: fired in interrupt context, pid/comm not attributed
F_L3 = 1 << 7  # drop: protocol and destination address read from the packet
F_PORT = 1 << 8  # drop: destination port read from the packet
STATE_SHIFT = 16  # newstate lives in bits 16-23 of the flags

# counters (array map) indices
CTR_RING_FULL = 0
CTR_SOCKADDR_FAULT = 1
N_COUNTERS = 4

#: drop reasons not reported: ordinary frees, not packets lost. Names as the kernel prints them;
#: names the running kernel does not know are ignored.
SKIPPED_DROP_REASONS = (
    "NOT_SPECIFIED",  # generic kfree_skb() of paths not converted to reasons: mostly ordinary frees
    "SOCKET_CLOSE",  # unread data freed when its socket is closed
    "UNIX_DISCONNECT",  # AF_UNIX peer went away: local IPC, not network
    "UNIX_SKIP_OOB",
    "QUEUE_PURGE",  # queues flushed on teardown
)

RECORD = np.dtype(
    {
        "names": [
            "kind", "flags", "ts", "key", "pid", "code", "comm", "addr", "family", "port", "socktype",
            "protocol", "length", "size",
        ],
        "formats": ["<u4", "<u4", "<u8", "<u8", "<u4", "<i4", "S16", ("u1", (16,)), "<u2", ">u2", "<u2",
                    "<u2", "<u4", "<u4"],
        "offsets": [0, 4, 8, 16, 24, 28, 32, 48, 64, 66, 68, 70, 72, 76],
        "itemsize": 80,
    }
)  # fmt: skip
"""One ring record. ``code``: connect() return value or drop reason. ``addr``: IPv4 in the first
4 bytes or IPv6, network order. ``port``: network order (decoded big-endian). ``socktype``:
socket type for connects, ethertype for drops. ``protocol``: IPPROTO_*. ``length``: skb->len,
``size``: IP packet size (drops)."""

# offsets inside RECORD, for the assembler
_O = {name: RECORD.fields[name][1] for name in RECORD.names}
RECORD_SIZE = RECORD.itemsize

# inflight[pid_tgid] value layout
_IF_ADDR, _IF_LEN, _IF_TS, _IF_SK, _IF_FD = 0, 8, 16, 24, 32
INFLIGHT_VALUE = 40


@dataclass
class SockOffsets:
    """Kernel struct offsets from BTF; any of them None disables what needs it."""

    task_files: int | None = None
    files_fdt: int | None = None
    fdt_fd: int | None = None
    fdt_max_fds: int | None = None
    file_private: int | None = None
    socket_type: int | None = None
    socket_sk: int | None = None
    sk_protocol: int | None = None
    skb_len: int | None = None
    skb_head: int | None = None
    skb_network_header: int | None = None
    missing: list[str] = field(default_factory=list)

    @property
    def sockinfo(self) -> bool:
        return None not in (
            self.task_files, self.files_fdt, self.fdt_fd, self.fdt_max_fds, self.file_private,
            self.socket_type, self.socket_sk, self.sk_protocol,
        )  # fmt: skip

    @property
    def packet(self) -> bool:
        return None not in (self.skb_head, self.skb_network_header)

    @classmethod
    def from_btf(cls) -> SockOffsets:
        want = {
            "task_files": ("task_struct", "files", 8),
            "files_fdt": ("files_struct", "fdt", 8),
            "fdt_fd": ("fdtable", "fd", 8),
            "fdt_max_fds": ("fdtable", "max_fds", 4),
            "file_private": ("file", "private_data", 8),
            "socket_type": ("socket", "type", 2),
            "socket_sk": ("socket", "sk", 8),
            "sk_protocol": ("sock", "sk_protocol", 2),
            "skb_len": ("sk_buff", "len", 4),
            "skb_head": ("sk_buff", "head", 8),
            "skb_network_header": ("sk_buff", "network_header", 2),
        }
        out = cls()
        try:
            kbtf = btf_mod.vmlinux()
        except (OSError, btf_mod.BtfError) as exc:
            log.warning("kernel BTF unavailable (%s): socket type and packet sizes will be unknown", exc)
            out.missing = list(want)
            return out
        for attr, (struct_name, member, size) in want.items():
            try:
                m = kbtf.member(struct_name, member)
            except btf_mod.BtfError as exc:
                out.missing.append(attr)
                log.warning("BTF: %s", exc)
                continue
            if m.size != size:
                out.missing.append(attr)
                log.warning("BTF: %s.%s is %d bytes, expected %d", struct_name, member, m.size, size)
                continue
            setattr(out, attr, m.offset)
        return out


@dataclass
class Maps:
    ring: int
    ring_bytes: int
    inflight: int
    socks: int
    counters: int


# --- snippets ---------------------------------------------------------------------------------


def _count(a: Asm, counters_fd: int, index: int, slot: int) -> None:
    """counters[index] += 1 (atomically). Clobbers r0-r5 and the stack word at FP+slot."""
    skip = f"_cnt{len(a)}"
    a.st(W, FP, slot, index)
    a.ld_map_fd(R1, counters_fd)
    a.mov(R2, FP).add(R2, slot)
    a.call(MAP_LOOKUP)
    a.jeq(R0, 0, skip)
    a.mov(R1, 1)
    a.atomic(DW, R0, 0, R1, _ADD)
    a.label(skip)


def _submit(a: Asm, maps: Maps, rec: Reg) -> None:
    """Submit ``rec`` without a wakeup, unless the ring is more than a quarter full."""
    done = f"_sub{len(a)}"
    a.ld_map_fd(R1, maps.ring)
    a.mov(R2, RB_AVAIL_DATA)
    a.call(RINGBUF_QUERY)
    a.mov(R2, RB_NO_WAKEUP)
    a.jmp("jle", R0, maps.ring_bytes // 4, done)
    a.mov(R2, RB_FORCE_WAKEUP)
    a.label(done)
    a.mov(R1, rec)
    a.call(RINGBUF_SUBMIT)


def _reserve(a: Asm, maps: Maps, dst: Reg) -> None:
    """dst = ringbuf_reserve(RECORD_SIZE); caller checks for NULL."""
    a.ld_map_fd(R1, maps.ring)
    a.mov(R2, RECORD_SIZE)
    a.mov(R3, 0)
    a.call(RINGBUF_RESERVE)
    a.mov(dst, R0)


def _kread(a: Asm, slot: int, size: int, src: Reg, fail: str) -> None:
    """*(FP+slot) = probe_read_kernel(src, size); jump to ``fail`` on error. ``src`` may be r3."""
    if src is not R3:
        a.mov(R3, src)
    a.mov(R1, FP).add(R1, slot)
    a.mov(R2, size)
    a.call(PROBE_READ_KERNEL)
    a.jne(R0, 0, fail)


# --- programs ---------------------------------------------------------------------------------


def connect_enter(tp: Tracepoint, maps: Maps) -> Asm:
    a = Asm()
    a.mov(R6, R1)
    a.call(GET_CURRENT_PID_TGID)
    a.stx(DW, FP, -8, R0)
    a.ldx(DW, R1, R6, tp.offset("uservaddr", 8)).stx(DW, FP, -48 + _IF_ADDR, R1)
    a.ldx(DW, R1, R6, tp.offset("addrlen", 8)).stx(DW, FP, -48 + _IF_LEN, R1)
    a.ldx(DW, R1, R6, tp.offset("fd", 8)).stx(DW, FP, -48 + _IF_FD, R1)
    a.st(DW, FP, -48 + _IF_SK, 0)
    a.call(KTIME_GET_NS)
    a.stx(DW, FP, -48 + _IF_TS, R0)
    a.ld_map_fd(R1, maps.inflight)
    a.mov(R2, FP).add(R2, -8)
    a.mov(R3, FP).add(R3, -48)
    a.mov(R4, 0)  # BPF_ANY
    a.call(MAP_UPDATE)
    return a.ret(0)


def tcp_state(tp: Tracepoint, maps: Maps, states: dict[str, int]) -> Asm:
    close, syn_sent = states["TCP_CLOSE"], states["TCP_SYN_SENT"]
    a = Asm()
    a.mov(R6, R1)
    a.ldx(W, R7, R6, tp.offset("oldstate", 4))
    a.ldx(W, R8, R6, tp.offset("newstate", 4))
    a.jeq(R7, syn_sent, "outcome")
    a.jne(R8, syn_sent, "out")
    a.jne(R7, close, "out")
    # CLOSE -> SYN_SENT inside connect(): link the socket to the caller's in-flight connect
    a.call(GET_CURRENT_PID_TGID)
    a.stx(DW, FP, -8, R0)
    a.ld_map_fd(R1, maps.inflight)
    a.mov(R2, FP).add(R2, -8)
    a.call(MAP_LOOKUP)
    a.jeq(R0, 0, "out")
    a.ldx(DW, R1, R6, tp.offset("skaddr", 8))
    a.stx(DW, R0, _IF_SK, R1)
    a.stx(DW, FP, -16, R1)
    a.st(DW, FP, -24, 0)
    a.ld_map_fd(R1, maps.socks)
    a.mov(R2, FP).add(R2, -16)
    a.mov(R3, FP).add(R3, -24)
    a.mov(R4, 0)
    a.call(MAP_UPDATE)
    a.ja("out")

    # SYN_SENT -> x: publish the outcome; report it if connect() already returned
    a.label("outcome")
    a.ldx(DW, R1, R6, tp.offset("skaddr", 8))
    a.stx(DW, FP, -16, R1)
    a.ld_map_fd(R1, maps.socks)
    a.mov(R2, FP).add(R2, -16)
    a.call(MAP_LOOKUP)
    a.jeq(R0, 0, "out")
    a.mov(R1, R8).lsh(R1, STATE_SHIFT).or_(R1, F_DONE)
    a.mov(R7, R1)  # r7 = what we publish
    a.atomic(DW, R0, 0, R1, _OR | FETCH)  # r1 = previous flags
    a.jmp("jset", R1, F_EXITED, "report")
    a.ja("out")  # connect() still running: it picks the outcome up
    a.label("report")
    a.or_(R7, R1)
    _reserve(a, maps, R9)
    a.jne(R9, 0, "fill")
    _count(a, maps.counters, CTR_RING_FULL, -32)
    a.ja("forget")
    a.label("fill")
    a.st(W, R9, _O["kind"], KIND_OUTCOME)
    a.stx(W, R9, _O["flags"], R7)
    a.ldx(DW, R1, FP, -16).stx(DW, R9, _O["key"], R1)
    a.st(W, R9, _O["pid"], 0)
    a.st(W, R9, _O["code"], 0)
    a.call(KTIME_GET_NS)
    a.stx(DW, R9, _O["ts"], R0)
    _submit(a, maps, R9)
    a.label("forget")
    a.ld_map_fd(R1, maps.socks)
    a.mov(R2, FP).add(R2, -16)
    a.call(MAP_DELETE)
    a.label("out")
    return a.ret(0)


def tcp_reset(tp: Tracepoint, maps: Maps) -> Asm:
    a = Asm()
    a.ldx(DW, R1, R1, tp.offset("skaddr", 8))
    a.stx(DW, FP, -8, R1)
    a.ld_map_fd(R1, maps.socks)
    a.mov(R2, FP).add(R2, -8)
    a.call(MAP_LOOKUP)
    a.jeq(R0, 0, "out")
    a.mov(R1, F_RESET)
    a.atomic(DW, R0, 0, R1, _OR)
    a.label("out")
    return a.ret(0)


def connect_exit(tp: Tracepoint, maps: Maps, off: SockOffsets) -> Asm:
    """See the module docstring. Stack: -8 key, -48..-16 sockaddr, -56 scratch, -64.. saved state."""
    SA = -48  # sockaddr buffer, 32 bytes (sockaddr_in6 is 28)
    SCR = -56  # probe-read scratch
    S_FD, S_TS, S_SK, S_ADDR, S_LEN = -64, -72, -80, -88, -96
    CNT = -104
    a = Asm()
    a.mov(R6, R1)
    a.call(GET_CURRENT_PID_TGID)
    a.stx(DW, FP, -8, R0)
    a.ld_map_fd(R1, maps.inflight)
    a.mov(R2, FP).add(R2, -8)
    a.call(MAP_LOOKUP)
    a.jeq(R0, 0, "out")
    for slot, value_off in ((S_ADDR, _IF_ADDR), (S_LEN, _IF_LEN), (S_TS, _IF_TS), (S_SK, _IF_SK), (S_FD, _IF_FD)):
        a.ldx(DW, R1, R0, value_off).stx(DW, FP, slot, R1)
    a.ld_map_fd(R1, maps.inflight)
    a.mov(R2, FP).add(R2, -8)
    a.call(MAP_DELETE)

    # read the sockaddr now that connect() has touched it (its page is resident)
    a.zero_stack(SA, 32)
    a.ldx(DW, R2, FP, S_LEN)
    a.jmp("jsle", R2, 28, "len_ok")
    a.mov(R2, 28)
    a.label("len_ok")
    a.jmp("jslt", R2, 2, "out")
    a.mov(R1, FP).add(R1, SA)
    a.ldx(DW, R3, FP, S_ADDR)
    a.call(PROBE_READ_USER)
    a.jeq(R0, 0, "read_ok")
    _count(a, maps.counters, CTR_SOCKADDR_FAULT, CNT)
    a.ja("out")
    a.label("read_ok")
    a.ldx(H, R8, FP, SA)  # sa_family
    a.jeq(R8, AF_INET, "inet")
    a.jeq(R8, AF_INET6, "inet")
    a.ja("out")  # AF_UNIX, AF_NETLINK, AF_UNSPEC (disconnect), ...

    a.label("inet")
    _reserve(a, maps, R9)
    a.jne(R9, 0, "fill")
    _count(a, maps.counters, CTR_RING_FULL, CNT)
    a.ja("out")
    a.label("fill")
    a.mov(R7, 0)  # r7 = flags
    a.st(W, R9, _O["kind"], KIND_CONNECT)
    a.ldx(DW, R1, FP, S_TS).stx(DW, R9, _O["ts"], R1)
    a.ldx(DW, R1, FP, S_SK).stx(DW, R9, _O["key"], R1)
    a.ldx(DW, R1, FP, -8).rsh(R1, 32).stx(W, R9, _O["pid"], R1)
    a.ldx(DW, R1, R6, tp.offset("ret", 8)).stx(W, R9, _O["code"], R1)
    a.stx(H, R9, _O["family"], R8)
    a.ldx(H, R1, FP, SA + 2).stx(H, R9, _O["port"], R1)
    a.st(H, R9, _O["socktype"], 0)
    a.st(H, R9, _O["protocol"], 0)
    a.st(DW, R9, _O["length"], 0)  # length + size
    a.mov(R1, R9).add(R1, _O["comm"])
    a.mov(R2, 16)
    a.call(GET_CURRENT_COMM)
    # address: IPv4 at sockaddr+4, IPv6 at sockaddr+8
    a.st(DW, R9, _O["addr"] + 8, 0)
    a.jeq(R8, AF_INET6, "v6")
    a.ldx(W, R1, FP, SA + 4).stx(DW, R9, _O["addr"], R1)
    a.ja("addr_done")
    a.label("v6")
    a.ldx(DW, R1, FP, SA + 8).stx(DW, R9, _O["addr"], R1)
    a.ldx(DW, R1, FP, SA + 16).stx(DW, R9, _O["addr"] + 8, R1)
    a.label("addr_done")

    if off.sockinfo:
        # fd -> file -> socket: type and protocol as the kernel knows them
        assert off.task_files is not None and off.files_fdt is not None and off.fdt_fd is not None
        assert off.fdt_max_fds is not None and off.file_private is not None and off.socket_type is not None
        assert off.socket_sk is not None and off.sk_protocol is not None
        a.ldx(DW, R1, R6, tp.offset("ret", 8))
        a.jeq(R1, -ENOTSOCK, "sockinfo_done")
        a.jeq(R1, -EBADF, "sockinfo_done")
        a.call(GET_CURRENT_TASK)
        a.mov(R3, R0).add(R3, off.task_files)
        _kread(a, SCR, 8, R3, "sockinfo_done")
        a.ldx(DW, R3, FP, SCR).add(R3, off.files_fdt)
        _kread(a, SCR, 8, R3, "sockinfo_done")
        a.ldx(DW, R8, FP, SCR)  # r8 = fdt (family no longer needed)
        a.mov(R3, R8).add(R3, off.fdt_max_fds)
        a.st(DW, FP, SCR, 0)
        _kread(a, SCR, 4, R3, "sockinfo_done")
        a.ldx(W, R2, FP, SCR)
        a.ldx(DW, R1, FP, S_FD)
        a.jmp("jge", R1, R2, "sockinfo_done")
        a.mov(R3, R8).add(R3, off.fdt_fd)
        _kread(a, SCR, 8, R3, "sockinfo_done")
        a.ldx(DW, R3, FP, S_FD).lsh(R3, 3)
        a.ldx(DW, R1, FP, SCR).add(R3, R1)
        _kread(a, SCR, 8, R3, "sockinfo_done")  # struct file *
        a.ldx(DW, R3, FP, SCR).add(R3, off.file_private)
        _kread(a, SCR, 8, R3, "sockinfo_done")  # struct socket *
        a.ldx(DW, R8, FP, SCR)
        a.mov(R1, R9).add(R1, _O["socktype"])
        a.mov(R2, 2)
        a.mov(R3, R8).add(R3, off.socket_type)
        a.call(PROBE_READ_KERNEL)
        a.jne(R0, 0, "sockinfo_done")
        a.mov(R3, R8).add(R3, off.socket_sk)
        _kread(a, SCR, 8, R3, "sockinfo_done")  # struct sock *
        a.mov(R1, R9).add(R1, _O["protocol"])
        a.mov(R2, 2)
        a.ldx(DW, R3, FP, SCR).add(R3, off.sk_protocol)
        a.call(PROBE_READ_KERNEL)
        a.jne(R0, 0, "sockinfo_done")
        a.or_(R7, F_SOCKINFO)
        a.label("sockinfo_done")

    # hand-off with the TCP state program
    a.ldx(DW, R1, FP, S_SK)
    a.jeq(R1, 0, "submit")
    a.ld_map_fd(R1, maps.socks)
    a.mov(R2, FP).add(R2, S_SK)
    a.call(MAP_LOOKUP)
    a.jeq(R0, 0, "submit")
    a.or_(R7, F_TCP)
    a.mov(R1, F_EXITED)
    a.atomic(DW, R0, 0, R1, _OR | FETCH)  # r1 = previous flags
    a.jmp("jset", R1, F_DONE, "known")
    a.or_(R7, F_PENDING)
    a.ja("submit")
    a.label("known")
    a.or_(R7, R1)
    a.and_(R7, ~F_EXITED)
    a.ld_map_fd(R1, maps.socks)
    a.mov(R2, FP).add(R2, S_SK)
    a.call(MAP_DELETE)
    a.label("submit")
    a.stx(W, R9, _O["flags"], R7)
    _submit(a, maps, R9)
    a.label("out")
    return a.ret(0)


def skb_drop(tp: Tracepoint, maps: Maps, off: SockOffsets, skipped: list[int]) -> Asm:
    """See the module docstring. Stack: -8/-16 scratch, -64..-24 packet header (40 bytes)."""
    HDR = -64
    CNT = -72
    a = Asm()
    a.mov(R6, R1)
    a.ldx(W, R7, R6, tp.offset("reason", 4))
    for value in skipped:
        a.jeq(R7, value, "out")
    _reserve(a, maps, R9)
    a.jne(R9, 0, "fill")
    _count(a, maps.counters, CTR_RING_FULL, CNT)
    a.ja("out")
    a.label("fill")
    a.mov(R8, 0)  # r8 = flags
    a.st(W, R9, _O["kind"], KIND_DROP)
    a.stx(W, R9, _O["code"], R7)
    a.ldx(DW, R1, R6, tp.offset("skbaddr", 8)).stx(DW, R9, _O["key"], R1)
    a.call(KTIME_GET_NS)
    a.stx(DW, R9, _O["ts"], R0)
    for name in ("addr",):
        a.st(DW, R9, _O[name], 0).st(DW, R9, _O[name] + 8, 0)
    a.st(W, R9, _O["family"], 0)  # family + port
    a.st(H, R9, _O["protocol"], 0)
    a.st(DW, R9, _O["length"], 0)  # length + size
    a.ldx(H, R1, R6, tp.offset("protocol", 2)).stx(H, R9, _O["socktype"], R1)
    # attribute to the current task only outside interrupt context
    # common_flags (offset 2) is outside what the verifier lets a tracepoint program load directly
    a.st(DW, FP, -8, 0)
    a.mov(R3, R6).add(R3, 2)
    a.mov(R1, FP).add(R1, -8)
    a.mov(R2, 1)
    a.call(PROBE_READ_KERNEL)
    a.ldx(B, R1, FP, -8)
    a.jmp("jset", R1, TRACE_FLAG_HARDIRQ | TRACE_FLAG_SOFTIRQ | TRACE_FLAG_NMI, "irq")
    a.call(GET_CURRENT_PID_TGID)
    a.rsh(R0, 32).stx(W, R9, _O["pid"], R0)
    a.mov(R1, R9).add(R1, _O["comm"])
    a.mov(R2, 16)
    a.call(GET_CURRENT_COMM)
    a.ja("attributed")
    a.label("irq")
    a.or_(R8, F_IRQ)
    a.st(W, R9, _O["pid"], 0)
    a.st(DW, R9, _O["comm"], 0).st(DW, R9, _O["comm"] + 8, 0)
    a.label("attributed")

    if off.skb_len is not None:
        a.mov(R1, R9).add(R1, _O["length"])
        a.mov(R2, 4)
        a.ldx(DW, R3, R6, tp.offset("skbaddr", 8)).add(R3, off.skb_len)
        a.call(PROBE_READ_KERNEL)
        a.ldx(W, R1, R9, _O["length"]).stx(W, R9, _O["size"], R1)

    if off.packet:
        assert off.skb_head is not None and off.skb_network_header is not None
        a.ldx(H, R1, R9, _O["socktype"])
        a.jeq(R1, ETH_P_IP, "l3")
        a.jeq(R1, ETH_P_IPV6, "l3")
        a.ja("submit")
        a.label("l3")
        # r7 = skb->head + skb->network_header (the reason is already in the record)
        a.ldx(DW, R3, R6, tp.offset("skbaddr", 8)).add(R3, off.skb_head)
        _kread(a, -8, 8, R3, "submit")
        a.st(DW, FP, -16, 0)
        a.ldx(DW, R3, R6, tp.offset("skbaddr", 8)).add(R3, off.skb_network_header)
        _kread(a, -16, 2, R3, "submit")
        a.ldx(DW, R7, FP, -16)
        a.jeq(R7, 0xFFFF, "submit")  # network header not set
        a.ldx(DW, R1, FP, -8).add(R7, R1)
        a.zero_stack(HDR, 40)
        _kread(a, HDR, 40, R7, "submit_short")
        a.ldx(B, R1, FP, HDR).rsh(R1, 4)
        a.jeq(R1, 6, "ipv6")
        a.jne(R1, 4, "submit")
        # IPv4: protocol @9, tot_len @2 (be), daddr @16, header length (ihl*4) in byte 0
        a.ldx(B, R2, FP, HDR + 9).stx(H, R9, _O["protocol"], R2)
        a.ldx(H, R1, FP, HDR + 2).be16(R1).stx(W, R9, _O["size"], R1)
        a.ldx(W, R1, FP, HDR + 16).stx(W, R9, _O["addr"], R1)
        a.st(H, R9, _O["family"], AF_INET)
        a.or_(R8, F_L3)
        a.ldx(B, R1, FP, HDR).and_(R1, 0x0F).lsh(R1, 2)
        a.add(R7, R1)
        a.ja("ports")
        a.label("ipv6")
        # IPv6: payload_len @4 (be), nexthdr @6, daddr @24..40
        a.ldx(B, R2, FP, HDR + 6).stx(H, R9, _O["protocol"], R2)
        a.ldx(H, R1, FP, HDR + 4).be16(R1).add(R1, 40).stx(W, R9, _O["size"], R1)
        a.ldx(DW, R1, FP, HDR + 24).stx(DW, R9, _O["addr"], R1)
        a.ldx(DW, R1, FP, HDR + 32).stx(DW, R9, _O["addr"] + 8, R1)
        a.st(H, R9, _O["family"], AF_INET6)
        a.or_(R8, F_L3)
        a.add(R7, 40)
        a.label("ports")
        # r2 = L4 protocol, r7 = transport header: TCP and UDP have the destination port at +2
        a.jeq(R2, IPPROTO_TCP, "port")
        a.jne(R2, IPPROTO_UDP, "submit")
        a.label("port")
        a.st(DW, FP, -16, 0)
        _kread(a, -16, 4, R7, "submit")
        a.ldx(H, R1, FP, -14).stx(H, R9, _O["port"], R1)
        a.or_(R8, F_PORT)
        a.ja("submit")
        a.label("submit_short")  # header not readable in full
        a.ja("submit")
    a.label("submit")
    a.stx(W, R9, _O["flags"], R8)
    _submit(a, maps, R9)
    a.label("out")
    return a.ret(0)
