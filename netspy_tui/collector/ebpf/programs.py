"""The eBPF programs (hand-assembled), the maps they share and the records they write.

Every figure is counted once, in the kernel, when it is final; raw records are a detail stream
beside the counts. Programs (``BPF_PROG_TYPE_TRACEPOINT`` attached through perf events; those on the
busiest tracepoints — ``tcp_state``, ``skb_drop``, ``sock_bytes``, ``conn_destroy`` — get the tracepoint's arguments
instead where the kernel's BTF says what it passes: a perf event builds the trace record before every
run, which cost a state change, a freed packet or socket or a send() about as much as the program. They load
as BTF-typed programs (``tp_btf``: the socket's, the skb's and the task's fields are plain loads)
where the kernel allows, else as ``BPF_PROG_TYPE_RAW_TRACEPOINT`` (fields read with helper calls),
else as perf tracepoint programs. ``connect()`` is seen only through the syscall tracepoints, whose
being enabled sends every system call on the host through the kernel's slower syscall-tracing path:
~170 ns each here, the floor of what this collector costs a host's system calls.

Two designs follow ``connect()``; the collector picks one when it loads (:attr:`Maps.exit_only`):

- *at its exit alone* (x86_64 with kernel BTF, where a program that reads a task's saved registers with
  ``bpf_task_pt_regs`` loads): no program at the call's entry, whose tracepoint cost every connect ~60 ns
  beyond its program's own work; a call's arguments are read at its exit from the registers it was made
  with (``pt_regs``), ``tcp_state`` tells a SYN sent inside ``connect()`` by the system call number there
  (``orig_ax``), and a re-called connect by a mark (``connecting``) the previous call left on its socket;
- *at its entry and exit* everywhere else: ``connect_enter`` below saves the arguments and marks the call.

Where the two differ, what follows says so ("exit alone" / "entry and exit"):

``connect_enter`` (syscalls/sys_enter_connect; entry and exit only)
    Saves ``{uservaddr, addrlen, fd}`` in ``inflight[pid_tgid]`` (the sockaddr is read at exit,
    and only by a call that started no connection; a fault there is counted) and whether the fd's
    socket is already SS_CONNECTING (IF_CONNECTING: the call can only report an attempt an earlier
    call started; the kernel disconnects the socket before such a call returns), marked LIVE until the
    call returns (an LRU map: a thread's entry is rewritten in place by its next call, not inserted
    and deleted each time). A call the kernel restarts after a signal finds its earlier entry marked
    RESTARTING and leaves it alone.
``tcp_state`` (sock/inet_sock_set_state)
    CLOSE -> SYN_SENT inside ``connect()`` (exit alone: the system call the thread is in, ``pt_regs.orig_ax``;
    entry and exit: the thread's entry marked LIVE) starts a connection: the thread's ``inflight[pid_tgid]``
    entry (an LRU map: a thread's entry is kept between its calls and written in place) takes the socket,
    which ``connect_exit`` takes back when the call returns, and ``conns[skaddr]`` gets its count
    key — process (tgid and the thread-group leader's name), destination as the *socket* has it
    (IPv4-mapped IPv6 normalised to IPv4), protocol, the second it started — and the thread's
    name. A second such transition in the same call is an MPTCP subflow: it only fills in the
    destination (the MPTCP socket has none yet). One outside ``connect()`` (TCP Fast Open with
    sendmsg, io_uring) starts an *implicit* connection, counted and reported at once as in
    progress. SYN_SENT -> x resolves it: ESTABLISHED is ok; CLOSE carries the socket's ``sk_err``
    (111 refused, 110 timeout, 113 unreachable ...; 0 means the application closed it first:
    "aborted"), or rather the error ``conn_error`` saw the kernel close it with. If ``connect()``
    has already returned, the connect is moved from the in-progress count to its outcome's and an
    OUTCOME record follows its CONNECT record.
``conn_error`` (fentry on ``tcp_done_with_error``, Linux 6.10 and later, where the kernel allows it)
    A socket in ``conns`` being closed with an error: the error (the function's argument) goes into
    the value's ``reported``, which ``tcp_state`` prefers to ``sk_err``. The kernel writes ``sk_err``
    before SYN_SENT -> CLOSE, and a thread of the application that is awake meanwhile can take it
    (getsockopt(SO_ERROR) exchanges it with 0): the state change would see 0, "aborted", instead
    of the kernel's answer. Runs only on errors. Without it (a note says so) that race stays.
``conn_destroy`` (tcp/tcp_destroy_sock)
    A socket being freed whose connection is still in ``conns``, unresolved: its handshake ended
    without ``tcp_state`` running for it. The kernel does that when the state change comes in a softirq that
    interrupted ``tcp_state`` on the same CPU: it skips the nested run (a recursion miss, which it counts: the
    session reports its programs' skipped runs as ``kernel_skipped``).
    It is resolved here (counted ``state_unseen``): established if its SYN was acknowledged (``tcp_sock.bytes_acked``
    counts it; an abortive close, SO_LINGER 0, zeroes the counter first), else with the error the kernel closed it
    with (``conn_error``'s, or ``sk_err`` if the application has not taken it), else as unknown, instead
    of staying in progress for good with its ``conns`` value never freed. Every socket freed also loses its
    ``owners`` entry (whose retransmits these are), so the next socket at that address is not charged to it.
``connect_exit`` (syscalls/sys_exit_connect)
    A call that started a connection hands off with ``tcp_state`` through atomic fetch-ors on the ``conns[skaddr]``
    value's flags (this program sets ``CF_EXITED``, bit 32; ``tcp_state`` sets ``CF_RESOLVED``, bit 33): whichever
    comes second knows both the return code and the outcome. The connect is counted once, as soon as it returns (in
    progress, or with its outcome when that came first). A call that returns its handshake's end (0, or the error
    the socket was closed with) while the connection is still unresolved had its ``tcp_state`` run skipped by the
    kernel (a recursion miss: a softirq's state change interrupting ``tcp_state`` on the same CPU, hundreds a
    minute under a connect storm): the code it returns is the outcome (counted ``state_unseen``) — unless the socket is
    still connecting (a TCP Fast Open connect() the kernel deferred returns 0 before its SYN is sent). A connect() the
    routing refuses with EINVAL (a blackhole route) is one, "blackholed" (told from an EINVAL for its arguments by
    the address it passed). Calls that start nothing are not connects: EALREADY/EISCONN, a call on a socket an
    earlier call left connecting (such a call reports that attempt's result: 0, the attempt's error, or ECONNABORTED
    — by the time it fails the kernel has disconnected the socket, and nothing else tells it from a new attempt
    refused before its SYN; exit alone: the call that returned EINPROGRESS or EINTR puts the socket's inode number
    in ``connecting``, which its next call without a SYN takes; entry and exit: the socket was SS_CONNECTING at the
    call's entry), a TCP call that reports an earlier attempt's error (the socket has a peer port), restarted calls,
    a call returning 0 with no start seen and its socket still connecting (a TCP Fast Open ``connect()`` deferred:
    the kernel moves the socket to SYN_SENT before it defers, so this is one whose start run was skipped; counted
    ``deferred``); invalid calls (EBADF, EFAULT, EINVAL for its arguments ...) neither.
    Everything else that did not go through SYN_SENT (UDP setting its peer, a TCP connect refused before its SYN: no
    route, denied) is counted with its return code's outcome. Socket type and protocol come from the fd (BTF
    offsets), read only on that path. Exit alone: a TCP call that returned EINPROGRESS without a SYN sent it before
    ``tcp_state`` was attached, counted ``exit_without_enter`` (entry and exit: a call whose entry was not seen).
``skb_drop`` (skb/kfree_skb)
    Skips ordinary frees (:data:`SKIPPED_DROP_REASONS`), counts the drop by reason, protocol and
    destination (IPv4 fragments after the first have no port; IPv6 extension headers are walked),
    and charges it to the current task only when it happened on that task's own kernel stack: a
    perf-attached program's input does not carry the trace header's flags (its first 8 bytes hold
    the caller's registers' address instead), and the stack pointer tells task context from an
    interrupt or softirq stack; kernel threads (ksoftirqd) are not charged either.

``conns`` is in fact two maps: a direct-mapped array of :data:`CONN_SLOTS` slots by socket address, where
most connections are followed, and a hash map for those whose slot another socket holds (:func:`_conn_find`).

Counts go into one of two hash maps keyed by :data:`COUNT_KEY` (second, tgid, process name,
destination, protocol, outcome or drop reason): ``ctl.active`` says which. The reader flips it,
waits an RCU grace period (every program that could still write the other map has returned) and
drains the idle map, so no count is read twice or missed. ``connect_exit`` and ``skb_drop`` count
through a per-CPU slot holding the last key they counted on that CPU (:func:`_bump_cached`), moved into
the map when another key comes; the reader drains the idle map's slots with it. A count that does not fit (map full)
goes to the ``overflow`` array by kind and outcome, still exact in totals. Every path that loses
or skips something has a counter (:data:`COUNTERS`).
"""

from __future__ import annotations

import errno as _errno
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from netspy_tui.collector.base import DIR_ACCEPT, DIR_CLOSE, DIR_CONNECT, DIR_RETRANS, DIR_RX
from netspy_tui.collector.ebpf import btf as btf_mod
from netspy_tui.collector.ebpf.asm import ATOMIC_ADD as _ADD
from netspy_tui.collector.ebpf.asm import ATOMIC_AND as _AND
from netspy_tui.collector.ebpf.asm import ATOMIC_CMPXCHG as _CMPXCHG
from netspy_tui.collector.ebpf.asm import ATOMIC_OR as _OR
from netspy_tui.collector.ebpf.asm import DW, FETCH, FP, R0, R1, R2, R3, R4, R6, R7, R8, R9, Asm, B, H, Reg, W
from netspy_tui.collector.ebpf.tracefs import Tracepoint

log = logging.getLogger(__name__)

# helper function ids (include/uapi/linux/bpf.h, stable ABI)
MAP_LOOKUP, MAP_UPDATE, MAP_DELETE = 1, 2, 3
KTIME_GET_NS = 5
JIFFIES64 = 118
GET_CURRENT_PID_TGID = 14
GET_CURRENT_COMM = 16
GET_CURRENT_TASK = 35
GET_CURRENT_CGROUP_ID = 80
GET_CURRENT_TASK_BTF = 158
TASK_PT_REGS = 175
PROBE_READ_USER = 112
PROBE_READ_KERNEL = 113
RINGBUF_RESERVE, RINGBUF_SUBMIT, RINGBUF_QUERY = 131, 132, 134
RB_NO_WAKEUP, RB_FORCE_WAKEUP = 1, 2
RB_AVAIL_DATA = 0
BPF_ANY, BPF_NOEXIST = 0, 1

AF_INET, AF_INET6 = 2, 10
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
IPPROTO_TCP, IPPROTO_UDP, IPPROTO_MPTCP = 6, 17, 262
SOCK_STREAM = 1
NS = 1_000_000_000
PF_KTHREAD = 0x00200000  # task_struct.flags: a kernel thread
NR_CONNECT = 42  # x86_64's connect() (pt_regs.orig_ax holds the running system call's number)
THREAD_SIZE = 16384  # a task's kernel stack (x86_64 and arm64)

# record kinds (also the count key's kind)
KIND_CONNECT, KIND_OUTCOME, KIND_DROP = 1, 2, 3

# outcome codes (the count key's ``result`` for connects): 0 ok, an errno, or one of these
RESULT_PENDING = 0xFFFF  # connect() returned, the handshake has not finished
#: ``sock_common.skc_state`` values (include/net/tcp_states.h; the same for MPTCP sockets): still connecting
TCP_SYN_SENT, TCP_SYN_RECV = 2, 3
RESULT_ABORTED = 0xFFFE  # the application closed the socket before the handshake finished
RESULT_UNTRACKED = 0xFFFD  # the kernel map that follows connections was full: outcome unknown

# record flags
F_TCP = 1 << 0  # the socket went CLOSE -> SYN_SENT: TCP (or MPTCP) as the kernel says
F_RESOLVED = 1 << 1  # ``result`` is final
F_PENDING = 1 << 2  # an OUTCOME record follows with the final result
F_SOCKINFO = 1 << 3  # socket type and protocol read from the socket
F_IRQ = 1 << 4  # drop: fired in interrupt context, not attributed to a task
F_L3 = 1 << 5  # drop: protocol and destination address read from the packet
F_PORT = 1 << 6  # drop: destination port read from the packet
F_MAPPED = 1 << 7  # connect: an IPv4-mapped IPv6 destination, reported as IPv4 (``sockfam`` = 10)
F_IMPLICIT = 1 << 8  # connect: started outside connect() (TCP Fast Open sendmsg, io_uring)
F_RESTARTED = 1 << 9  # connect: the call was interrupted by a signal (the kernel restarts it)
# conns[] flags beyond the record's (kernel only)
CF_EXITED = 1 << 32  # connect() returned (or there is no connect() call: implicit)
CF_RESOLVED = 1 << 33  # the handshake ended; ``err`` holds the result
CF_RESTARTING = 1 << 34  # connect() was interrupted by a signal: the restarted call (if any) reports it
CF_CAPPED = 1 << 35  # over its CPU's raw-record cap when it started: no CONNECT or OUTCOME record (counted as shed)

# inflight[] flags
IF_RESTARTING = 2  # the call returned a restart code: the next call on this fd continues it
# (entry and exit only)
IF_INCALL = 4  # (with IF_RESTARTING) the continuing call is running
IF_LIVE = 8  # the thread is in a connect() call (its entry stays in the map between calls, not live)
IF_CONNECTING = 16  # the call's socket was SS_CONNECTING when it began: it reports an earlier attempt
SS_CONNECTING = 2  # struct socket's state (include/uapi/linux/net.h: socket_state)

#: return codes the kernel uses to restart a syscall (never seen by the application)
RESTART_CODES = range(-516, -511)
#: connect() errors of a call that could not be a connection attempt (not counted)
INVALID_CALL = tuple(
    -e for e in (_errno.EBADF, _errno.EFAULT, _errno.EINVAL, _errno.ENOTSOCK, _errno.EAFNOSUPPORT, _errno.EPROTOTYPE)
)

#: counters (array map) by index: each path that loses, skips or cannot follow something
COUNTERS = (
    "ring_full",  # a raw record did not fit in the ring (its counts were kept)
    "sockaddr_fault",  # the address of a call that started no connection could not be read: not counted
    "inflight_full",  # no room to follow a connect() call: not counted (the LRU map evicts instead)
    "conns_full",  # no room to follow a connection: counted with outcome "unknown"
    "counts_full",  # a count did not fit in the count map: counted in the overflow array
    "exit_without_enter",  # connect() returned without its entry (attached mid-call, or its entry evicted)
    "repeat_connects",  # EALREADY/EISCONN or a call reporting an earlier attempt: not a new connect
    "restarted",  # connect() calls interrupted by a signal and restarted by the kernel
    "deferred",  # TCP Fast Open connect() that sent nothing (counted when its data is sent)
    "traffic_full",  # send/read calls, retransmits and connections that did not fit in the traffic map (totals kept)
    "state_unseen",  # a handshake's end the kernel did not run tcp_state for: resolved by connect()'s return or the
    # socket's free
    "raw_capped",  # a raw record over its CPU's rate cap: not made, its counts kept (summed from ``budget``)
    "outcome_lost",  # a kept connect's OUTCOME record did not fit in the ring: its raw event stays in progress
    "finals_full",  # a closing TCP connection's own counters not kept for the drain (finals map full): its bytes
    # since the last pass over the open connections are not counted
)
CTR = {name: i for i, name in enumerate(COUNTERS)}
#: counters that are losses (the others count calls that are not new connects: nothing is lost)
LOSS_COUNTERS = (
    "ring_full",
    "sockaddr_fault",
    "inflight_full",
    "conns_full",
    "counts_full",
    "exit_without_enter",
    "traffic_full",
    "state_unseen",
    "raw_capped",
    "outcome_lost",
    "finals_full",
)
#: loss counters reported under another cause: raw records the rate cap did not make are raw events shed
#: under load, as the store's writer sheds them (counts exact either way)
REPORTED_AS = {"raw_capped": "shed"}
N_COUNTERS = 16
#: counters[] index of how many connections the ``conns`` hash map holds, at least (a gauge the programs keep
#: for themselves: while it is 0, a socket whose slot is not its own is not followed, without a hash lookup)
CONNS_HASHED = N_COUNTERS - 1
#: overflow array: 256 slots per kind (connect, drop), by result (see :func:`overflow_slot`)
OVERFLOW_SLOTS = 512

#: drop reasons not reported: ordinary frees, not packets lost. Names as the kernel prints them;
#: names the running kernel does not know are ignored.
SKIPPED_DROP_REASONS = (
    "NOT_SPECIFIED",  # generic kfree_skb() of paths not converted to reasons: mostly ordinary frees
    "SOCKET_CLOSE",  # unread data freed when its socket is closed
    "UNIX_DISCONNECT",  # AF_UNIX peer went away: local IPC, not network
    "UNIX_SKIP_OOB",
    "QUEUE_PURGE",  # queues flushed on teardown
)

COUNT_KEY = np.dtype(
    {
        "names": ["second", "tgid", "comm", "addr", "port", "protocol", "result", "family", "kind"],
        "formats": ["<u4", "<u4", "S16", ("u1", (16,)), "<u2", "<u2", "<u2", "u1", "u1"],
        "offsets": [0, 4, 8, 24, 40, 42, 44, 46, 47],
        "itemsize": 48,
    }
)  # fmt: skip
"""What a count is kept by. ``second``: wall-clock second the event started. ``comm``: process
(thread-group leader) name, empty for drops in interrupt context. ``addr``: IPv4 in the first 4
bytes or IPv6, network order. ``port``: host order. ``result``: connect outcome code (0 ok, errno,
``RESULT_*``) or drop reason."""
COUNT_VALUE = np.dtype([("n", "<i8"), ("first", "<u8"), ("last", "<u8")])
"""``n`` may go down: a connect counted in progress moves to its outcome's key when it resolves.
``first``/``last``: wall-clock ns of the first and last event counted (increments only)."""
COUNT_SLOT = np.dtype([("key", COUNT_KEY), ("value", COUNT_VALUE)])
"""One CPU's count cache slot (see :func:`_bump_cached`): the last key a program counted on that CPU and its
count so far, not yet in the count map."""
#: count cache slots per ``ctl.active``: connects (``connect_exit``) and drops (``skb_drop``)
CACHE_CONNECTS, CACHE_DROPS = 0, 1
CACHE_SLOTS = 2
_CS_N, _CS_FIRST, _CS_LAST = 48, 56, 64

RECORD = np.dtype(
    {
        "names": [
            "kind", "flags", "ts", "wall", "key", "pid", "tid", "code", "result", "comm", "thread", "addr",
            "family", "port", "socktype", "protocol", "length", "size", "sockfam", "cgroup_hi", "cgroup_lo",
        ],
        "formats": ["<u4", "<u4", "<u8", "<u8", "<u8", "<u4", "<u4", "<i4", "<u4", "S16", "S16", ("u1", (16,)),
                    "<u2", "<u2", "<u2", "<u2", "<u4", "<u4", "<u2", "<u2", "<u4"],
        "offsets": [0, 4, 8, 16, 24, 32, 36, 40, 44, 48, 64, 80, 96, 98, 100, 102, 104, 108, 112, 114, 116],
        "itemsize": 120,
    }
)  # fmt: skip
"""One ring record. ``ts``: when it started (ns since boot); ``wall``: the same instant as
wall-clock ns (computed in the kernel with the offset the reader keeps in ``ctl``, so records and
counts agree on the second). ``key``: socket address of a TCP connect (matches its OUTCOME).
``code``: connect() return code or drop reason; ``result``: outcome code. ``socktype``: socket
type for connects, ethertype for drops. ``length``: skb->len, ``size``: IP packet size (drops);
``length`` of a TCP connect whose handshake has ended (F_RESOLVED, and every OUTCOME record): its
latency in microseconds, CLOSE -> SYN_SENT to the end of the handshake (0: not measured).
``sockfam``: the socket's own family when the destination was IPv4-mapped. ``cgroup_hi``/``cgroup_lo``:
the process's cgroup v2 id (``bpf_get_current_cgroup_id``: its directory's inode number), bits 32-47
and 0-31 (see :func:`record_cgroups`; 0: unknown, a drop not charged to a task, or an id beyond 48
bits) — in the record's last 6 bytes, so stored records keep their size."""
_O = {name: RECORD.fields[name][1] for name in RECORD.names}
CGROUP_BITS = 48


def record_cgroups(records: np.ndarray) -> np.ndarray:
    """The cgroup v2 id of each record (u64; 0 where unknown)."""
    return records["cgroup_lo"].astype(np.uint64) | (records["cgroup_hi"].astype(np.uint64) << np.uint64(32))


RECORD_SIZE = RECORD.itemsize
#: a record as one opaque value
RECORD_BYTES = np.dtype((np.void, RECORD_SIZE))


def pick(records: np.ndarray, which: np.ndarray) -> np.ndarray:
    """``records[which]`` (a mask or indices), each record copied as one value: numpy copies structured
    records field by field, ~20 times slower for these 21 fields."""
    return np.ascontiguousarray(records).view(RECORD_BYTES)[which].view(RECORD)


_K = {name: COUNT_KEY.fields[name][1] for name in COUNT_KEY.names}
KEY_SIZE, VALUE_SIZE = COUNT_KEY.itemsize, COUNT_VALUE.itemsize

# inflight[pid_tgid] value (bytes 8..15 unused). Exit alone (bytes 24..27 unused): the socket a running connect()
# call sent a SYN on (tcp_state; 0 once the call returned), and after a signal interrupted that call,
# IF_RESTARTING, the call's fd and the thread's saved registers (``regs``, their address: whether the thread is
# in connect() again, see _resolve). Entry and exit: the call's arguments (``uaddr`` where ``regs`` is, addrlen,
# fd), its socket once tcp_state saw it start, and IF_* flags (IF_LIVE while the call runs).
INFLIGHT = np.dtype(
    {
        "names": ["regs", "uaddr", "sk", "addrlen", "fd", "flags"],
        "formats": ["<u8", "<u8", "<u8", "<u4", "<i4", "<u4"],
        "offsets": [0, 0, 16, 24, 28, 32],
        "itemsize": 40,
    }
)
_I = {name: INFLIGHT.fields[name][1] for name in INFLIGHT.names}

# conns[skaddr] value: the count key first, so it can be copied out in one go
CONN = np.dtype(
    {
        "names": ["key", "flags", "ts", "wall", "tid", "code", "thread", "err", "sockfam", "reported", "done",
                  "cgroup"],
        "formats": [COUNT_KEY, "<u8", "<u8", "<u8", "<u4", "<i4", "S16", "<u4", "<u2", "<u2", "<u8", "<u8"],
        "offsets": [0, 48, 56, 64, 72, 76, 80, 96, 100, 102, 104, 112],
        "itemsize": 120,
    }
)  # fmt: skip
"""``ts``: when the socket went CLOSE -> SYN_SENT (ns since boot); ``done``: when the handshake
ended (0 until then): the connect's latency is ``done - ts``. ``cgroup``: the connecting process's
cgroup v2 id. ``reported``: the error the kernel is closing the socket with, set by ``conn_error``
just before SYN_SENT -> CLOSE (0: none seen)."""
_C = {name: CONN.fields[name][1] for name in CONN.names}

CONN_SLOT = np.dtype([("sk", "<u8"), ("conn", CONN)])
"""A ``conn_slots`` entry: the socket (0: free) and its conns value (see :func:`_conn_find`)."""
CONN_SLOTS = 4096  # a power of two, at most 2**13 (:func:`conn_slot_index` reads no bit above 31)
_SLOT_CONN = CONN_SLOT.fields["conn"][1]

# ctl[0]: which count map is live, the monotonic -> wall offset, what raw records to write
CTL = np.dtype([("active", "<u8"), ("offset", "<i8"), ("raw", "<u8")])
RAW_CONNECTS, RAW_DROPS = 1, 2
#: a program's copy of the raw-record flags: ``flag << RAW_CAPPED_SHIFT`` once its event is over the cap
RAW_CAPPED_SHIFT = 4


def overflow_slot(kind: int, result: int) -> int:
    """The overflow array index of a count that did not fit (the programs compute the same)."""
    if result >= RESULT_UNTRACKED:
        r = 255 - (0xFFFF - result)
    elif result > 252:
        r = 252
    else:
        r = result
    return (256 if kind == KIND_DROP else 0) + r


def slot_result(slot: int) -> tuple[int, int]:
    """(kind, result) of an overflow slot (252 stands for any other large result)."""
    kind, r = (KIND_DROP, slot - 256) if slot >= 256 else (KIND_CONNECT, slot)
    return kind, (0xFFFF - (255 - r) if r >= 253 else r)


@dataclass
class SockOffsets:
    """Kernel struct offsets from BTF; any of them None disables what needs it."""

    task_files: int | None = None
    files_fdt: int | None = None
    fdt_fd: int | None = None
    fdt_max_fds: int | None = None
    file_private: int | None = None
    socket_type: int | None = None
    socket_state: int | None = None
    socket_sk: int | None = None
    sk_protocol: int | None = None
    sk_dport: int | None = None
    sk_family: int | None = None
    sk_err: int | None = None
    sk_state: int | None = None
    task_leader: int | None = None
    task_comm: int | None = None
    task_stack: int | None = None
    task_flags: int | None = None
    regs_sp: int | None = None
    skb_len: int | None = None
    skb_protocol: int | None = None
    skb_head: int | None = None
    skb_network_header: int | None = None
    sk_daddr: int | None = None
    sk_rcv_saddr: int | None = None
    sk_num: int | None = None
    sk_v6_daddr: int | None = None
    sk_v6_rcv_saddr: int | None = None
    sk_net: int | None = None
    """``sock_common.skc_net``: the socket's network namespace (``struct net *``; None without namespaces)."""
    net_inum: int | None = None
    """``net.ns.inum``: the namespace's inode number, as ``/proc/PID/ns/net`` has it."""
    skb_cb: int | None = None
    tcp_gso_segs: int | None = None
    inet_sport: int | None = None
    tcp_bytes_acked: int | None = None
    tcp_bytes_received: int | None = None
    tcp_write_seq: int | None = None
    tcp_snd_una: int | None = None
    sk_flags: int | None = None
    regs_di: int | None = None
    regs_si: int | None = None
    regs_dx: int | None = None
    regs_orig_ax: int | None = None
    """x86_64's ``pt_regs``: a system call's first three arguments and its number, as the task entered it."""
    sk_socket: int | None = None
    socket_inode: int | None = None
    """``socket_alloc.vfs_inode``: the socket's inode (right after its ``struct socket``)."""
    inode_ino: int | None = None
    missing: list[str] = field(default_factory=list)

    @property
    def syscall_args(self) -> bool:
        """Enough to read connect()'s arguments and number from the task's saved registers (x86_64)."""
        return None not in (self.regs_di, self.regs_si, self.regs_dx, self.regs_orig_ax)

    @property
    def socket_ino(self) -> bool:
        """Enough to read a socket's inode number from its ``struct sock`` or its ``struct socket``."""
        return None not in (self.sk_socket, self.socket_inode, self.inode_ino)

    @property
    def tcp_counters(self) -> bool:
        """Enough to read a TCP socket's own byte counters (``struct tcp_sock``) when it closes."""
        return None not in (self.tcp_bytes_acked, self.tcp_bytes_received, self.tcp_write_seq, self.tcp_snd_una,
                            self.sk_flags)  # fmt: skip

    @property
    def sockinfo(self) -> bool:
        return None not in (
            self.task_files, self.files_fdt, self.fdt_fd, self.fdt_max_fds, self.file_private,
            self.socket_type, self.socket_sk, self.sk_protocol, self.sk_dport,
        )  # fmt: skip

    @property
    def leader(self) -> bool:
        return self.task_leader is not None and self.task_comm is not None

    @property
    def stack(self) -> bool:
        """Enough to tell a task's own kernel stack from an interrupt stack."""
        return None not in (self.regs_sp, self.task_stack, self.task_flags)

    @property
    def packet(self) -> bool:
        return None not in (self.skb_head, self.skb_network_header)

    @property
    def addresses(self) -> bool:
        """Enough to read a socket's local and remote addresses and ports (IPv4 and IPv6)."""
        return None not in (
            self.sk_daddr,
            self.sk_rcv_saddr,
            self.sk_num,
            self.sk_dport,
            self.sk_v6_daddr,
            self.sk_v6_rcv_saddr,
        )

    @classmethod
    def from_btf(cls) -> SockOffsets:
        want = {
            "task_files": ("task_struct", "files", 8),
            "files_fdt": ("files_struct", "fdt", 8),
            "fdt_fd": ("fdtable", "fd", 8),
            "fdt_max_fds": ("fdtable", "max_fds", 4),
            "file_private": ("file", "private_data", 8),
            "socket_type": ("socket", "type", 2),
            "socket_state": ("socket", "state", 4),
            "socket_sk": ("socket", "sk", 8),
            "sk_protocol": ("sock", "sk_protocol", 2),
            "sk_dport": ("sock_common", "skc_dport", 2),
            "sk_family": ("sock_common", "skc_family", 2),
            "sk_err": ("sock", "sk_err", 4),
            "sk_state": ("sock_common", "skc_state", 1),
            "task_leader": ("task_struct", "group_leader", 8),
            "task_comm": ("task_struct", "comm", 16),
            "task_stack": ("task_struct", "stack", 8),
            "task_flags": ("task_struct", "flags", 4),
            "regs_sp": ("pt_regs", "sp", 8),
            "skb_len": ("sk_buff", "len", 4),
            "skb_protocol": ("sk_buff", "protocol", 2),
            "skb_head": ("sk_buff", "head", 8),
            "skb_network_header": ("sk_buff", "network_header", 2),
            "sk_daddr": ("sock_common", "skc_daddr", 4),
            "sk_rcv_saddr": ("sock_common", "skc_rcv_saddr", 4),
            "sk_num": ("sock_common", "skc_num", 2),
            "sk_v6_daddr": ("sock_common", "skc_v6_daddr", 16),
            "sk_v6_rcv_saddr": ("sock_common", "skc_v6_rcv_saddr", 16),
            "sk_net": ("sock_common", "skc_net", 8),  # (possible_net_t: the pointer, or nothing without netns)
            "skb_cb": ("sk_buff", "cb", 48),
            "tcp_gso_segs": ("tcp_skb_cb", "tcp_gso_segs", 2),
            "inet_sport": ("inet_sock", "inet_sport", 2),
            "tcp_bytes_acked": ("tcp_sock", "bytes_acked", 8),
            "tcp_bytes_received": ("tcp_sock", "bytes_received", 8),
            "tcp_write_seq": ("tcp_sock", "write_seq", 4),
            "tcp_snd_una": ("tcp_sock", "snd_una", 4),
            "sk_flags": ("sock_common", "skc_flags", 8),  # (sock.sk_flags)
            "regs_di": ("pt_regs", "di", 8),
            "regs_si": ("pt_regs", "si", 8),
            "regs_dx": ("pt_regs", "dx", 8),
            "regs_orig_ax": ("pt_regs", "orig_ax", 8),
            "sk_socket": ("sock", "sk_socket", 8),
            "inode_ino": ("inode", "i_ino", 8),
        }
        out = cls()
        try:
            kbtf = btf_mod.vmlinux()
        except (OSError, btf_mod.BtfError) as exc:
            log.warning("kernel BTF unavailable (%s): socket details and packet sizes will be unknown", exc)
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
        try:  # the socket's inode follows its struct socket
            vfs, sock = kbtf.member("socket_alloc", "vfs_inode"), kbtf.member("socket_alloc", "socket")
        except btf_mod.BtfError as exc:
            out.missing.append("socket_inode")
            log.warning("BTF: %s", exc)
        else:
            out.socket_inode = vfs.offset - sock.offset
        try:  # net.ns.inum: two members deep
            ns, inum = kbtf.member("net", "ns"), kbtf.member("ns_common", "inum")
        except btf_mod.BtfError as exc:
            out.missing.append("net_inum")
            log.warning("BTF: %s", exc)
        else:
            if inum.size == 4:
                out.net_inum = ns.offset + inum.offset
            else:
                out.missing.append("net_inum")
        return out

    @property
    def netns(self) -> bool:
        """Enough to read a socket's network namespace (its inode number)."""
        return self.sk_net is not None and self.net_inum is not None


@dataclass
class Maps:
    ring: int
    ring_bytes: int
    inflight: int
    conns: int
    conn_slots: int
    """Array of :data:`CONN_SLOTS` :data:`CONN_SLOT`: most connections' conns values (see :func:`_conn_find`)."""
    counts: tuple[int, int]
    overflow: int
    counters: int
    ctl: int
    connecting: int | None = None
    """LRU: socket inode number -> the same: sockets a connect() call left connecting (EINPROGRESS, EINTR), whose
    next connect() call only reports that attempt (see :func:`connect_exit`). Made only where ``connect()`` is
    followed at its exit alone (:attr:`exit_only`)."""
    traffic: tuple[int, int] | None = None
    """Double-buffered like ``counts`` (the same ``ctl.active`` flip): bytes per (socket, process)."""
    traffic_overflow: int | None = None
    owners: int | None = None
    """LRU: TCP socket -> the process that opened it (connected, or listened) or last moved bytes on it
    (retransmits are charged to it); deleted when the socket is freed (``conn_destroy``)."""
    listeners: int | None = None
    """LRU: :data:`LISTENER_KEY` (network namespace, local address, port) -> :data:`LISTENER_VALUE`, the process
    that last started listening there (accepted connections are charged to it)."""
    opened: int | None = None
    """LRU: socket -> when its connection opened and whose it is (its lifetime when it closes)."""
    finals: int | None = None
    """Hash: :data:`FINAL_KEY` -> :data:`FINAL`, a TCP connection's own byte counters as it closed (drained)."""
    byte_slots: int | None = None
    """Per-CPU array of :data:`BYTE_SLOTS` :data:`BYTE_SLOT` (:func:`sock_bytes`), read with ``traffic``."""
    cache: int | None = None
    """Per-CPU array of :data:`COUNT_SLOT`, :data:`CACHE_SLOTS` per ``ctl.active`` (see :func:`_bump_cached`)."""
    tick: int | None = None
    """Per-CPU array of one :data:`TICK`: the second a CPU last read the clock in, valid while the kernel's
    tick count (jiffies) has not moved (see :func:`_tick_read`)."""
    budget: int | None = None
    """Per-CPU array of one :data:`BUDGET` (see :func:`_within_budget`); None: raw records are not capped."""
    host_budget: int | None = None
    """Array of one :data:`HOST_BUDGET` word shared by the CPUs (with ``budget``)."""
    budget_cap: int = 0
    """Raw records the host makes per budget window (2**:data:`BUDGET_SHIFT` ns) before the rest are capped
    (at most :data:`BUDGET_CAP_MAX`)."""

    @property
    def exit_only(self) -> bool:
        """``connect()`` followed at its exit alone (no ``connect_enter``; x86_64 registers read with
        ``bpf_task_pt_regs``), as where the ``connecting`` map was made; else at its entry and exit."""
        return self.connecting is not None


# --- snippets ---------------------------------------------------------------------------------
#
# Conventions: r6 holds the program's context; snippets clobber r0-r5 (helper calls) and say which
# stack slots they use. Labels are made unique with the instruction count.


def _uniq(a: Asm, stem: str) -> str:
    return f"_{stem}{len(a)}"


def _count(a: Asm, counters_fd: int, name: str, slot: int) -> None:
    """counters[name] += 1 (atomically). Uses the stack word at FP+slot."""
    skip = _uniq(a, "cnt")
    a.st(W, FP, slot, CTR[name])
    a.ld_map_fd(R1, counters_fd)
    a.mov(R2, FP).add(R2, slot)
    a.call(MAP_LOOKUP)
    a.jeq(R0, 0, skip)
    a.mov(R1, 1)
    a.atomic(DW, R0, 0, R1, _ADD)
    a.label(skip)


def _update_from_stack(a: Asm, map_fd: int, key: int, value: int) -> None:
    """``map_fd[key] = value`` (both on the stack, at those frame offsets; any flag): the helper's result in r0."""
    a.ld_map_fd(R1, map_fd)
    a.mov(R2, FP).add(R2, key)
    a.mov(R3, FP).add(R3, value)
    a.mov(R4, BPF_ANY)
    a.call(MAP_UPDATE)


def _element0(a: Asm, map_fd: int, slot: int, fail: str) -> None:
    """r0 = &map[0] of an array (this CPU's, for a per-CPU one); jumps to ``fail`` if the lookup fails, which
    it cannot for an array. Uses the stack word at FP+slot."""
    a.st(W, FP, slot, 0)
    a.ld_map_fd(R1, map_fd)
    a.mov(R2, FP).add(R2, slot)
    a.call(MAP_LOOKUP)
    a.jeq(R0, 0, fail)


def _ctl(a: Asm, maps: Maps, slot: int, fail: str) -> None:
    """r0 = &ctl[0] (jumps to ``fail`` if the lookup fails, which it cannot for an array)."""
    _element0(a, maps.ctl, slot, fail)


def _clock(a: Asm, maps: Maps, slot: int, wall: int, active: int, raw: int, fail: str, mono: int | None = None,
           record: int = 0, reg: Reg = R9, second: int | None = None) -> None:  # fmt: skip
    """Stack: FP+wall = wall-clock ns now, FP+active = live count map, FP+raw = raw-record flags;
    FP+mono (if given) = the same instant in ns since boot (one clock read serves both); FP+second (if given,
    4 bytes) = its second (:func:`_second`), from the tick cache when the instant is (no division: one of ~40
    cycles on every run), else divided here.

    ``record``: the raw-record flag (``RAW_CONNECTS``, ``RAW_DROPS``) of what the instant is for. When
    such records are not written, the instant only names a count's second and its first/last: it comes from
    this CPU's tick cache (:func:`_tick_read`, clobbering ``reg``) instead of a clock read, and FP+mono is 0
    (latencies are measured for records only). When they are and raw records are capped, the record is
    counted in its CPU's budget here (:func:`_within_budget`, with this clock read; an event on a CPU that
    found this window's budget spent already is capped from the tick cache, :func:`_capped_early`); one over
    the cap clears ``record`` in FP+raw (setting ``record << RAW_CAPPED_SHIFT``) and FP+mono, so the event
    costs what a counted-only one does from here on."""
    precise, done, over = _uniq(a, "clk_precise"), _uniq(a, "clk_done"), _uniq(a, "clk_over")
    _live(a, maps, slot, active, raw, fail)
    a.ldx(DW, R1, R0, 8).stx(DW, FP, wall, R1)
    if record and maps.tick is not None:
        raw_on = _uniq(a, "clk_raw")
        a.ldx(DW, R1, FP, raw)
        a.jmp("jset", R1, record, raw_on)
        _tick_read(a, maps, slot, wall, slot if second is None else second, fail, reg)
        if mono is not None:
            a.st(DW, FP, mono, 0)
        a.ja(done)
        a.label(raw_on)
        if maps.budget is not None:
            assert mono is not None
            _capped_early(a, maps, slot, wall, active, raw, mono, fail, over, reg, second)
    a.label(precise)
    a.call(KTIME_GET_NS)
    if mono is not None:
        a.stx(DW, FP, mono, R0)
    a.ldx(DW, R1, FP, wall).add(R1, R0).stx(DW, FP, wall, R1)
    if second is not None:
        a.alu64("div", R1, NS).stx(W, FP, second, R1)
    if record and maps.budget is not None:
        assert mono is not None
        a.ldx(DW, R1, FP, raw)
        a.and_(R1, record)
        a.jeq(R1, 0, done)
        _within_budget(a, maps, slot, mono, wall, over)
        a.ja(done)
        a.label(over)
        a.ldx(DW, R1, FP, raw).and_(R1, ~record).or_(R1, record << RAW_CAPPED_SHIFT).stx(DW, FP, raw, R1)
        a.st(DW, FP, mono, 0)
    a.label(done)


#: per-CPU clock cache: the tick count (jiffies; 0: not valid), the wall-clock second and the wall-clock ns of
#: the clock read it comes from; and the tick count when this CPU last woke the reader (see :func:`_submit`)
TICK = np.dtype([("jiffies", "<u8"), ("second", "<u8"), ("wall", "<u8"), ("woke", "<u8")])
#: a clock read that close to the next second is not cached: a tick (10 ms at HZ=100, 4 ms at 250) and the
#: kernel's late tick count updates — on a VM whose host holds back the vCPU that counts ticks, tens of ms: at
#: 25 ms, datagrams sent just after a second began were stored in the second before in a CI run of the boundary
#: test (tests/collector/test_traffic.py) on a loaded host. Costs a clock read in the last tenth of each second.
TICK_MARGIN_NS = 100_000_000
#: a CPU's view of the host's raw-record budget: the window (monotonic ns >> BUDGET_SHIFT) plus one in which
#: this CPU found the host's budget spent (0: none), and the records this CPU capped so far (the
#: ``raw_capped`` counter), and when that window ends as wall-clock ns (0: none yet; see :func:`_capped_early`).
#: Per CPU, so that once the budget is spent a storm's records are capped without bouncing a shared cache line
#: between the CPUs.
BUDGET = np.dtype([("full", "<u8"), ("capped", "<u8"), ("until", "<u8")])
#: the host's raw-record budget, one word so that one atomic add counts a record and reads its window: the
#: window in the high 32 bits, the records made in it in the low 32
HOST_BUDGET = np.dtype("<u8")
#: budget windows of 2**30 ns (1.07 s): a shift, not a division
BUDGET_SHIFT = 30
#: the largest cap a window can have (a jump's immediate is a signed 32-bit number)
BUDGET_CAP_MAX = (1 << 31) - 1


def _tick_slot(a: Asm, maps: Maps, slot: int, missing: str) -> None:
    """R0 = this CPU's :data:`TICK` slot (jumps to ``missing`` if the lookup fails, which an array's cannot).
    Uses the stack word at FP+slot."""
    assert maps.tick is not None
    _element0(a, maps.tick, slot, missing)


def _tick_read(a: Asm, maps: Maps, slot: int, wall: int, second: int, fail: str, reg: Reg = R9) -> None:
    """Once FP+wall holds the clock offset (``ctl.offset``): FP+wall = wall-clock ns, FP+second (4 bytes) = its
    second, without a clock read on most runs (the clock costs a run about as much as a hash lookup and
    two atomic adds). Clobbers ``reg`` and the stack word at FP+slot (``second`` may be ``slot``).

    A CPU that reads the clock keeps the second and the wall time in its ``tick`` slot with the kernel's tick
    count (jiffies, one load) read before the clock. While the tick count has not moved, less than a tick
    and the kernel's delay in counting it has passed since: a later run on that CPU takes the kept second
    and wall time (``last`` then lags by under a tick). A read within :data:`TICK_MARGIN_NS` of the next
    second is not kept, so a run never takes the second before it. The slot is invalidated while it is
    written (a run preempted mid-write leaves values of one tick: the same second)."""
    slow, keep, done = _uniq(a, "tick_slow"), _uniq(a, "tick_keep"), _uniq(a, "tick_done")
    _tick_slot(a, maps, slot, fail)
    a.mov(reg, R0)  # this CPU's slot
    a.call(JIFFIES64)
    a.ldx(DW, R1, reg, 0)
    a.jne(R0, R1, slow)
    a.ldx(DW, R1, reg, 8).stx(W, FP, second, R1)
    a.ldx(DW, R1, reg, 16).stx(DW, FP, wall, R1)
    a.ja(done)
    a.label(slow)
    a.stx(DW, FP, slot, R0)  # the tick count, read before the clock
    a.call(KTIME_GET_NS)
    a.ldx(DW, R1, FP, wall).add(R1, R0).stx(DW, FP, wall, R1)
    a.mov(R2, R1).alu64("div", R2, NS)
    a.st(DW, reg, 0, 0)
    a.mov(R3, R2).alu64("mul", R3, NS)
    a.mov(R4, R1).sub(R4, R3)  # ns into the second
    a.jmp("jle", R4, NS - TICK_MARGIN_NS, keep)
    a.stx(W, FP, second, R2)
    a.ja(done)
    a.label(keep)
    a.stx(DW, reg, 8, R2).stx(DW, reg, 16, R1)
    a.ldx(DW, R1, FP, slot).stx(DW, reg, 0, R1)
    a.stx(W, FP, second, R2)
    a.label(done)


def _live(a: Asm, maps: Maps, slot: int, active: int, raw: int, fail: str) -> None:
    """Stack: FP+active = live count map, FP+raw = raw-record flags (r0 = &ctl[0] after)."""
    _ctl(a, maps, slot, fail)
    a.ldx(DW, R1, R0, 0).stx(DW, FP, active, R1)
    a.ldx(DW, R1, R0, 16).stx(DW, FP, raw, R1)


def _second(a: Asm, wall: int, key: int) -> None:
    """key.second = wall // 1e9."""
    a.ldx(DW, R1, FP, wall)
    a.alu64("div", R1, NS)
    a.stx(W, FP, key + _K["second"], R1)


def _bump(a: Asm, maps: Maps, key: int, delta: int, wall: int, value: int, active: int) -> None:
    """counts[active][*(FP+key)] += delta, inserting the key if new; a full map goes to overflow.

    Uses 24 bytes of stack at FP+value for a new entry and FP+value-8 for the overflow index."""
    done = _uniq(a, "bump_done")
    second_map = _uniq(a, "bump_map1")
    a.ldx(DW, R1, FP, active)
    a.jne(R1, 0, second_map)
    _bump_into(a, maps.counts[0], maps, key, delta, wall, value, done)
    a.label(second_map)
    _bump_into(a, maps.counts[1], maps, key, delta, wall, value, done)
    a.label(done)


def _bump_into(a: Asm, map_fd: int, maps: Maps, key: int, delta: int, wall: int, value: int, done: str,
               spill: int | None = None) -> None:  # fmt: skip
    """map[*(FP+key)] += delta (last: FP+wall); or (``spill``) map[slot.key] += the slot's count, first and last,
    the count cache slot's address at FP+spill. Ends by jumping to ``done``."""
    add, relook, over = _uniq(a, "bump_add"), _uniq(a, "bump_relook"), _uniq(a, "bump_over")

    def load_key() -> None:
        a.ld_map_fd(R1, map_fd)
        if spill is None:
            a.mov(R2, FP).add(R2, key)
        else:
            a.ldx(DW, R2, FP, spill)  # (the slot's key, in place)

    load_key()
    a.call(MAP_LOOKUP)
    a.jne(R0, 0, add)
    if spill is None:
        a.st(DW, FP, value, delta)
        a.ldx(DW, R1, FP, wall).stx(DW, FP, value + 8, R1).stx(DW, FP, value + 16, R1)
    load_key()
    if spill is None:
        a.mov(R3, FP).add(R3, value)
    else:
        a.mov(R3, R2).add(R3, _CS_N)  # (the slot's count, first and last: a COUNT_VALUE)
    a.mov(R4, BPF_NOEXIST)
    a.call(MAP_UPDATE)
    a.jeq(R0, 0, done)
    a.jeq(R0, -_errno.EEXIST, relook)  # another CPU inserted it meanwhile
    a.ja(over)
    a.label(relook)
    load_key()
    a.call(MAP_LOOKUP)
    a.jeq(R0, 0, over)
    a.label(add)
    if spill is None:
        a.mov(R1, delta)
        a.atomic(DW, R0, 0, R1, _ADD)
        a.ldx(DW, R1, FP, wall).stx(DW, R0, 16, R1)
    else:
        # a slot's counts can be older than what other CPUs' slots or runs put in the entry meanwhile: its first
        # and last widen the entry's, never narrow them (first after last, ~1 ms, was seen under load)
        kept_first, kept_last = _uniq(a, "bump_kept_first"), _uniq(a, "bump_kept_last")
        a.ldx(DW, R2, FP, spill)
        a.ldx(DW, R1, R2, _CS_N)
        a.atomic(DW, R0, 0, R1, _ADD)
        a.ldx(DW, R1, R2, _CS_FIRST).ldx(DW, R3, R0, 8)
        a.jmp("jge", R1, R3, kept_first)
        a.stx(DW, R0, 8, R1)
        a.label(kept_first)
        a.ldx(DW, R1, R2, _CS_LAST).ldx(DW, R3, R0, 16)
        a.jmp("jle", R1, R3, kept_last)
        a.stx(DW, R0, 16, R1)
        a.label(kept_last)
    a.ja(done)
    a.label(over)
    _overflow(a, maps, key, None if spill is not None else delta, value - 8, spill)
    _count(a, maps.counters, "counts_full", value - 8)
    a.ja(done)


def _bump_cached(a: Asm, maps: Maps, key: int, wall: int, value: int, active: int, spill: int, cache: int) -> None:
    """:func:`_bump` by one through this CPU's count cache slot ``cache`` (of the live map's): a storm counts
    the same key again and again, and one compare and add in a per-CPU slot costs a run a fraction of a hash
    lookup and of an atomic add on a value every CPU counting that key writes to. A key other than the
    slot's moves the slot's count into the count map and takes the slot; the reader adds the slots of the
    map it drains (nothing writes them then: the same flip and grace period as the maps). Each slot has one
    program (``cache``), which the kernel never runs nested in itself on a CPU (a run that would is skipped
    and counted as a miss): plain loads and stores are enough. Uses 8 bytes at FP+spill and what
    :func:`_bump` uses."""
    if maps.cache is None:
        _bump(a, maps, key, 1, wall, value, active)
        return
    hashed, take, flushed, done = (_uniq(a, s) for s in ("bc_hashed", "bc_take", "bc_flushed", "bc_done"))
    other = _uniq(a, "bc_other")
    a.ldx(DW, R1, FP, active).alu64("mul", R1, CACHE_SLOTS).add(R1, cache).stx(W, FP, value, R1)
    a.ld_map_fd(R1, maps.cache)
    a.mov(R2, FP).add(R2, value)
    a.call(MAP_LOOKUP)
    a.jeq(R0, 0, hashed)
    for i in range(0, KEY_SIZE, 8):
        a.ldx(DW, R1, R0, i).ldx(DW, R2, FP, key + i)
        a.jne(R1, R2, other)
    a.ldx(DW, R1, R0, _CS_N).add(R1, 1).stx(DW, R0, _CS_N, R1)
    a.ldx(DW, R1, FP, wall).stx(DW, R0, _CS_LAST, R1)
    a.ja(done)
    a.label(other)
    a.ldx(DW, R1, R0, _CS_N)
    a.jeq(R1, 0, take)  # empty (new, or drained)
    a.stx(DW, FP, spill, R0)
    second_map = _uniq(a, "bc_map1")
    a.ldx(DW, R1, FP, active)
    a.jne(R1, 0, second_map)
    _bump_into(a, maps.counts[0], maps, key, 0, wall, value, flushed, spill)
    a.label(second_map)
    _bump_into(a, maps.counts[1], maps, key, 0, wall, value, flushed, spill)
    a.label(flushed)
    a.ldx(DW, R0, FP, spill)
    a.label(take)
    for i in range(0, KEY_SIZE, 8):
        a.ldx(DW, R1, FP, key + i).stx(DW, R0, i, R1)
    a.st(DW, R0, _CS_N, 1)
    a.ldx(DW, R1, FP, wall).stx(DW, R0, _CS_FIRST, R1).stx(DW, R0, _CS_LAST, R1)
    a.ja(done)
    a.label(hashed)
    _bump(a, maps, key, 1, wall, value, active)
    a.label(done)


def _overflow(a: Asm, maps: Maps, key: int, delta: int | None, slot: int, spill: int | None = None) -> None:
    """overflow[overflow_slot(key.kind, key.result)] += delta. The key is at FP+key, or (``spill``) it is the
    count cache slot's whose address is at FP+spill, and ``delta`` None adds the slot's count."""

    def load(size: int, dst: Reg, name: str) -> None:
        if spill is None:
            a.ldx(size, dst, FP, key + _K[name])
        else:
            a.ldx(DW, dst, FP, spill).ldx(size, dst, dst, _K[name])

    small, ready, out = _uniq(a, "of_small"), _uniq(a, "of_ready"), _uniq(a, "of_out")
    load(H, R1, "result")
    a.jmp("jlt", R1, RESULT_UNTRACKED, small)
    a.add(R1, 255 - 0xFFFF)
    a.ja(ready)
    a.label(small)
    a.jmp("jle", R1, 252, ready)
    a.mov(R1, 252)
    a.label(ready)
    load(B, R2, "kind")
    a.jne(R2, KIND_DROP, out)
    a.add(R1, 256)
    a.label(out)
    a.stx(W, FP, slot, R1)
    a.ld_map_fd(R1, maps.overflow)
    a.mov(R2, FP).add(R2, slot)
    a.call(MAP_LOOKUP)
    skip = _uniq(a, "of_skip")
    a.jeq(R0, 0, skip)
    if delta is None:
        a.ldx(DW, R1, FP, spill).ldx(DW, R1, R1, _CS_N)  # type: ignore[arg-type]
    else:
        a.mov(R1, delta)
    a.atomic(DW, R0, 0, R1, _ADD)
    a.label(skip)


def conn_slot_index(sk: int) -> int:
    """The ``conn_slots`` index of socket address ``sk`` (the programs compute the same, from its low 32 bits:
    the index uses bits 7 to 30)."""
    return ((sk >> 7) ^ (sk >> 19)) & (CONN_SLOTS - 1)


def _conn_slot(a: Asm, maps: Maps, sk: int, scratch: int, fail: str, typed: bool) -> None:
    """R0 = the ``conn_slots`` entry of the socket at FP+sk (:func:`conn_slot_index`; jumps to ``fail`` if the
    lookup fails, which an array's cannot). Uses the stack word at FP+scratch. ``typed``: the socket is a
    BTF-typed pointer (a tracing program's argument), on which the verifier allows no arithmetic: its low
    32 bits, copied with a 32-bit move, are a number (the verifier allows the partial copy to a program that
    may leak pointers, as these must to compare one), and the index uses no higher bit: no helper call on
    any of the three runs of a connect that look up its socket."""
    a.ldx(DW, R1, FP, sk)
    if typed:
        a.mov32(R1, R1)
    a.mov(R2, R1).rsh(R2, 19)
    a.rsh(R1, 7).alu64("xor", R1, R2).and_(R1, CONN_SLOTS - 1)
    a.stx(W, FP, scratch, R1)
    a.ld_map_fd(R1, maps.conn_slots)
    a.mov(R2, FP).add(R2, scratch)
    a.call(MAP_LOOKUP)
    a.jeq(R0, 0, fail)


def _conn_find(a: Asm, maps: Maps, sk: int, scratch: int, miss: str, typed: bool = False) -> None:
    """R0 = the conns value of the socket at FP+sk, else jumps to ``miss``. Connections are followed in a
    direct-mapped array by socket address (``conn_slots``), and in the ``conns`` hash map when their slot
    was taken: taking and freeing a slot are a compare-and-swap and a store, where inserting into and
    deleting from a hash map took a lock each and cost every connect about a tenth of its own CPU time.
    Uses the stack word at FP+scratch; ``typed``: see :func:`_conn_slot`."""
    hashed, lookup, done = _uniq(a, "cf_hashed"), _uniq(a, "cf_lookup"), _uniq(a, "cf_done")
    _conn_slot(a, maps, sk, scratch, lookup, typed)
    a.ldx(DW, R1, R0, 0).ldx(DW, R2, FP, sk)
    a.jne(R1, R2, hashed)
    a.add(R0, _SLOT_CONN)
    a.ja(done)
    a.label(hashed)
    _conns_hashed(a, maps, scratch, lookup)
    a.ldx(DW, R1, R0, 0)
    a.jeq(R1, 0, miss)  # (most sockets: no connection is followed in the hash map)
    a.label(lookup)
    a.ld_map_fd(R1, maps.conns)
    a.mov(R2, FP).add(R2, sk)
    a.call(MAP_LOOKUP)
    a.jeq(R0, 0, miss)
    a.label(done)


def _conn_insert(a: Asm, maps: Maps, sk: int, value: int, scratch: int, full: str, typed: bool = False) -> None:
    """Follow the socket at FP+sk with the conns value at FP+value: in its slot if the slot is free (or
    already the socket's), else in the ``conns`` hash map; jumps to ``full`` if that has no room. Nothing
    else looks for the socket before the program returns (its SYN is not sent yet): the slot is filled after
    it is taken."""
    hashed, fill, done = _uniq(a, "ci_hashed"), _uniq(a, "ci_fill"), _uniq(a, "ci_done")
    _conn_slot(a, maps, sk, scratch, hashed, typed)
    a.mov(R3, R0)
    a.mov(R0, 0)
    a.ldx(DW, R2, FP, sk)
    a.atomic(DW, R3, 0, R2, _CMPXCHG)  # r0 = the slot's socket before
    a.jeq(R0, 0, fill)
    a.jne(R0, R2, hashed)
    a.label(fill)
    _copy_stack(a, R3, _SLOT_CONN, value, CONN.itemsize)
    a.ja(done)
    a.label(hashed)
    _conns_hashed(a, maps, scratch, hashed + "_up", 1)  # (before the entry: never below what the map holds)
    a.label(hashed + "_up")
    _update_from_stack(a, maps.conns, sk, value)
    a.jeq(R0, 0, done)
    _conns_hashed(a, maps, scratch, full, -1)
    a.ja(full)
    a.label(done)


def _conn_forget(a: Asm, maps: Maps, sk: int, scratch: int, typed: bool = False) -> None:
    """Stop following the socket at FP+sk: free its slot if it holds it, else delete its ``conns`` entry."""
    hashed, done = _uniq(a, "cg_hashed"), _uniq(a, "cg_done")
    _conn_slot(a, maps, sk, scratch, hashed, typed)
    a.ldx(DW, R1, R0, 0).ldx(DW, R2, FP, sk)
    a.jne(R1, R2, hashed)
    a.st(DW, R0, 0, 0)
    a.ja(done)
    a.label(hashed)
    a.ld_map_fd(R1, maps.conns)
    a.mov(R2, FP).add(R2, sk)
    a.call(MAP_DELETE)
    a.jne(R0, 0, done)
    _conns_hashed(a, maps, scratch, done, -1)
    a.label(done)


def _conns_hashed(a: Asm, maps: Maps, scratch: int, fail: str, delta: int = 0) -> None:
    """R0 = &counters[CONNS_HASHED], after adding ``delta`` to it atomically (jumps to ``fail`` if the lookup
    fails, which an array's cannot). Uses the stack word at FP+scratch."""
    a.st(W, FP, scratch, CONNS_HASHED)
    a.ld_map_fd(R1, maps.counters)
    a.mov(R2, FP).add(R2, scratch)
    a.call(MAP_LOOKUP)
    a.jeq(R0, 0, fail)
    if delta:
        a.mov(R1, delta)
        a.atomic(DW, R0, 0, R1, _ADD)


def _submit(a: Asm, maps: Maps, rec: Reg, slot: int) -> None:
    """Submit ``rec`` without a wakeup, unless the ring is more than a quarter full; then the reader is woken
    at most once per kernel tick by each CPU (noted in its ``tick`` slot, where there is one): under a storm
    the ring stays that full for a while, and a wakeup with every record cost each record more than all the
    rest of its program. Uses the stack word at FP+slot."""
    done, wake = _uniq(a, "sub"), _uniq(a, "sub_wake")
    a.ld_map_fd(R1, maps.ring)
    a.mov(R2, RB_AVAIL_DATA)
    a.call(RINGBUF_QUERY)
    a.mov(R2, RB_NO_WAKEUP)
    a.jmp("jle", R0, maps.ring_bytes // 4, done)
    if maps.tick is not None:
        _tick_slot(a, maps, slot, wake)
        a.stx(DW, FP, slot, R0)
        a.call(JIFFIES64)
        a.ldx(DW, R1, FP, slot)
        a.ldx(DW, R3, R1, TICK.fields["woke"][1])
        a.mov(R2, RB_NO_WAKEUP)
        a.jeq(R0, R3, done)  # this CPU woke the reader in this tick already
        a.stx(DW, R1, TICK.fields["woke"][1], R0)
    a.label(wake)
    a.mov(R2, RB_FORCE_WAKEUP)
    a.label(done)
    a.mov(R1, rec)
    a.call(RINGBUF_SUBMIT)


def _capped_early(a: Asm, maps: Maps, slot: int, wall: int, active: int, raw: int, mono: int, fail: str,
                  over: str, reg: Reg, second: int | None = None) -> None:  # fmt: skip
    """For :func:`_clock` (FP+wall = the clock offset): an event whose CPU found the host's raw-record budget
    spent in this window, judged from the tick cache's time (:func:`_tick_read`), is counted capped and goes to
    ``over`` without a clock read: under a storm nearly every event is over the cap, and the clock read was
    most of what the cap cost each of them. Otherwise FP+wall is the offset again and the code after this
    reads the clock. The cache's time lags by under :data:`TICK_MARGIN_NS`, so a window that may have ended
    is left to :func:`_within_budget` (with the clock read): a record is not capped into the next window
    (nor, after the wall clock was set back, for longer than a window: an end further ahead is re-judged).
    Uses FP+mono as scratch; FP+second (if given): see :func:`_clock`."""
    precise = _uniq(a, "early_no")
    _element0(a, maps.budget, slot, precise)  # type: ignore[arg-type]
    a.ldx(DW, R1, R0, BUDGET.fields["until"][1])
    a.jeq(R1, 0, precise)
    a.stx(DW, FP, mono, R1)
    _tick_read(a, maps, slot, wall, slot if second is None else second, fail, reg)
    a.ldx(DW, R1, FP, wall).add(R1, TICK_MARGIN_NS)
    a.ldx(DW, R2, FP, mono)
    a.jmp("jge", R1, R2, precise)
    # a window's end more than a window ahead: the wall clock was set back since it was noted (NTP, a resumed VM);
    # the precise path re-judges it, rather than capping every record for as long as the clock went back
    a.sub(R2, R1)
    a.jmp("jgt", R2, 1 << BUDGET_SHIFT, precise)
    _element0(a, maps.budget, slot, precise)  # type: ignore[arg-type]
    # atomic: a program in an interrupt on this CPU may cap one meanwhile, and every capped one is reported
    a.mov(R1, 1)
    a.atomic(DW, R0, BUDGET.fields["capped"][1], R1, _ADD)
    a.ja(over)
    a.label(precise)
    _live(a, maps, slot, active, raw, fail)
    a.ldx(DW, R1, R0, 8).stx(DW, FP, wall, R1)


def _within_budget(a: Asm, maps: Maps, slot: int, now: int, wall: int, over: str) -> None:
    """Count a raw record in the host's budget (FP+now: ns since boot; FP+wall: the same instant as wall-clock
    ns), or, once the host has made ``maps.budget_cap`` of them in this window of 2**:data:`BUDGET_SHIFT` ns,
    count it capped in its CPU's entry and jump to ``over``: under a storm the raw detail stream stays bounded
    however many CPUs the host has (each record costs the reader and the store's writer far more than its
    counts cost the kernel), and what it leaves out is counted. A CPU that found the budget spent notes the
    window (and when it ends, for :func:`_capped_early`) in its own entry and caps the rest of that window's
    records from there, without touching the shared word. Uses the stack word at FP+slot."""
    ok, new, capped = _uniq(a, "bud_ok"), _uniq(a, "bud_new"), _uniq(a, "bud_capped")
    assert maps.budget is not None and maps.host_budget is not None
    _element0(a, maps.budget, slot, ok)
    a.ldx(DW, R1, FP, now).rsh(R1, BUDGET_SHIFT).add(R1, 1)
    a.ldx(DW, R2, R0, BUDGET.fields["full"][1])
    a.jeq(R1, R2, capped)  # this CPU found this window's budget spent already
    _element0(a, maps.host_budget, slot, ok)
    a.mov(R1, 1)
    a.atomic(DW, R0, 0, R1, _ADD | FETCH)  # r1 = the word before
    a.ldx(DW, R2, FP, now).rsh(R2, BUDGET_SHIFT)
    a.mov(R3, R1).rsh(R3, 32)
    a.jmp("jlt", R3, R2, new)  # (a window after this one: this CPU's clock read is a hair late; count it there)
    a.lsh(R1, 32).rsh(R1, 32)
    a.jmp("jlt", R1, maps.budget_cap, ok)
    _element0(a, maps.budget, slot, ok)
    a.ldx(DW, R1, FP, now).rsh(R1, BUDGET_SHIFT).add(R1, 1).stx(DW, R0, BUDGET.fields["full"][1], R1)
    # and when the window ends as wall-clock ns, for _capped_early
    a.lsh(R1, BUDGET_SHIFT).ldx(DW, R2, FP, now).sub(R1, R2).ldx(DW, R2, FP, wall).add(R1, R2)
    a.stx(DW, R0, BUDGET.fields["until"][1], R1)
    a.label(capped)
    # atomic: a program in an interrupt on this CPU may cap one meanwhile, and every capped one is reported
    a.mov(R1, 1)
    a.atomic(DW, R0, BUDGET.fields["capped"][1], R1, _ADD)
    a.ja(over)
    a.label(new)
    # the window's first record restarts the count. CPUs racing here (or adding between another's add and its
    # store) may each admit one more record in this window than the cap: that moves the cap, never a count.
    a.lsh(R2, 32).or_(R2, 1).stx(DW, R0, 0, R2)
    a.label(ok)


def _reserve(a: Asm, maps: Maps, dst: Reg, full: str, slot: int, counter: str = "ring_full") -> None:
    """dst = ringbuf_reserve(RECORD_SIZE); on NULL count ``counter`` and jump to ``full``."""
    ok = _uniq(a, "res_ok")
    a.ld_map_fd(R1, maps.ring)
    a.mov(R2, RECORD_SIZE)
    a.mov(R3, 0)
    a.call(RINGBUF_RESERVE)
    a.mov(dst, R0)
    a.jne(dst, 0, ok)
    _count(a, maps.counters, counter, slot)
    a.ja(full)
    a.label(ok)


def _kread(a: Asm, slot: int, size: int, src: Reg, fail: str) -> None:
    """*(FP+slot) = probe_read_kernel(src, size); jump to ``fail`` on error. ``src`` may be r3."""
    if src is not R3:
        a.mov(R3, src)
    a.mov(R1, FP).add(R1, slot)
    a.mov(R2, size)
    a.call(PROBE_READ_KERNEL)
    a.jne(R0, 0, fail)


def _read_member(a: Asm, load: Callable[[Reg], None], member: int, slot: int, size: int, fail: str) -> None:
    """*(FP+slot) = ``size`` bytes at ``member`` bytes into the struct whose address ``load`` puts in a
    register (the rest of the 8-byte slot zeroed); jump to ``fail`` on error."""
    a.st(DW, FP, slot, 0)
    load(R3)
    a.add(R3, member)
    _kread(a, slot, size, R3, fail)


def _process_name(a: Asm, off: SockOffsets, dst: int, scratch: int, btf: bool = False,
                  thread: int | None = None, task: Reg | None = None) -> None:  # fmt: skip
    """FP+dst (16 bytes) = the thread-group leader's comm (the process name); the thread's own
    comm when BTF does not say where the leader is or the read fails. ``btf``: plain loads through
    the BTF-typed current task (a tracing program), no helper calls to read kernel memory; ``task``: a
    register that holds it already (``bpf_get_current_task_btf``'s), else it is got here.
    ``thread``: FP+thread (16 bytes) = the thread's own comm too."""
    own, done = _uniq(a, "pn_own"), _uniq(a, "pn_done")
    if btf and off.leader:
        assert off.task_leader is not None and off.task_comm is not None
        if task is None:
            a.call(GET_CURRENT_TASK_BTF)
            task = R0
        if thread is not None:  # (the thread's name: two loads instead of bpf_get_current_comm)
            for i in (0, 8):
                a.ldx(DW, R2, task, off.task_comm + i).stx(DW, FP, thread + i, R2)
        a.ldx(DW, R1, task, off.task_leader)
        for i in (0, 8):
            a.ldx(DW, R2, R1, off.task_comm + i).stx(DW, FP, dst + i, R2)
        return
    if off.leader:
        assert off.task_leader is not None and off.task_comm is not None
        a.call(GET_CURRENT_TASK)
        a.add(R0, off.task_leader)
        _kread(a, scratch, 8, R0, own)
        a.ldx(DW, R3, FP, scratch).add(R3, off.task_comm)
        a.mov(R1, FP).add(R1, dst)
        a.mov(R2, 16)
        a.call(PROBE_READ_KERNEL)
        a.jeq(R0, 0, done)
    a.label(own)
    a.mov(R1, FP).add(R1, dst)
    a.mov(R2, 16)
    a.call(GET_CURRENT_COMM)
    a.label(done)
    if thread is not None:
        a.mov(R1, FP).add(R1, thread)
        a.mov(R2, 16)
        a.call(GET_CURRENT_COMM)


def _normalize_mapped(a: Asm, key: int, flags_reg: Reg) -> None:
    """An IPv6 key address ::ffff:a.b.c.d becomes IPv4 a.b.c.d (sets F_MAPPED in flags_reg)."""
    out = _uniq(a, "map_out")
    a.ldx(B, R1, FP, key + _K["family"])
    a.jne(R1, AF_INET6, out)
    a.ldx(DW, R1, FP, key + _K["addr"])
    a.jne(R1, 0, out)
    a.ldx(W, R1, FP, key + _K["addr"] + 8)
    a.mov32(R2, 0xFFFF0000)  # bytes 8..11 = 00 00 ff ff, loaded little-endian
    a.jne(R1, R2, out)
    a.ldx(W, R1, FP, key + _K["addr"] + 12)
    a.st(DW, FP, key + _K["addr"], 0)
    a.st(DW, FP, key + _K["addr"] + 8, 0)
    a.stx(W, FP, key + _K["addr"], R1)
    a.st(B, FP, key + _K["family"], AF_INET)
    a.or_(flags_reg, F_MAPPED)
    a.label(out)


def _copy_stack(a: Asm, dst: Reg, dst_off: int, src_off: int, nbytes: int) -> None:
    """*(dst + dst_off) = FP[src_off .. src_off+nbytes] (8-byte words)."""
    for i in range(0, nbytes, 8):
        a.ldx(DW, R1, FP, src_off + i).stx(DW, dst, dst_off + i, R1)


def _copy_stack_to_stack(a: Asm, src_off: int, dst_off: int, nbytes: int) -> None:
    for i in range(0, nbytes, 8):
        a.ldx(DW, R1, FP, src_off + i).stx(DW, FP, dst_off + i, R1)


def _copy_to_stack(a: Asm, src: Reg, src_off: int, dst_off: int, nbytes: int) -> None:
    for i in range(0, nbytes, 8):
        a.ldx(DW, R1, src, src_off + i).stx(DW, FP, dst_off + i, R1)


def _record_from_key(a: Asm, rec: Reg, key: int) -> None:
    """Fill a ring record's process, destination, protocol and result fields from a count key."""
    a.ldx(W, R1, FP, key + _K["tgid"]).stx(W, rec, _O["pid"], R1)
    for i in (0, 8):
        a.ldx(DW, R1, FP, key + _K["comm"] + i).stx(DW, rec, _O["comm"] + i, R1)
        a.ldx(DW, R1, FP, key + _K["addr"] + i).stx(DW, rec, _O["addr"] + i, R1)
    a.ldx(B, R1, FP, key + _K["family"]).stx(H, rec, _O["family"], R1)
    a.ldx(H, R1, FP, key + _K["port"]).stx(H, rec, _O["port"], R1)
    a.ldx(H, R1, FP, key + _K["protocol"]).stx(H, rec, _O["protocol"], R1)
    a.ldx(H, R1, FP, key + _K["result"]).stx(W, rec, _O["result"], R1)


# --- programs ---------------------------------------------------------------------------------


def _enter_connecting(a: Asm, off: SockOffsets, fd: int, scratch: int, done: str, socket_only: bool = False) -> None:
    """r1 = the state of the socket behind the fd at FP+``fd`` (fd -> file -> socket -> state); jumps to
    ``done`` when a read fails (not a socket, or no such fd: the call fails EBADF/ENOTSOCK and is not counted).
    ``scratch``: 16 bytes. ``socket_only``: stop at FP+scratch = the ``struct socket *``."""
    assert off.task_files is not None and off.files_fdt is not None and off.fdt_fd is not None
    assert off.fdt_max_fds is not None and off.file_private is not None and off.socket_state is not None
    S = scratch
    a.call(GET_CURRENT_TASK)
    a.add(R0, off.task_files)
    _kread(a, S, 8, R0, done)
    a.ldx(DW, R3, FP, S).add(R3, off.files_fdt)
    _kread(a, S, 8, R3, done)
    if off.fdt_fd == off.fdt_max_fds + 8:  # (struct fdtable: both in one read)
        a.ldx(DW, R3, FP, S).add(R3, off.fdt_max_fds)
        _kread(a, S, 16, R3, done)
        a.ldx(W, R2, FP, S)
        a.ldx(DW, R1, FP, S + 8).stx(DW, FP, S, R1)  # the fd array
    else:
        a.ldx(DW, R7, FP, S)  # r7 = fdt
        a.mov(R3, R7).add(R3, off.fdt_max_fds)
        a.st(DW, FP, S, 0)
        _kread(a, S, 4, R3, done)
        a.mov(R3, R7).add(R3, off.fdt_fd)
        a.ldx(W, R7, FP, S)
        _kread(a, S, 8, R3, done)
        a.mov(R2, R7)
    a.ldx(DW, R1, FP, fd)
    a.jmp("jge", R1, R2, done)  # no such fd
    a.ldx(DW, R3, FP, fd).lsh(R3, 3)
    a.ldx(DW, R1, FP, S).add(R3, R1)
    _kread(a, S, 8, R3, done)  # struct file *
    a.ldx(DW, R3, FP, S).add(R3, off.file_private)
    _kread(a, S, 8, R3, done)  # struct socket * (if it is one)
    if socket_only:
        return
    a.ldx(DW, R3, FP, S).add(R3, off.socket_state)
    a.st(DW, FP, S, 0)
    _kread(a, S, 4, R3, done)
    a.ldx(W, R1, FP, S)


def connect_enter(tp: Tracepoint, maps: Maps, off: SockOffsets | None = None) -> Asm:
    """(Where connect() is followed at its entry and exit: see :attr:`Maps.exit_only`.)
    Stack: -8 key, -80 inflight value, -88 scratch, -96 fd, -104 the entry's flags, -120 read scratch. The
    socket's state is read here (fd -> file -> socket), where the kernel has not touched it yet: a socket
    already SS_CONNECTING (a non-blocking attempt started by an earlier call) makes a call that only reports
    that attempt (EALREADY, its result, or ECONNABORTED once SO_ERROR took it) and starts nothing — by the time
    such a call fails, the kernel has disconnected the socket and nothing at the exit tells it from a new
    attempt refused before its SYN. The entry is marked IF_CONNECTING. A thread's entry stays in the map
    (LRU) between its calls, marked IF_LIVE only during one: a call writes the entry in place, and
    only a thread's first call inserts one (no insert and delete per call). A live entry is looked
    at first: a call the kernel restarts after a signal (same fd) continues the interrupted one;
    anything else (a call whose exit was not seen) is replaced. The sockaddr is not read here: only
    a call that starts no connection needs it, and its exit reads it (the page is resident by then,
    where a read now could fault) — most connects (TCP) never read it at all."""
    V = -80
    a = Asm()
    a.mov(R6, R1)
    a.call(GET_CURRENT_PID_TGID)
    a.stx(DW, FP, -8, R0)
    a.ld_map_fd(R1, maps.inflight)
    a.mov(R2, FP).add(R2, -8)
    a.call(MAP_LOOKUP)
    a.mov(R9, R0)  # r9 = this thread's entry, or NULL
    a.jeq(R9, 0, "build")
    a.ldx(W, R1, R9, _I["flags"])
    a.jmp("jset", R1, IF_RESTARTING, "restarting")  # (set only while live)
    a.ja("build")
    a.label("restarting")
    a.ldx(W, R1, R9, _I["fd"])
    a.ldx(DW, R2, R6, tp.offset("fd", 8)).mov32(R2, R2)
    a.jne(R1, R2, "build")  # another socket: the interrupted connect was left to finish on its own
    a.mov(R1, IF_INCALL)
    a.atomic(W, R9, _I["flags"], R1, _OR)
    a.ja("out")
    a.label("build")
    a.st(DW, FP, -104, IF_LIVE)
    if off is not None and None not in (off.task_files, off.files_fdt, off.fdt_fd, off.fdt_max_fds,
                                        off.file_private, off.socket_state):  # fmt: skip
        a.ldx(DW, R1, R6, tp.offset("fd", 8)).mov32(R1, R1).stx(DW, FP, -96, R1)
        _enter_connecting(a, off, -96, -120, "state_read")
        a.jne(R1, SS_CONNECTING, "state_read")
        a.st(DW, FP, -104, IF_LIVE | IF_CONNECTING)
        a.label("state_read")
    a.jeq(R9, 0, "insert")
    # written in place from the arguments, not through a copy on the stack (its 8-byte loads of words just
    # written in parts waited for those stores), the flags word last (the entry is this thread's: only its
    # programs write it)
    a.ldx(DW, R1, R6, tp.offset("uservaddr", 8)).stx(DW, R9, _I["uaddr"], R1)
    a.st(DW, R9, _I["sk"], 0)
    a.ldx(DW, R1, R6, tp.offset("addrlen", 8)).stx(W, R9, _I["addrlen"], R1)  # the kernel's int
    a.ldx(DW, R1, R6, tp.offset("fd", 8)).stx(W, R9, _I["fd"], R1)
    a.ldx(DW, R1, FP, -104).stx(DW, R9, _I["flags"], R1)
    a.ja("out")
    a.label("insert")
    a.zero_stack(V, INFLIGHT.itemsize)
    a.ldx(DW, R1, FP, -104).stx(W, FP, V + _I["flags"], R1)
    a.ldx(DW, R1, R6, tp.offset("uservaddr", 8)).stx(DW, FP, V + _I["uaddr"], R1)
    a.ldx(DW, R1, R6, tp.offset("addrlen", 8)).stx(W, FP, V + _I["addrlen"], R1)  # the kernel's int
    a.ldx(DW, R1, R6, tp.offset("fd", 8)).stx(W, FP, V + _I["fd"], R1)
    _update_from_stack(a, maps.inflight, -8, V)
    a.jeq(R0, 0, "out")
    _count(a, maps.counters, "inflight_full", -88)
    a.label("out")
    return a.ret(0)


def _syscall_regs(a: Asm) -> None:
    """r0 = the current task's registers as its system call entered (``struct pt_regs``, BTF-typed: plain
    loads). Clobbers r1-r5."""
    a.call(GET_CURRENT_TASK_BTF)
    a.mov(R1, R0)
    a.call(TASK_PT_REGS)


def pt_regs_probe(off: SockOffsets) -> Asm:
    """A tracepoint program that reads the current task's saved registers as :func:`_call_args` and
    :func:`tcp_state` do (``bpf_get_current_task_btf``, ``bpf_task_pt_regs``, BTF-typed loads of the system
    call's number and arguments): the collector loads it (and closes it at once) to learn whether this kernel
    lets connect() be followed at its exit alone."""
    assert off.regs_di is not None and off.regs_si is not None and off.regs_dx is not None
    assert off.regs_orig_ax is not None
    a = Asm()
    _syscall_regs(a)
    for member in (off.regs_orig_ax, off.regs_di, off.regs_si, off.regs_dx):
        a.ldx(DW, R1, R0, member)
    return a.ret(0)


def _call_args(a: Asm, off: SockOffsets) -> None:
    """connect()'s arguments from the registers it was called with: fd at FP+_S_FD, the sockaddr's address at
    FP+_S_UADDR, its length (the kernel's int) at FP+_S_ADDRLEN. Clobbers r0-r5."""
    assert off.regs_di is not None and off.regs_si is not None and off.regs_dx is not None
    _syscall_regs(a)
    a.ldx(DW, R1, R0, off.regs_di).mov32(R1, R1).stx(DW, FP, _S_FD, R1)
    a.ldx(DW, R1, R0, off.regs_si).stx(DW, FP, _S_UADDR, R1)
    a.ldx(DW, R1, R0, off.regs_dx).mov32(R1, R1).stx(DW, FP, _S_ADDRLEN, R1)


def _socket_ino(a: Asm, off: SockOffsets, socket: int, dst: int, fail: str) -> None:
    """FP+dst = the inode number of the ``struct socket`` whose address is at FP+``socket``; jumps to ``fail`` when
    a read fails."""
    assert off.socket_inode is not None and off.inode_ino is not None
    a.ldx(DW, R3, FP, socket).add(R3, off.socket_inode + off.inode_ino)
    _kread(a, dst, 8, R3, fail)


# tcp_state / connect_exit stack layout
_S_PIDTGID = -8
_S_SK = -16
_S_WALL = -24
_S_ACTIVE = -32
_S_RAW = -40
_S_SCR = -48  # probe-read scratch, small map keys
_S_CODE = -56  # connect() return code as reported
_S_FD = -64
_S_UADDR = -72
_S_RESULT = -80
_S_FLAGS = -88  # record flags
_S_CNT = -96  # counter index scratch
_S_VAL = -128  # 24-byte value of a new count entry (the overflow index goes at -136)
_S_SA = -168  # sockaddr copy (32 bytes); -136..-168 also holds the overflow index at -136
_S_CONN = -288  # conn value (120 bytes); the count key is its first 48
_S_KEY = _S_CONN
_S_MONO = -408  # the clock read (ns since boot) behind _S_WALL (below the raw tcp_state's copies)
_S_ADDRLEN = -416  # connect_exit: the call's addrlen (the kernel's int)


def _raw_of_conn(a: Asm, maps: Maps) -> None:
    """After :func:`_live` for the conn value copied to _S_CONN: RAW_CONNECTS cleared in FP+_S_RAW when the
    connection was over the raw-record cap when it started (CF_CAPPED): it makes no record, now or later."""
    if maps.budget is None:
        return
    keep = _uniq(a, "raw_kept")
    a.ldx(DW, R1, FP, _S_CONN + _C["flags"])
    a.ld_imm64(R2, CF_CAPPED)
    a.and_(R1, R2)
    a.jeq(R1, 0, keep)
    a.ldx(DW, R1, FP, _S_RAW).and_(R1, ~RAW_CONNECTS).stx(DW, FP, _S_RAW, R1)
    a.label(keep)


def _emit_connect(a: Asm, maps: Maps, kind: int) -> None:
    """A CONNECT/OUTCOME record from the conn value at _S_CONN, flags at _S_FLAGS and the return
    code at _S_CODE, when raw connect records are wanted."""
    skip = _uniq(a, "emit_skip")
    a.ldx(DW, R1, FP, _S_RAW)
    a.and_(R1, RAW_CONNECTS)
    a.jeq(R1, 0, skip)
    # an OUTCOME that does not fit loses no event (its CONNECT record was kept), only the event's outcome
    _reserve(a, maps, R9, skip, _S_CNT, "outcome_lost" if kind == KIND_OUTCOME else "ring_full")
    a.st(W, R9, _O["kind"], kind)
    a.ldx(DW, R1, FP, _S_FLAGS).stx(W, R9, _O["flags"], R1)
    a.ldx(DW, R1, FP, _S_CONN + _C["ts"]).stx(DW, R9, _O["ts"], R1)
    a.ldx(DW, R1, FP, _S_CONN + _C["wall"]).stx(DW, R9, _O["wall"], R1)
    a.ldx(DW, R1, FP, _S_SK).stx(DW, R9, _O["key"], R1)
    a.ldx(W, R1, FP, _S_CONN + _C["tid"]).stx(W, R9, _O["tid"], R1)
    a.ldx(DW, R1, FP, _S_CODE).stx(W, R9, _O["code"], R1)
    for i in (0, 8):
        a.ldx(DW, R1, FP, _S_CONN + _C["thread"] + i).stx(DW, R9, _O["thread"] + i, R1)
    _record_from_key(a, R9, _S_KEY)
    a.ldx(W, R1, FP, _S_CONN + _C["err"]).stx(H, R9, _O["socktype"], R1)  # (socket type lives in err)
    # length: the handshake's duration in microseconds (at least 1) once it ended, else 0; size: 0
    unknown, capped, nonzero = _uniq(a, "lat_unknown"), _uniq(a, "lat_capped"), _uniq(a, "lat_nonzero")
    a.ldx(DW, R1, FP, _S_CONN + _C["done"])
    a.jeq(R1, 0, unknown)
    a.ldx(DW, R2, FP, _S_CONN + _C["ts"])
    a.sub(R1, R2)
    a.alu64("div", R1, 1000)
    a.jne(R1, 0, nonzero)
    a.mov(R1, 1)
    a.label(nonzero)
    a.ld_imm64(R2, 0xFFFFFFFF)
    a.jmp("jle", R1, R2, capped)
    a.mov(R1, R2)
    a.label(capped)
    a.label(unknown)
    a.stx(DW, R9, _O["length"], R1)  # length + size (r1 < 2**32, or 0)
    a.ldx(H, R1, FP, _S_CONN + _C["sockfam"]).stx(H, R9, _O["sockfam"], R1)
    a.ldx(DW, R1, FP, _S_CONN + _C["cgroup"])
    _store_cgroup(a, R9, R1)
    _submit(a, maps, R9, _S_CNT)
    a.label(skip)


#: raw tcp_state: where the copy of the socket's ``struct sock_common`` (its first :func:`sock_span`
#: bytes) and its protocol go (below everything the perf program uses)
_RS_SOCK, _RS_SPAN, _RS_PROTO, _RS_SPORT = -384, 96, -392, -400

#: the arguments a raw tracepoint program relies on (BTF prototype ``btf_trace_<name>``; more may follow)
RAW_PROTOTYPES = {
    "sock_send_length": ("struct sock *", "int", "int"),
    "sock_recv_length": ("struct sock *", "int", "int"),
    "inet_sock_set_state": ("struct sock *", "int", "int"),
    "kfree_skb": ("struct sk_buff *", "void *", "enum skb_drop_reason"),
    "tcp_destroy_sock": ("struct sock *",),
    "tcp_retransmit_skb": ("struct sock *", "struct sk_buff *", "int"),
}


def raw_prototype_ok(tracepoint: str) -> bool:
    """Whether the running kernel passes ``tracepoint`` the arguments a raw program expects."""
    try:
        args = btf_mod.vmlinux().raw_tracepoint_args(tracepoint)
    except (OSError, btf_mod.BtfError):
        return False
    want = RAW_PROTOTYPES[tracepoint]
    return tuple(args[: len(want)]) == want


@dataclass
class _Fields:
    """Where a program reads inet_sock_set_state's fields: its perf record (the program's input), or,
    as a raw tracepoint program (``raw``), the tracepoint's arguments (sk, oldstate, newstate) and a
    copy of the socket's addresses and ports that :meth:`read_sock` makes on the stack: the perf
    event's record costs every state change about as much as the program itself, and most changes
    need none of it."""

    tp: Tracepoint
    off: SockOffsets
    raw: bool = False
    btf: bool = False
    """(with ``raw``) a BTF-typed program: the socket's fields are plain loads, no copy."""

    _ARGS = ("skaddr", "oldstate", "newstate")
    _SIZES = {"skaddr": 8, "oldstate": 4, "newstate": 4, "sport": 2, "dport": 2, "family": 2, "protocol": 2,
              "saddr": 4, "daddr": 4, "saddr_v6": 16, "daddr_v6": 16}  # fmt: skip

    def _stack(self, name: str) -> int:
        o = self.off
        at = {"family": o.sk_family, "dport": o.sk_dport, "daddr": o.sk_daddr,
              "saddr": o.sk_rcv_saddr, "daddr_v6": o.sk_v6_daddr, "saddr_v6": o.sk_v6_rcv_saddr}[name]  # fmt: skip
        assert at is not None
        return _RS_SOCK + at

    def load(self, a: Asm, size: int, dst: Reg, name: str, at: int = 0) -> None:
        """dst = the field (``at`` bytes into it), host order for ports, as the record has it."""
        if not self.raw:
            a.ldx(size, dst, R6, self.tp.offset(name, self._SIZES[name]) + at)
        elif name in self._ARGS:
            a.ldx(DW, dst, R6, 8 * self._ARGS.index(name))
        elif self.btf and name != "sport":  # (inet_sport is beyond struct sock: read into the stack)
            member = self.off.sk_protocol if name == "protocol" else self._stack(name) - _RS_SOCK
            assert member is not None
            a.ldx(DW, dst, R6, 0)
            a.ldx(size, dst, dst, member + at)
            if name == "dport":
                a.be16(dst)
        elif name == "protocol":
            a.ldx(size, dst, FP, _RS_PROTO)
        elif name == "sport":  # inet_sport, as the record has it (a closing socket's skc_num is 0 by then)
            a.ldx(size, dst, FP, _RS_SPORT)
            a.be16(dst)
        else:
            a.ldx(size, dst, FP, self._stack(name) + at)
            if name == "dport":
                a.be16(dst)

    def read_sock(self, a: Asm, sport: bool = True) -> None:
        """Raw: copy the socket's addresses, remote port and protocol to the stack (zeros where
        unreadable), and its source port when ``sport``. Clobbers r0-r5."""
        if not self.raw:
            return
        assert self.off.sk_protocol is not None and self.off.inet_sport is not None
        if self.btf:
            if sport:
                a.ldx(DW, R3, R6, 0).add(R3, self.off.inet_sport)
                a.mov(R1, FP).add(R1, _RS_SPORT)
                a.mov(R2, 2)
                a.call(PROBE_READ_KERNEL)
            return
        a.ldx(DW, R3, R6, 0)
        a.mov(R1, FP).add(R1, _RS_SOCK)
        a.mov(R2, sock_span(self.off))
        a.call(PROBE_READ_KERNEL)  # (a failed read zeroes the copy)
        a.ldx(DW, R3, R6, 0).add(R3, self.off.sk_protocol)
        a.mov(R1, FP).add(R1, _RS_PROTO)
        a.mov(R2, 2)
        a.call(PROBE_READ_KERNEL)
        if sport:
            a.ldx(DW, R3, R6, 0).add(R3, self.off.inet_sport)
            a.mov(R1, FP).add(R1, _RS_SPORT)
            a.mov(R2, 2)
            a.call(PROBE_READ_KERNEL)


def raw_state_ok(off: SockOffsets) -> bool:
    """Whether :func:`tcp_state` can run as a raw tracepoint program."""
    fields = (off.sk_family, off.sk_protocol, off.inet_sport)
    return (off.addresses and None not in fields and 0 < sock_span(off) <= _RS_SPAN
            and raw_prototype_ok("inet_sock_set_state"))  # fmt: skip


def _store_cgroup(a: Asm, rec: Reg, cg: Reg) -> None:
    """The record's cgroup_hi/cgroup_lo = ``cg`` (0 when it does not fit in 48 bits). Clobbers r2."""
    fits = _uniq(a, "cg_fits")
    a.mov(R2, cg).rsh(R2, CGROUP_BITS)
    a.jeq(R2, 0, fits)
    a.mov(cg, 0)
    a.label(fits)
    a.stx(W, rec, _O["cgroup_lo"], cg)
    a.rsh(cg, 32).stx(H, rec, _O["cgroup_hi"], cg)


def _dest_from_tp(a: Asm, f: _Fields, key: int) -> None:
    """key.family/addr/port from inet_sock_set_state: the socket's own destination."""
    v6, done = _uniq(a, "dest_v6"), _uniq(a, "dest_done")
    f.load(a, H, R1, "dport")
    a.stx(H, FP, key + _K["port"], R1)
    f.load(a, H, R1, "family")
    a.stx(B, FP, key + _K["family"], R1)
    a.jeq(R1, AF_INET6, v6)
    f.load(a, W, R1, "daddr")
    a.stx(W, FP, key + _K["addr"], R1)
    a.ja(done)
    a.label(v6)
    f.load(a, DW, R1, "daddr_v6")
    a.stx(DW, FP, key + _K["addr"], R1)
    f.load(a, DW, R1, "daddr_v6", 8)
    a.stx(DW, FP, key + _K["addr"] + 8, R1)
    a.label(done)


def _record_cgroup(a: Asm, raw: int, record: int, dst: int) -> None:
    """FP+dst (8 bytes) = the current cgroup v2 id when the raw-record flags at FP+raw have ``record`` (only
    records carry it); left as it is otherwise."""
    skip = _uniq(a, "cg_skip")
    a.ldx(DW, R1, FP, raw)
    a.and_(R1, record)
    a.jeq(R1, 0, skip)
    a.call(GET_CURRENT_CGROUP_ID)
    a.stx(DW, FP, dst, R0)
    a.label(skip)


def _start_key(a: Asm, off: SockOffsets, btf: bool = False, zeroed: bool = False) -> None:
    """Conn value at _S_CONN: zeroed; second, tgid, tid, process and thread names, wall and ts (the
    clock read :func:`_clock` saved at _S_MONO: 0 when no raw connect records are written, which alone
    carry the latency), the cgroup (records only). ``zeroed``: the value was zeroed before :func:`_clock`,
    which wrote the second."""
    if not zeroed:
        a.zero_stack(_S_CONN, CONN.itemsize)
        _second(a, _S_WALL, _S_KEY)
    a.ldx(DW, R1, FP, _S_PIDTGID)
    a.stx(W, FP, _S_CONN + _C["tid"], R1)
    a.rsh(R1, 32).stx(W, FP, _S_KEY + _K["tgid"], R1)
    _process_name(a, off, _S_KEY + _K["comm"], _S_SCR, btf, thread=_S_CONN + _C["thread"])
    _record_cgroup(a, _S_RAW, RAW_CONNECTS, _S_CONN + _C["cgroup"])
    a.st(B, FP, _S_KEY + _K["kind"], KIND_CONNECT)
    a.ldx(DW, R1, FP, _S_WALL).stx(DW, FP, _S_CONN + _C["wall"], R1)
    a.ldx(DW, R1, FP, _S_MONO).stx(DW, FP, _S_CONN + _C["ts"], R1)


def _syn_in_call(a: Asm, maps: Maps, off: SockOffsets) -> None:
    """(tcp_state, exit alone) CLOSE -> SYN_SENT inside connect() (the system call the thread is in, from its
    saved registers): the thread's inflight entry gets the socket, which connect_exit takes when the call
    returns. Anything else (TCP Fast Open's sendmsg, io_uring) is an implicit connect. Sets r9 (the connect()
    call's entry, 1 once inserted, 0: an implicit connect) and r7 (flags); jumps to ``subflow``, ``build`` or
    ``implicit``, or falls through to where ``implicit`` is."""
    assert off.regs_orig_ax is not None and off.regs_di is not None
    a.call(GET_CURRENT_PID_TGID)
    a.stx(DW, FP, _S_PIDTGID, R0)
    a.mov(R9, 0)  # r9 = the connect() call's entry (or 1 once inserted), 0: an implicit connect
    a.mov(R7, F_TCP)  # r7 = flags
    _syscall_regs(a)
    a.ldx(DW, R1, R0, off.regs_orig_ax)
    a.jne(R1, NR_CONNECT, "implicit")
    a.ldx(DW, R1, R0, off.regs_di).mov32(R1, R1).stx(DW, FP, _S_FD, R1)
    a.ld_map_fd(R1, maps.inflight)
    a.mov(R2, FP).add(R2, _S_PIDTGID)
    a.call(MAP_LOOKUP)
    a.jeq(R0, 0, "first_call")
    a.mov(R9, R0)
    a.ldx(W, R1, R9, _I["flags"])
    a.jmp("jset", R1, IF_RESTARTING, "restarting")
    a.ldx(DW, R1, R9, _I["sk"])
    a.jne(R1, 0, "subflow")  # (connect_exit clears it: this call's socket)
    a.label("claim")
    a.ldx(DW, R1, FP, _S_SK).stx(DW, R9, _I["sk"], R1)
    a.ja("build")
    a.label("restarting")
    a.ldx(W, R1, R9, _I["fd"])
    a.ldx(DW, R2, FP, _S_FD)
    a.jne(R1, R2, "other_socket")
    a.ldx(DW, R1, R9, _I["sk"])  # (the continuing call's socket)
    a.ja("subflow")
    a.label("other_socket")
    a.st(W, R9, _I["flags"], 0)  # another socket: the interrupted connect was left to finish on its own
    a.ja("claim")
    a.label("first_call")  # the thread's first connect() that sends a SYN: its entry
    a.zero_stack(_S_CONN, INFLIGHT.itemsize)
    a.ldx(DW, R1, FP, _S_SK).stx(DW, FP, _S_CONN + _I["sk"], R1)
    _update_from_stack(a, maps.inflight, _S_PIDTGID, _S_CONN)
    a.mov(R9, 1)
    a.jeq(R0, 0, "build")
    _count(a, maps.counters, "inflight_full", _S_CNT)
    a.mov(R9, 0)  # (falls through to ``implicit``)


def _syn_in_live_call(a: Asm, maps: Maps) -> None:
    """(tcp_state, entry and exit) CLOSE -> SYN_SENT inside connect() (the thread's inflight entry marked LIVE by
    connect_enter): the entry gets the socket. Anything else is an implicit connect. Sets r9 (the call's entry,
    or 0) and r7 (flags); jumps to ``subflow``, ``build`` or ``implicit``."""
    a.call(GET_CURRENT_PID_TGID)
    a.stx(DW, FP, _S_PIDTGID, R0)
    a.ld_map_fd(R1, maps.inflight)
    a.mov(R2, FP).add(R2, _S_PIDTGID)
    a.call(MAP_LOOKUP)
    a.mov(R9, R0)  # r9 = the connect() call's entry, or NULL: an implicit connect
    a.mov(R7, F_TCP)  # r7 = flags
    a.jeq(R9, 0, "implicit")
    a.ldx(W, R1, R9, _I["flags"])
    a.jmp("jset", R1, IF_LIVE, "in_call")
    a.mov(R9, 0)  # the thread's entry, kept between its calls: not in one now
    a.ja("implicit")
    a.label("in_call")
    a.ldx(DW, R1, R9, _I["sk"])
    a.jne(R1, 0, "subflow")
    a.ldx(DW, R1, FP, _S_SK).stx(DW, R9, _I["sk"], R1)
    a.ja("build")


def tcp_state(tp: Tracepoint, maps: Maps, states: dict[str, int], off: SockOffsets, raw: bool = False,
              btf: bool = False) -> Asm:  # fmt: skip
    """See the module docstring. ``raw``: a raw tracepoint program; ``btf`` (with it) a BTF-typed one
    (see :class:`_Fields`)."""
    f = _Fields(tp, off, raw, btf and raw)
    close, syn_sent = states["TCP_CLOSE"], states["TCP_SYN_SENT"]
    established = states["TCP_ESTABLISHED"]
    directions = maps.traffic is not None and maps.listeners is not None and "TCP_LISTEN" in states and \
        "TCP_SYN_RECV" in states  # fmt: skip
    a = Asm()
    a.mov(R6, R1)
    f.load(a, W, R7, "oldstate")
    f.load(a, W, R8, "newstate")
    f.load(a, DW, R1, "skaddr")
    a.stx(DW, FP, _S_SK, R1)
    a.jeq(R7, syn_sent, "resolve")
    if directions:
        a.jeq(R7, states["TCP_LISTEN"], "unlisten")
        a.jeq(R8, states["TCP_LISTEN"], "listening")
        a.jeq(R7, states["TCP_SYN_RECV"], "accepted")
        if maps.opened is not None:
            a.jeq(R8, close, "closing")
    a.jne(R8, syn_sent, "out")
    a.jne(R7, close, "out")

    # --- CLOSE -> SYN_SENT: a connection starts ----------------------------------------------
    if maps.exit_only:
        _syn_in_call(a, maps, off)
    else:
        _syn_in_live_call(a, maps)
    a.label("implicit")
    a.or_(R7, F_IMPLICIT)
    a.label("build")
    f.read_sock(a, sport=False)
    a.zero_stack(_S_CONN, CONN.itemsize)
    _clock(a, maps, _S_SCR, _S_WALL, _S_ACTIVE, _S_RAW, "out", _S_MONO, RAW_CONNECTS, reg=R8,
           second=_S_KEY + _K["second"])  # fmt: skip
    _start_key(a, off, f.btf, zeroed=True)
    _dest_from_tp(a, f, _S_KEY)
    f.load(a, H, R1, "family")
    a.stx(H, FP, _S_CONN + _C["sockfam"], R1)
    _normalize_mapped(a, _S_KEY, R7)
    f.load(a, H, R1, "protocol")
    a.stx(H, FP, _S_KEY + _K["protocol"], R1)
    a.st(H, FP, _S_KEY + _K["result"], RESULT_PENDING)
    a.st(W, FP, _S_CONN + _C["err"], SOCK_STREAM)  # socket type until the result replaces it
    a.jne(R9, 0, "flags_set")
    a.ld_imm64(R1, CF_EXITED)  # implicit: there is no connect() call to wait for
    a.or_(R7, R1)
    a.label("flags_set")
    if maps.budget is not None:
        # over the cap: neither its CONNECT record nor its OUTCOME is made (whichever program reports it)
        a.ldx(DW, R1, FP, _S_RAW)
        a.jmp("jset", R1, RAW_CONNECTS << RAW_CAPPED_SHIFT, "capped")
        a.ja("flags_done")
        a.label("capped")
        a.ld_imm64(R1, CF_CAPPED)
        a.or_(R7, R1)
        a.label("flags_done")
    a.stx(DW, FP, _S_CONN + _C["flags"], R7)
    _conn_insert(a, maps, _S_SK, _S_CONN, _S_SCR, "untracked", f.btf)
    a.ja("tracked")
    a.label("untracked")
    _count(a, maps.counters, "conns_full", _S_CNT)
    if maps.budget is not None:
        # connect() counts it when it returns, and decides then whether its record is kept: not capped here
        a.jeq(R9, 0, "implicit_untracked")
        a.ld_imm64(R1, CF_CAPPED)
        a.jmp("jset", R7, R1, "uncap")
        a.ja("out")
        a.label("uncap")
        _element0(a, maps.budget, _S_SCR, "out")
        a.mov(R1, -1)
        a.atomic(DW, R0, BUDGET.fields["capped"][1], R1, _ADD)
        a.ja("out")
        a.label("implicit_untracked")
    a.jne(R9, 0, "out")  # connect() counts it when it returns (outcome unknown)
    a.st(H, FP, _S_KEY + _K["result"], RESULT_UNTRACKED)
    a.label("tracked")
    a.jne(R9, 0, "out")  # connect() counts and reports it when it returns
    # implicit: counted and reported now, in progress (or unknown if it cannot be followed)
    _bump(a, maps, _S_KEY, 1, _S_WALL, _S_VAL, _S_ACTIVE)
    a.mov(R1, F_TCP | F_IMPLICIT | F_PENDING).stx(DW, FP, _S_FLAGS, R1)
    a.st(DW, FP, _S_CODE, 0)
    _emit_connect(a, maps, KIND_CONNECT)
    a.ja("out")

    # --- a second CLOSE -> SYN_SENT in the same connect(): an MPTCP subflow ------------------
    a.label("subflow")
    a.stx(DW, FP, _S_SCR, R1)
    _conn_find(a, maps, _S_SCR, _S_CNT, "out")  # (a number: the inflight entry's copy)
    a.mov(R9, R0)
    a.ldx(H, R1, R9, _C["key"] + _K["port"])
    a.jne(R1, 0, "out")  # the first socket knew its destination
    # the MPTCP socket had none yet: take the subflow's
    f.read_sock(a, sport=False)
    a.zero_stack(_S_CONN, 48)
    _dest_from_tp(a, f, _S_KEY)
    a.mov(R7, 0)
    _normalize_mapped(a, _S_KEY, R7)
    for i in (0, 8):
        a.ldx(DW, R1, FP, _S_KEY + _K["addr"] + i).stx(DW, R9, _C["key"] + _K["addr"] + i, R1)
    a.ldx(H, R1, FP, _S_KEY + _K["port"]).stx(H, R9, _C["key"] + _K["port"], R1)
    a.ldx(B, R1, FP, _S_KEY + _K["family"]).stx(B, R9, _C["key"] + _K["family"], R1)
    a.atomic(DW, R9, _C["flags"], R7, _OR)
    a.ja("out")

    # --- SYN_SENT -> x: the handshake ended ------------------------------------------------
    a.label("resolve")
    _conn_find(a, maps, _S_SK, _S_SCR, "out", f.btf)  # not ours (started before we attached, or an MPTCP subflow)
    a.mov(R9, R0)
    if directions:
        # established: an outbound connection of the process that connected (now the local port is known)
        a.jne(R8, established, "resolve_go")
        a.zero_stack(_T_KEY, 24)
        a.zero_stack(_T_SOCK, 24)
        a.ldx(W, R1, R9, _C["key"] + _K["tgid"]).stx(W, FP, _T_KEY + _TK["tgid"], R1)
        for i in (0, 8):
            a.ldx(DW, R1, R9, _C["key"] + _K["comm"] + i).stx(DW, FP, _T_SOCK + 8 + i, R1)
        _connection_row(a, f, maps, DIR_CONNECT, "out_row", "resolve_go")
        a.label("resolve_go")
        f.load(a, DW, R1, "skaddr")
        a.stx(DW, FP, _S_SK, R1)  # (the row's stack overlapped it)
        f.load(a, W, R8, "newstate")
    a.mov(R7, 0)  # r7 = result
    a.jne(R8, close, "result_set")  # ESTABLISHED (or SYN_RECV: the handshake went on)
    a.mov(R7, RESULT_ABORTED)
    # the error the closing path passed (conn_error): exact even when the application has already
    # taken sk_err with getsockopt(SO_ERROR) (the kernel writes sk_err before the state changes)
    _closing_error(a, off, (lambda reg: f.load(a, DW, reg, "skaddr")) if f.btf else None)
    _resolve(a, maps, f.btf, off.regs_orig_ax if maps.exit_only else None)
    if directions:
        _passive_opens(a, f, maps, off, established, close)
    a.label("out")
    return a.ret(0)


def _if_connecting(a: Asm, off: SockOffsets, sk: Reg, slot: int, to: str) -> None:
    """Jump to ``to`` when the socket whose address is in ``sk`` is still connecting (SYN_SENT, SYN_RECV), or its
    state cannot be read (no BTF offset, a failed read); fall through otherwise. Uses FP+slot; clobbers r0-r3."""
    if off.sk_state is None:
        a.ja(to)
        return

    def load(reg: Reg) -> None:
        if sk is not reg:
            a.mov(reg, sk)

    _read_member(a, load, off.sk_state, slot, 1, to)
    a.ldx(DW, R1, FP, slot)
    a.jeq(R1, TCP_SYN_SENT, to)
    a.jeq(R1, TCP_SYN_RECV, to)


def _syn_acked(a: Asm, off: SockOffsets) -> None:
    """r7 = 0 (established) and a jump to ``result_set`` (:func:`_resolve`) when the TCP socket at FP+_S_SK had its
    SYN acknowledged: ``tcp_sock.bytes_acked`` counts it (1, and every byte acknowledged after), and stays 0 for a
    connect refused or timed out. Falls through otherwise, or where BTF does not say where the counter is. (Read
    with a helper even from a BTF-typed socket: the verifier lets a ``struct sock *`` be read no further than a
    ``struct sock``.)"""
    if off.tcp_bytes_acked is None:
        return
    a.st(DW, FP, _S_SCR, 0)
    a.ldx(DW, R3, FP, _S_SK).add(R3, off.tcp_bytes_acked)
    _kread(a, _S_SCR, 8, R3, "syn_unacked")
    a.ldx(DW, R1, FP, _S_SCR)
    a.jeq(R1, 0, "syn_unacked")
    a.mov(R7, 0)
    a.ja("result_set")
    a.label("syn_unacked")


def _closing_error(a: Asm, off: SockOffsets, load_sk: Callable[[Reg], None] | None = None) -> None:
    """r7 = the error the socket is closed with when known (r9 = its ``conns`` value): the one
    ``conn_error`` saw, else ``sk_err`` if not 0; r7 is left as it is otherwise. ``load_sk`` puts the
    BTF-typed socket in a register (then a plain load); without it sk_err is read with a helper from
    the socket at FP+_S_SK. Jumps to ``result_set`` (:func:`_resolve`) or falls through."""
    a.ldx(H, R1, R9, _C["reported"])
    a.jeq(R1, 0, "no_report")
    a.mov(R7, R1)
    a.ja("result_set")
    a.label("no_report")
    if off.sk_err is None:
        return
    if load_sk is not None:
        load_sk(R3)
        a.ldx(W, R1, R3, off.sk_err)
    else:
        a.st(DW, FP, _S_SCR, 0)
        a.ldx(DW, R3, FP, _S_SK).add(R3, off.sk_err)
        _kread(a, _S_SCR, 4, R3, "result_set")
        a.ldx(W, R1, FP, _S_SCR)
    a.jeq(R1, 0, "result_set")
    a.mov(R7, R1)


def _resolve(a: Asm, maps: Maps, typed: bool, orig_ax: int | None, timed: bool = True) -> None:
    """The handshake of the connection in ``conns`` (r9 = its value, FP+_S_SK = the socket) ended
    with result r7: record it, then whichever of this and connect() comes second counts and reports
    it (see the module docstring); the value is deleted once reported. Jumps to ``out`` or falls
    through. Labels: result_set (the entry), report, interrupted, call_may_run, self_report, forget. ``typed``:
    the socket at FP+_S_SK is a BTF-typed pointer (see :func:`_conn_slot`). ``orig_ax``: where ``pt_regs`` holds
    the number of the system call a thread is in (exit alone); None: connect() is followed at its entry and
    exit, whose program marks a continuing call running (IF_INCALL). ``timed`` False: the handshake ended at a
    time not known here (its latency is not reported)."""
    a.label("result_set")
    a.ldx(W, R1, R9, _C["err"]).stx(DW, FP, _S_RESULT, R1)  # (the socket type, for the record)
    a.stx(W, R9, _C["err"], R7)
    if timed:
        a.ldx(DW, R1, R9, _C["ts"])
        a.jeq(R1, 0, "untimed")  # (no raw connect records: its latency is not reported)
        a.call(KTIME_GET_NS)
        a.stx(DW, R9, _C["done"], R0)  # (before CF_RESOLVED: whoever sees that flag sees the time)
        a.label("untimed")
    a.ld_imm64(R1, CF_RESOLVED)
    a.atomic(DW, R9, _C["flags"], R1, _OR | FETCH)  # r1 = the flags before
    a.ld_imm64(R2, CF_EXITED)
    a.jmp("jset", R1, R2, "report")
    a.ld_imm64(R2, CF_RESTARTING)
    a.jmp("jset", R1, R2, "interrupted")
    a.ja("out")  # connect() is still running: it reports the outcome
    a.label("report")
    a.stx(DW, FP, _S_FLAGS, R1)
    _copy_to_stack(a, R9, 0, _S_CONN, CONN.itemsize)
    a.ldx(W, R1, R9, _C["code"]).stx(DW, FP, _S_CODE, R1)
    a.ldx(DW, R1, FP, _S_RESULT).stx(W, FP, _S_CONN + _C["err"], R1)
    _live(a, maps, _S_SCR, _S_ACTIVE, _S_RAW, "forget")
    _raw_of_conn(a, maps)
    a.ldx(DW, R1, FP, _S_CONN + _C["wall"]).stx(DW, FP, _S_WALL, R1)  # counted at its start
    # it was counted in progress when connect() returned: move it to its outcome
    _bump(a, maps, _S_KEY, -1, _S_WALL, _S_VAL, _S_ACTIVE)
    a.stx(H, FP, _S_KEY + _K["result"], R7)
    _bump(a, maps, _S_KEY, 1, _S_WALL, _S_VAL, _S_ACTIVE)
    a.ldx(DW, R1, FP, _S_FLAGS)
    a.and_(R1, 0xFFFF & ~F_PENDING)
    a.or_(R1, F_RESOLVED)
    a.stx(DW, FP, _S_FLAGS, R1)
    _emit_connect(a, maps, KIND_OUTCOME)
    a.ja("forget")

    # --- the handshake ended after a signal interrupted connect(): unless the thread may still continue the
    # call (exit alone: its entry still says so, and the continuing call reports, or conn_destroy once the socket
    # is freed; entry and exit: a continuing call is running, which reports), the connection is reported now, as
    # the application learnt (EINTR)
    a.label("interrupted")
    a.stx(DW, FP, _S_FLAGS, R1)
    a.ldx(W, R1, R9, _C["key"] + _K["tgid"]).lsh(R1, 32)
    a.ldx(W, R2, R9, _C["tid"]).or_(R1, R2)
    a.stx(DW, FP, _S_PIDTGID, R1)
    a.ld_map_fd(R1, maps.inflight)
    a.mov(R2, FP).add(R2, _S_PIDTGID)
    a.call(MAP_LOOKUP)
    a.jeq(R0, 0, "self_report")
    a.ldx(W, R1, R0, _I["flags"])
    a.jmp("jset", R1, IF_RESTARTING if orig_ax is not None else IF_INCALL, "call_may_run")
    a.ja("self_report")
    a.label("call_may_run")
    a.ldx(DW, R1, R0, _I["sk"])
    a.ldx(DW, R2, FP, _S_SK)
    if orig_ax is None:
        a.jeq(R1, R2, "out")  # the continuing call reports it
    else:
        a.jne(R1, R2, "self_report")
        # the thread is in connect() again (the number of the system call it is in, or last made): the
        # continuing call reports it. (Just after the interrupted call returned EINTR, before the thread's next
        # system call, the number is still connect()'s: then conn_destroy reports it when the socket is freed.)
        a.ldx(DW, R3, R0, _I["regs"]).add(R3, orig_ax)
        _kread(a, _S_SCR, 8, R3, "self_report")  # (a thread that exited meanwhile: its stack is gone)
        a.ldx(DW, R1, FP, _S_SCR)
        a.jeq(R1, NR_CONNECT, "out")
    a.label("self_report")
    a.ld_imm64(R1, CF_EXITED)
    a.atomic(DW, R9, _C["flags"], R1, _OR | FETCH)
    a.ld_imm64(R2, CF_EXITED)
    a.jmp("jset", R1, R2, "out")  # a call reported it meanwhile
    _copy_to_stack(a, R9, 0, _S_CONN, CONN.itemsize)
    a.ldx(DW, R1, FP, _S_RESULT).stx(W, FP, _S_CONN + _C["err"], R1)
    a.st(DW, FP, _S_CODE, -_errno.EINTR)
    _live(a, maps, _S_SCR, _S_ACTIVE, _S_RAW, "forget")
    _raw_of_conn(a, maps)
    a.ldx(DW, R1, FP, _S_CONN + _C["wall"]).stx(DW, FP, _S_WALL, R1)
    a.stx(H, FP, _S_KEY + _K["result"], R7)
    _bump(a, maps, _S_KEY, 1, _S_WALL, _S_VAL, _S_ACTIVE)
    a.ldx(DW, R1, FP, _S_FLAGS)
    a.and_(R1, 0xFFFF & ~F_PENDING)
    a.or_(R1, F_RESOLVED | F_RESTARTED)
    a.stx(DW, FP, _S_FLAGS, R1)
    _emit_connect(a, maps, KIND_CONNECT)
    a.label("forget")
    _conn_forget(a, maps, _S_SK, _S_SCR, typed)


#: the function every TCP path calls to close a socket with an error on Linux 6.10 and later (RST,
#: ICMP, timeout, SOCK_DESTROY): it writes sk_err, moves the socket to CLOSE, then wakes the
#: application. (sock/inet_sk_error_report would not do: it fires after the wakeup, and reads sk_err.)
ERROR_FUNCTION = "tcp_done_with_error"


def conn_error(maps: Maps) -> Asm:
    """See the module docstring: an fentry program on :data:`ERROR_FUNCTION` (``args``: sk, err)."""
    a = Asm()
    a.ldx(DW, R2, R1, 0)
    a.stx(DW, FP, _S_SK, R2)
    a.ldx(DW, R7, R1, 8)
    a.lsh(R7, 32).rsh(R7, 32)  # (an int: errno values are positive)
    a.jeq(R7, 0, "out")
    a.jmp("jgt", R7, 0xFFFF, "out")
    _conn_find(a, maps, _S_SK, _S_SCR, "out", typed=True)  # not a connection we follow (or it has ended)
    a.stx(H, R0, _C["reported"], R7)
    a.label("out")
    return a.ret(0)


def conn_destroy(tp: Tracepoint, maps: Maps, off: SockOffsets, raw: bool = False, btf: bool = False) -> Asm:
    """See the module docstring: tcp/tcp_destroy_sock. It runs for every TCP socket freed (once per
    connect), so where the kernel allows it gets the tracepoint's argument as it is (``raw``; ``btf``:
    as a BTF-typed program, sk_err a plain load) instead of a perf trace record built for each run."""
    a = Asm()
    a.mov(R6, R1)
    a.ldx(DW, R1, R6, 0 if raw else tp.offset("skaddr", 8))
    a.stx(DW, FP, _S_SK, R1)
    if maps.owners is not None:
        # the socket is freed: the next socket to take its memory is not its owner's (retransmits are charged
        # by socket address). Here, not when it reaches CLOSE: its application may still read it after that
        # (data queued before the peer's FIN), which notes the owner again. Looked up first: most sockets freed
        # (a connect storm's, refused) never moved a byte and have no entry, and a lookup takes no lock where a
        # delete of an LRU map takes its bucket's, interrupts off, on every socket freed. (Nothing adds the entry
        # of a socket being freed: its send and receive calls are over.)
        a.ld_map_fd(R1, maps.owners)
        a.mov(R2, FP).add(R2, _S_SK)
        a.call(MAP_LOOKUP)
        a.jeq(R0, 0, "unowned")
        a.ld_map_fd(R1, maps.owners)
        a.mov(R2, FP).add(R2, _S_SK)
        a.call(MAP_DELETE)
        a.label("unowned")
    _conn_find(a, maps, _S_SK, _S_SCR, "out", raw and btf)  # (the usual case: the state change resolved it)
    a.mov(R9, R0)
    a.ldx(DW, R1, R9, _C["flags"])
    a.ld_imm64(R2, CF_RESOLVED)
    a.jmp("jset", R1, R2, "resolved" if maps.exit_only else "out")  # (entry and exit: connect() reports it)
    _count(a, maps.counters, "state_unseen", _S_CNT)
    # established if its SYN was acknowledged; else the socket's error, if the application has not taken it; else
    # the outcome is unknown
    a.mov(R7, RESULT_UNTRACKED)

    def load_sk(reg: Reg) -> None:
        a.ldx(DW, reg, R6, 0)

    _syn_acked(a, off)
    _closing_error(a, off, load_sk if raw and btf else None)
    # (when the handshake ended is not known here, only that it has: no latency, not the time until the free)
    _resolve(a, maps, raw and btf, off.regs_orig_ax if maps.exit_only else None, timed=False)
    if maps.exit_only:
        a.ja("out")
        # resolved: reported, or connect() reports it (it cannot still be running) — unless a signal interrupted
        # the call and its handshake ended while the thread could still have continued it: reported now (EINTR)
        a.label("resolved")
        a.ld_imm64(R2, CF_EXITED)
        a.jmp("jset", R1, R2, "out")
        a.ld_imm64(R2, CF_RESTARTING)
        a.jmp("jset", R1, R2, "unreported")
        a.ja("out")
        a.label("unreported")
        a.ldx(W, R7, R9, _C["err"])
        a.st(DW, FP, _S_RESULT, SOCK_STREAM)
        a.ja("self_report")
    a.label("out")
    return a.ret(0)


#: listeners[] key: where a socket listens, as its accepted connections have it too
LISTENER_KEY = np.dtype(
    {
        "names": ["netns", "port", "family", "addr"],
        "formats": ["<u4", "<u2", "<u2", ("u1", (16,))],
        "offsets": [0, 4, 6, 8],
        "itemsize": 24,
    }
)
"""``netns``: the network namespace's inode number (``/proc/PID/ns/net``; 0 where BTF does not say where it is:
namespaces are then not told apart). ``port``: host order. ``family``: the socket's own (AF_INET, AF_INET6: a
dual-stack ``::`` listener's IPv4 connections are AF_INET6 sockets with IPv4-mapped addresses). ``addr``: the
local address, network order (IPv4 in the first 4 bytes); all zeros for a wildcard listener (0.0.0.0, ::)."""
#: listeners[] value: the process (tgid, its name) and the listening socket (0: seeded at start, socket unknown)
LISTENER_VALUE = np.dtype({"names": ["tgid", "comm", "sk"], "formats": ["<u8", "S16", "<u8"], "itemsize": 32})
_LK = {name: LISTENER_KEY.fields[name][1] for name in LISTENER_KEY.names}
_LV_SK = LISTENER_VALUE.fields["sk"][1]


def _listener_key(a: Asm, f: _Fields, off: SockOffsets, key: int) -> None:
    """FP+key (:data:`LISTENER_KEY`) = the socket's network namespace, family, local address and port (after
    ``f.read_sock``). Clobbers r0-r5 and the stack word at _T_SCR."""
    v6, addr_done = _uniq(a, "lk_v6"), _uniq(a, "lk_addr")
    a.zero_stack(key, LISTENER_KEY.itemsize)
    f.load(a, H, R1, "sport")
    a.stx(H, FP, key + _LK["port"], R1)
    f.load(a, H, R1, "family")
    a.stx(H, FP, key + _LK["family"], R1)
    a.jeq(R1, AF_INET6, v6)
    f.load(a, W, R1, "saddr")
    a.stx(W, FP, key + _LK["addr"], R1)
    a.ja(addr_done)
    a.label(v6)
    for i in (0, 8):
        f.load(a, DW, R1, "saddr_v6", i)
        a.stx(DW, FP, key + _LK["addr"] + i, R1)
    a.label(addr_done)
    if not off.netns:
        return
    assert off.sk_net is not None and off.net_inum is not None
    if f.raw and f.btf:  # plain loads: sk->__sk_common.skc_net.net->ns.inum
        f.load(a, DW, R1, "skaddr")
        a.ldx(DW, R1, R1, off.sk_net)
        a.ldx(W, R1, R1, off.net_inum)
        a.stx(W, FP, key + _LK["netns"], R1)
        return
    unread = _uniq(a, "lk_nons")
    f.load(a, DW, R3, "skaddr")
    a.add(R3, off.sk_net)
    _kread(a, _T_SCR, 8, R3, unread)
    a.ldx(DW, R3, FP, _T_SCR).add(R3, off.net_inum)
    a.mov(R1, FP).add(R1, key + _LK["netns"])
    a.mov(R2, 4)
    a.call(PROBE_READ_KERNEL)  # (a failed read zeroes it)
    a.label(unread)


def _passive_opens(a: Asm, f: _Fields, maps: Maps, off: SockOffsets, established: int, close: int) -> None:
    """x -> LISTEN (in the process that called listen()): remember who listens where — network namespace,
    local address, port (:data:`LISTENER_KEY`). LISTEN -> CLOSE: forget it, unless another socket listens
    there now (SO_REUSEPORT). SYN_RECV -> ESTABLISHED (often in a softirq): an inbound connection, charged to
    the process that listens on its local address and port in its namespace, else on the wildcard address
    (none when neither is known). All end at ``out``. A listen() with no bind() before it is not learnt (its port
    is chosen after the state change), nor which of several SO_REUSEPORT listeners of one address took a
    connection (the last to listen is charged)."""
    assert maps.listeners is not None
    a.ja("out")
    a.label("listening")
    f.read_sock(a)
    _listener_key(a, f, off, _T_KEY)
    a.zero_stack(_T_SOCK, LISTENER_VALUE.itemsize)
    a.call(GET_CURRENT_PID_TGID)
    a.rsh(R0, 32).stx(DW, FP, _T_SOCK, R0)
    _process_name(a, off, _T_SOCK + 8, _T_SCR, f.btf)
    f.load(a, DW, R1, "skaddr")
    a.stx(DW, FP, _T_SOCK + _LV_SK, R1)
    _update_from_stack(a, maps.listeners, _T_KEY, _T_SOCK)
    a.ja("out")
    a.label("unlisten")
    a.jne(R8, close, "out")
    f.read_sock(a)
    _listener_key(a, f, off, _T_KEY)
    a.ld_map_fd(R1, maps.listeners)
    a.mov(R2, FP).add(R2, _T_KEY)
    a.call(MAP_LOOKUP)
    a.jeq(R0, 0, "out")
    a.ldx(DW, R2, R0, _LV_SK)
    a.jeq(R2, 0, "unlisten_go")  # seeded at start (its socket unknown): any listener there closing ends it
    f.load(a, DW, R1, "skaddr")
    a.jne(R1, R2, "out")  # another socket listens there now (SO_REUSEPORT): its entry
    a.label("unlisten_go")
    a.ld_map_fd(R1, maps.listeners)
    a.mov(R2, FP).add(R2, _T_KEY)
    a.call(MAP_DELETE)
    a.ja("out")
    a.label("accepted")
    a.jne(R8, established, "out")
    f.read_sock(a)
    a.zero_stack(_T_SOCK, 24)
    _listener_key(a, f, off, _T_VAL)
    a.ld_map_fd(R1, maps.listeners)
    a.mov(R2, FP).add(R2, _T_VAL)
    a.call(MAP_LOOKUP)
    a.jne(R0, 0, "in_found")
    # no listener on that very address: one on the wildcard address (0.0.0.0, ::) of its family
    a.st(DW, FP, _T_VAL + _LK["addr"], 0)
    a.st(DW, FP, _T_VAL + _LK["addr"] + 8, 0)
    a.ld_map_fd(R1, maps.listeners)
    a.mov(R2, FP).add(R2, _T_VAL)
    a.call(MAP_LOOKUP)
    a.jeq(R0, 0, "in_owned")
    a.label("in_found")
    _copy_to_stack(a, R0, 0, _T_SOCK, 24)
    a.label("in_owned")
    a.zero_stack(_T_KEY, 24)
    a.ldx(DW, R1, FP, _T_SOCK).stx(W, FP, _T_KEY + _TK["tgid"], R1)
    _connection_row(a, f, maps, DIR_ACCEPT, "in_row", "out", read=False)
    if maps.opened is None:
        return
    # x -> CLOSE of a connection seen opening: its lifetime, charged to whoever opened it
    a.label("closing")
    a.zero_stack(_T_KEY, 24)
    f.load(a, DW, R1, "skaddr")
    a.stx(DW, FP, _T_KEY + _TK["sk"], R1)
    a.ld_map_fd(R1, maps.opened)
    a.mov(R2, FP).add(R2, _T_KEY + _TK["sk"])
    a.call(MAP_LOOKUP)
    a.jeq(R0, 0, "out")
    _copy_to_stack(a, R0, 0, _T_SOCK, 24)
    a.ldx(DW, R7, R0, 24)  # r7 = when it opened
    a.call(KTIME_GET_NS)
    a.sub(R0, R7)
    a.alu64("div", R0, 1000)
    a.mov(R7, R0)
    a.jne(R7, 0, "life_set")
    a.mov(R7, 1)
    a.label("life_set")
    a.ldx(DW, R1, FP, _T_SOCK).stx(W, FP, _T_KEY + _TK["tgid"], R1)
    a.ld_map_fd(R1, maps.opened)
    a.mov(R2, FP).add(R2, _T_KEY + _TK["sk"])
    a.call(MAP_DELETE)
    if maps.finals is not None and off.tcp_counters:
        _final_counters(a, f, maps, off)
        # one open before the collector started (registered by the reader: OPENED_BEFORE_START) leaves its final
        # only: its opening was not seen, so its close is no connection row (its lifetime is unknown)
        a.ldx(W, R1, FP, _F_VAL + _FV["opened"])
        a.jeq(R1, OPENED_BEFORE_START, "out")
    _connection_row(a, f, maps, DIR_CLOSE, "close_row", "out", lifetime=True)


def accept_exit(tp: Tracepoint, maps: Maps, off: SockOffsets) -> Asm:
    """syscalls/sys_exit_accept4 (or sys_exit_accept): the connection behind the returned fd is charged to the
    process that accepted it (``opened`` and ``owners``, which the state program filled with the listener's
    process when the handshake ended): a server that listens in one process and accepts in a forked one has its
    connections' bytes charged to the one that accepted them. A failed call, or a connection not followed from
    its start, changes nothing."""
    assert maps.opened is not None
    assert off.socket_sk is not None and off.sockinfo
    a = Asm()
    a.mov(R6, R1)
    a.ldx(DW, R1, R6, tp.offset("ret", 8))
    a.jmp("jslt", R1, 0, "out")
    a.stx(DW, FP, -8, R1)
    _enter_connecting(a, off, -8, -24, "out", socket_only=True)  # FP-24 = the struct socket *
    a.ldx(DW, R3, FP, -24).add(R3, off.socket_sk)
    _kread(a, -32, 8, R3, "out")  # FP-32 = the struct sock *
    a.ld_map_fd(R1, maps.opened)
    a.mov(R2, FP).add(R2, -32)
    a.call(MAP_LOOKUP)
    a.jeq(R0, 0, "out")
    a.mov(R7, R0)
    a.call(GET_CURRENT_PID_TGID)
    a.rsh(R0, 32).stx(W, R7, 0, R0)
    a.stx(DW, FP, -64, R0)
    _process_name(a, off, -56, -72)
    for i in (0, 8):
        a.ldx(DW, R1, FP, -56 + i).stx(DW, R7, 8 + i, R1)
    if maps.owners is not None:
        _update_from_stack(a, maps.owners, -32, -64)
    a.label("out")
    return a.ret(0)


FINAL_KEY = np.dtype({"names": ["sk", "ports", "raddr"], "formats": ["<u8", "<u4", ("u1", (16,))],
                      "offsets": [0, 8, 16], "itemsize": 32})  # fmt: skip
"""A closed TCP connection: its socket (kernel address), port pair (source port, destination port, host
order, as the DIR_CLOSE traffic row's key has them) and remote address (16 bytes, network order; IPv4 in the
first 4, as the traffic rows have it): a socket's memory reused within a drain for a connection with the same
ports to another address is another connection."""
FINAL = np.dtype(
    {
        "names": ["tgid", "opened", "comm", "bytes_acked", "bytes_received", "write_seq", "snd_una", "oldstate",
                  "sk_flags"],
        "formats": ["<u4", "<u4", "S16", "<u8", "<u8", "<u4", "<u4", "<u4", "<u8"],
        "offsets": [0, 4, 8, 24, 32, 40, 44, 48, 56],
        "itemsize": 64,
    }
)  # fmt: skip
"""What the kernel held for a TCP connection as it closed: whose it is and how it opened (``opened``:
:data:`DIR_CONNECT` or :data:`DIR_ACCEPT`, from ``opened``), ``struct tcp_sock``'s own counters, the state it
left for CLOSE and ``sock.sk_flags`` (see :func:`final_bytes`)."""
_FV = {"tgid": 0, "opened": 4, "comm": 8, "bytes_acked": 24, "bytes_received": 32, "write_seq": 40, "snd_una": 44,
       "oldstate": 48, "sk_flags": 56}  # fmt: skip
# finals key (32: in _T_SOCK past the owner's 24 bytes) and value (64: in _T_VAL, free until _connection_row fills it)
_F_KEY, _F_VAL = -216, -136
#: TCP states that had queued this side's FIN (its sequence number is in write_seq): FIN_WAIT1, FIN_WAIT2,
#: LAST_ACK, CLOSING
FIN_SENT_STATES = (4, 5, 9, 11)
SOCK_DONE = 1  # enum sock_flags: set by tcp_fin() when the peer's FIN arrived


def final_bytes(finals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bytes the application wrote, bytes that arrived) of each closed connection of ``finals``
    (:data:`FINAL`): ``bytes_acked`` counts the active opener's SYN and this side's FIN once acknowledged,
    ``write_seq - snd_una`` what was written and not acknowledged (the FIN too, once queued), and
    ``bytes_received`` the peer's FIN."""
    syn = (finals["opened"] == DIR_CONNECT).astype(np.int64)
    fin_sent = np.isin(finals["oldstate"], FIN_SENT_STATES).astype(np.int64)
    unacked = (finals["write_seq"].astype(np.int64) - finals["snd_una"].astype(np.int64)) % (1 << 32)
    sent = finals["bytes_acked"].astype(np.int64) + unacked - syn - fin_sent
    fin_in = ((finals["sk_flags"] >> SOCK_DONE) & 1).astype(np.int64)
    received = finals["bytes_received"].astype(np.int64) - fin_in
    return np.maximum(sent, 0), np.maximum(received, 0)


def _final_counters(a: Asm, f: _Fields, maps: Maps, off: SockOffsets) -> None:
    """finals[(sk, ports, remote address)] = the closing connection's owner (_T_SOCK: opened's value) and its own
    counters (:data:`FINAL`); one that could not be kept (the map full until the next drain, or the socket
    unreadable) is counted (``finals_full``). Keeps r6-r9; uses _T_VAL (before :func:`_connection_row` fills it)."""
    assert maps.finals is not None
    f.read_sock(a)
    a.zero_stack(_F_KEY, FINAL_KEY.itemsize)
    f.load(a, DW, R1, "skaddr")
    a.stx(DW, FP, _F_KEY, R1)
    for name, at in (("sport", 8), ("dport", 10)):
        f.load(a, H, R1, name)
        a.stx(H, FP, _F_KEY + at, R1)
    v6, addressed = _uniq(a, "final_v6"), _uniq(a, "final_addr")
    f.load(a, H, R1, "family")
    a.jeq(R1, AF_INET6, v6)
    f.load(a, W, R1, "daddr")
    a.stx(W, FP, _F_KEY + 16, R1)
    a.ja(addressed)
    a.label(v6)
    for at in (0, 8):
        f.load(a, DW, R1, "daddr_v6", at)
        a.stx(DW, FP, _F_KEY + 16 + at, R1)
    a.label(addressed)
    a.zero_stack(_F_VAL, FINAL.itemsize)
    _copy_stack_to_stack(a, _T_SOCK, _F_VAL, 24)
    f.load(a, W, R1, "oldstate")
    a.stx(W, FP, _F_VAL + _FV["oldstate"], R1)
    failed, done = _uniq(a, "final_failed"), _uniq(a, "final_done")
    for name, member, size in (("bytes_acked", off.tcp_bytes_acked, 8), ("bytes_received", off.tcp_bytes_received, 8),
                               ("write_seq", off.tcp_write_seq, 4), ("snd_una", off.tcp_snd_una, 4),
                               ("sk_flags", off.sk_flags, 8)):  # fmt: skip
        assert member is not None
        f.load(a, DW, R3, "skaddr")
        a.add(R3, member)
        _kread(a, _F_VAL + _FV[name], size, R3, failed)
    _update_from_stack(a, maps.finals, _F_KEY, _F_VAL)
    a.jeq(R0, 0, done)
    a.label(failed)
    _count(a, maps.counters, "finals_full", _T_CNT)
    a.label(done)


def _connection_row(a: Asm, f: _Fields, maps: Maps, direction: int, prefix: str, done: str,
                    lifetime: bool = False, read: bool = True) -> None:  # fmt: skip
    """traffic[active][(sk, tgid at _T_KEY, second, direction)] += one connection (``lifetime``:
    r7 microseconds, a closed one), its process name at _T_SOCK + 8 and its addresses from the
    inet_sock_set_state record; an opened one is remembered in ``opened``. Clobbers r7 and the
    stack from -8 to -280. Ends at ``done``. ``read`` False: the caller has read the socket (raw)."""
    if read:
        f.read_sock(a)
    _clock(a, maps, _T_SCR, _T_WALL, _T_ACTIVE, _T_RAW, done)
    f.load(a, DW, R1, "skaddr")
    a.stx(DW, FP, _T_KEY + _TK["sk"], R1)
    # both ports in the key's padding: a socket freed and reused within the same second (short connections
    # accepted or made one after another) is another connection, not one more of the first with its addresses
    for name, at in (("sport", _TK_PORTS), ("dport", _TK_PORTS + 2)):
        f.load(a, H, R1, name)
        a.stx(H, FP, _T_KEY + at, R1)
    if not lifetime:
        if maps.opened is not None:
            a.ldx(W, R1, FP, _T_KEY + _TK["tgid"]).stx(DW, FP, _T_SOCK, R1)
            a.st(W, FP, _T_SOCK + 4, direction)  # (opened's pad: how the connection opened)
            _copy_stack_to_stack(a, _T_SOCK, _T_VAL, 24)
            a.call(KTIME_GET_NS)
            a.stx(DW, FP, _T_VAL + 24, R0)
            _update_from_stack(a, maps.opened, _T_KEY + _TK["sk"], _T_VAL)
        if maps.owners is not None:
            # its owner from its start: the connecting process (from ``conns``), the listening one (the
            # state change runs in a softirq: never the current task). Retransmits come before any send()
            # returns (one send() of 3 MB returns when the last byte is queued).
            unowned = _uniq(a, "row_unowned")
            a.ldx(W, R1, FP, _T_KEY + _TK["tgid"])
            a.jeq(R1, 0, unowned)
            a.stx(DW, FP, _T_SOCK, R1)
            _update_from_stack(a, maps.owners, _T_KEY + _TK["sk"], _T_SOCK)
            a.label(unowned)
        a.mov(R7, 1)

    def fill(a: Asm, p: str) -> None:
        f.load(a, H, R1, "protocol")
        a.stx(H, FP, _T_VAL + _TV["protocol"], R1)
        _fill_from_record(a, f, p)

    _traffic_add(a, maps, direction, fill, prefix, done)


def _exit_alone(a: Asm, tp: Tracepoint, maps: Maps, off: SockOffsets) -> None:
    """connect_exit up to ``started`` where connect() is followed at its exit alone: the call's arguments come
    from the registers it was made with (see :func:`_call_args`), read only by the calls that need them: those
    that started no connection, and those after a signal interrupted one. Falls through to ``started`` for a call
    that moved a socket CLOSE -> SYN_SENT (or continued one that did)."""
    a.mov(R6, R1)
    a.call(GET_CURRENT_PID_TGID)
    a.stx(DW, FP, _S_PIDTGID, R0)
    a.ldx(DW, R8, R6, tp.offset("ret", 8))  # r8 = return code
    a.st(DW, FP, _S_FLAGS, 0)
    a.st(DW, FP, _S_SK, 0)
    a.ld_map_fd(R1, maps.inflight)
    a.mov(R2, FP).add(R2, _S_PIDTGID)
    a.call(MAP_LOOKUP)
    a.jeq(R0, 0, "no_entry")
    a.mov(R9, R0)  # r9 = the thread's entry (it stays in the map between its calls)
    a.ldx(DW, R1, R9, _I["sk"]).stx(DW, FP, _S_SK, R1)  # the socket tcp_state saw this call start, or 0
    a.ldx(W, R7, R9, _I["flags"])  # r7 = the entry's flags
    # a restart code: a signal interrupted the call, which the kernel restarts after the handler
    # (SA_RESTART) or reports as EINTR. The connection is reported by whichever call ends it,
    # with what the application saw then (or by the handshake's end, if no call continues it).
    a.jmp("jsgt", R8, RESTART_CODES[-1], "not_restart")
    a.jmp("jslt", R8, RESTART_CODES[0], "not_restart")
    _count(a, maps.counters, "restarted", _S_CNT)
    _call_args(a, off)
    a.jmp("jset", R7, IF_RESTARTING, "interrupted_again")
    a.ldx(DW, R1, FP, _S_SK)
    a.jeq(R1, 0, "out")  # nothing had started
    a.ldx(DW, R1, FP, _S_FD).stx(W, R9, _I["fd"], R1)
    _syscall_regs(a)
    a.stx(DW, R9, _I["regs"], R0)  # (a number from here on: read with a helper)
    a.mov(R1, IF_RESTARTING)
    a.atomic(W, R9, _I["flags"], R1, _OR)
    _conn_find(a, maps, _S_SK, _S_SCR, "out")
    a.ld_imm64(R1, CF_RESTARTING)
    a.atomic(DW, R0, _C["flags"], R1, _OR)
    a.ja("out")
    a.label("interrupted_again")
    a.ldx(W, R1, R9, _I["fd"])
    a.ldx(DW, R2, FP, _S_FD)
    a.jeq(R1, R2, "out")  # the continuing call, interrupted again: the next one continues it
    a.ja("abandoned")  # (a call on another socket that started nothing)
    a.label("not_restart")
    a.jmp("jset", R7, IF_RESTARTING, "after_restart")
    a.label("fresh")
    a.st(DW, R9, _I["sk"], 0)  # the call is over (the thread's entry is kept for its next call)
    a.label("no_entry_checked")
    a.jeq(R8, -_errno.EALREADY, "repeat")
    a.jeq(R8, -_errno.EISCONN, "repeat")
    a.ldx(DW, R1, FP, _S_SK)
    a.jne(R1, 0, "started")
    a.ja("no_transition")
    a.label("no_entry")  # (a thread whose calls never sent a SYN, or one evicted from the map)
    a.jmp("jsgt", R8, RESTART_CODES[-1], "no_entry_checked")
    a.jmp("jslt", R8, RESTART_CODES[0], "no_entry_checked")
    _count(a, maps.counters, "restarted", _S_CNT)
    a.ja("out")
    a.label("repeat")
    _count(a, maps.counters, "repeat_connects", _S_CNT)
    a.ja("out")

    # --- the call after an interrupted one: on the same socket it continues it ----------------
    a.label("after_restart")
    _call_args(a, off)
    a.ldx(W, R1, R9, _I["fd"])
    a.ldx(DW, R2, FP, _S_FD)
    a.jeq(R1, R2, "continued")
    a.label("abandoned")  # another socket: the interrupted connect was left to finish on its own
    a.st(W, R9, _I["flags"], 0)
    a.st(DW, R9, _I["sk"], 0)
    a.st(DW, FP, _S_SK, 0)  # (a call on another socket that sent a SYN has a fresh entry: this one sent none)
    a.jmp("jsgt", R8, RESTART_CODES[-1], "no_entry_checked")
    a.jmp("jslt", R8, RESTART_CODES[0], "no_entry_checked")
    a.ja("out")
    a.label("continued")
    a.jeq(R8, -_errno.EALREADY, "out")  # still connecting (a non-blocking retry): a later call ends it
    a.st(W, R9, _I["flags"], 0)  # the call is over (the thread's entry is kept for its next call)
    a.st(DW, R9, _I["sk"], 0)
    _continued_result(a)


def _continued_result(a: Asm) -> None:
    """The end of a call that continued an interrupted one on the same socket (both ways of following connect()):
    EISCONN is the success it reports; marked restarted; a call whose socket sent no SYN goes to ``out``."""
    a.jne(R8, -_errno.EISCONN, "continued_code")
    a.mov(R8, 0)  # connected by now: what the application learns is that it succeeded
    a.label("continued_code")
    a.st(DW, FP, _S_FLAGS, F_RESTARTED)
    a.ldx(DW, R1, FP, _S_SK)
    a.jeq(R1, 0, "out")


def _exit_after_entry(a: Asm, tp: Tracepoint, maps: Maps) -> None:
    """connect_exit up to ``started`` where connect() is followed at its entry and exit: the call's arguments are
    in its entry, which ``connect_enter`` marked live. Falls through to ``started`` as :func:`_exit_alone`."""
    a.mov(R6, R1)
    a.call(GET_CURRENT_PID_TGID)
    a.stx(DW, FP, _S_PIDTGID, R0)
    a.ld_map_fd(R1, maps.inflight)
    a.mov(R2, FP).add(R2, _S_PIDTGID)
    a.call(MAP_LOOKUP)
    a.jeq(R0, 0, "no_entry")
    a.ldx(W, R1, R0, _I["flags"])
    a.jmp("jset", R1, IF_LIVE, "entered")
    a.label("no_entry")
    _count(a, maps.counters, "exit_without_enter", _S_CNT)
    a.ja("out")
    a.label("entered")
    a.mov(R9, R0)  # r9 = the call's entry (live until its flags are cleared: it stays in the map)
    a.ldx(DW, R8, R6, tp.offset("ret", 8))  # r8 = return code
    a.ldx(DW, R1, R9, _I["sk"]).stx(DW, FP, _S_SK, R1)
    a.ldx(W, R7, R9, _I["flags"])  # r7 = the entry's flags
    a.st(DW, FP, _S_FLAGS, 0)
    a.ldx(DW, R1, R9, _I["uaddr"]).stx(DW, FP, _S_UADDR, R1)
    a.ldx(W, R1, R9, _I["addrlen"]).stx(DW, FP, _S_ADDRLEN, R1)
    a.ldx(W, R1, R9, _I["fd"]).stx(DW, FP, _S_FD, R1)
    # a restart code: a signal interrupted the call, which the kernel restarts after the handler
    # (SA_RESTART) or reports as EINTR. The connection is reported by whichever call ends it,
    # with what the application saw then (or by the handshake's end, if no call continues it).
    a.jmp("jsgt", R8, RESTART_CODES[-1], "not_restart")
    a.jmp("jslt", R8, RESTART_CODES[0], "not_restart")
    _count(a, maps.counters, "restarted", _S_CNT)
    a.jmp("jset", R7, IF_RESTARTING, "interrupted_again")
    a.ldx(DW, R1, FP, _S_SK)
    a.jeq(R1, 0, "forget_call")  # nothing had started
    a.mov(R1, IF_RESTARTING)
    a.atomic(W, R9, _I["flags"], R1, _OR)
    _conn_find(a, maps, _S_SK, _S_SCR, "out")
    a.ld_imm64(R1, CF_RESTARTING)
    a.atomic(DW, R0, _C["flags"], R1, _OR)
    a.ja("out")
    a.label("interrupted_again")
    a.mov32(R1, ~IF_INCALL)
    a.atomic(W, R9, _I["flags"], R1, _AND)
    a.ja("out")
    a.label("forget_call")
    a.st(W, R9, _I["flags"], 0)  # the call is over (the thread's entry is kept for its next call)
    a.ja("out")
    a.label("not_restart")
    a.jmp("jset", R7, IF_RESTARTING, "continued")
    a.st(W, R9, _I["flags"], 0)  # the call is over (the thread's entry is kept for its next call)
    a.jeq(R8, -_errno.EALREADY, "repeat")
    a.jeq(R8, -_errno.EISCONN, "repeat")
    a.ldx(DW, R1, FP, _S_SK)
    a.jne(R1, 0, "started")
    # its socket was already connecting: it reports that attempt's result (counted when it ended)
    a.jmp("jset", R7, IF_CONNECTING, "repeat")
    a.ja("no_transition")
    a.label("repeat")
    _count(a, maps.counters, "repeat_connects", _S_CNT)
    a.ja("out")

    # --- the call after an interrupted one, on the same socket ---------------------------------
    a.label("continued")
    a.jne(R8, -_errno.EALREADY, "continued_ends")
    a.mov32(R1, ~IF_INCALL)  # still connecting (a non-blocking retry): a later call ends it
    a.atomic(W, R9, _I["flags"], R1, _AND)
    a.ja("out")
    a.label("continued_ends")
    a.st(W, R9, _I["flags"], 0)  # the call is over (the thread's entry is kept for its next call)
    _continued_result(a)


def connect_exit(tp: Tracepoint, maps: Maps, off: SockOffsets) -> Asm:
    """See the module docstring."""
    a = Asm()
    if maps.exit_only:
        _exit_alone(a, tp, maps, off)
    else:
        _exit_after_entry(a, tp, maps)

    # --- this call moved a socket CLOSE -> SYN_SENT ------------------------------------------
    a.label("started")
    a.stx(DW, FP, _S_CODE, R8)
    if maps.connecting is not None:
        # returned with the socket still connecting: its next connect() call only reports this attempt
        assert off.sk_socket is not None
        a.jeq(R8, -_errno.EINPROGRESS, "mark")
        a.jne(R8, -_errno.EINTR, "marked")
        a.label("mark")
        a.ldx(DW, R3, FP, _S_SK).add(R3, off.sk_socket)
        _kread(a, _S_SCR, 8, R3, "marked")
        _socket_ino(a, off, _S_SCR, _S_SCR, "marked")
        a.ld_map_fd(R1, maps.connecting)
        a.mov(R2, FP).add(R2, _S_SCR)
        a.mov(R3, R2)
        a.mov(R4, BPF_ANY)
        a.call(MAP_UPDATE)
        a.label("marked")
    _conn_find(a, maps, _S_SK, _S_SCR, "no_conn")
    a.ja("have_conn")
    a.label("no_conn")
    # no room to follow it when it started: counted below with the outcome unknown
    a.st(DW, FP, _S_RESULT, RESULT_UNTRACKED)
    a.ldx(DW, R1, FP, _S_FLAGS).or_(R1, F_TCP).stx(DW, FP, _S_FLAGS, R1)
    if maps.exit_only:
        _call_args(a, off)
    a.ja("by_address")
    a.label("have_conn")
    a.mov(R9, R0)
    a.stx(W, R9, _C["code"], R8)
    a.ld_imm64(R1, CF_EXITED)
    a.atomic(DW, R9, _C["flags"], R1, _OR | FETCH)  # r1 = the flags before
    a.mov(R7, R1)
    a.ld_imm64(R1, CF_EXITED)
    a.jmp("jset", R7, R1, "out")  # reported already (its handshake ended while no call ran)
    _copy_to_stack(a, R9, 0, _S_CONN, CONN.itemsize)
    _live(a, maps, _S_SCR, _S_ACTIVE, _S_RAW, "out")
    _raw_of_conn(a, maps)
    a.ldx(DW, R1, FP, _S_CONN + _C["wall"]).stx(DW, FP, _S_WALL, R1)  # counted at its start
    a.mov(R1, R7).and_(R1, 0xFFFF)
    a.ldx(DW, R2, FP, _S_FLAGS).or_(R1, R2)
    a.stx(DW, FP, _S_FLAGS, R1)
    a.ld_imm64(R1, CF_RESOLVED)
    a.jmp("jset", R7, R1, "resolved_first")
    a.jeq(R8, -_errno.EINPROGRESS, "in_progress")
    a.jeq(R8, -_errno.EINTR, "in_progress")
    # the call returned its handshake's end (0, or the error the kernel closed the socket with: connect() sees
    # the socket out of SYN_SENT only after tcp_state ran for that change), yet tcp_state did not resolve it:
    # the kernel skipped that run (a softirq's state change on a CPU where tcp_state was running is a recursion
    # miss). The call's code is the outcome; the handshake ended by now — unless the socket is still in SYN_SENT:
    # a TCP Fast Open connect() the kernel deferred returns 0 before any SYN is sent (its first send() sends it)
    a.ldx(DW, R3, FP, _S_SK)
    _if_connecting(a, off, R3, _S_SCR, "in_progress")
    _count(a, maps.counters, "state_unseen", _S_CNT)
    a.mov(R1, 0).sub(R1, R8)
    a.stx(W, FP, _S_CONN + _C["err"], R1)
    a.ldx(DW, R1, FP, _S_CONN + _C["ts"])
    a.jeq(R1, 0, "resolved_first")
    a.call(KTIME_GET_NS)
    a.stx(DW, FP, _S_CONN + _C["done"], R0)
    a.ja("resolved_first")
    a.label("in_progress")
    # in progress: counted now; the outcome moves it later
    _bump_cached(a, maps, _S_KEY, _S_WALL, _S_VAL, _S_ACTIVE, _S_SCR, CACHE_CONNECTS)
    a.ldx(DW, R1, FP, _S_FLAGS).or_(R1, F_PENDING).stx(DW, FP, _S_FLAGS, R1)
    _emit_connect(a, maps, KIND_CONNECT)
    a.ja("out")
    a.label("resolved_first")
    # the handshake ended inside this call (blocking, or loopback): one count, final
    a.ldx(W, R1, FP, _S_CONN + _C["err"])
    a.jne(R1, RESULT_ABORTED, "err_ok")
    # closed without a socket error: if connect() itself failed, its errno says why
    a.jmp("jsge", R8, 0, "err_ok")
    a.jeq(R8, -_errno.EINPROGRESS, "err_ok")
    a.jeq(R8, -_errno.EINTR, "err_ok")
    a.mov(R1, 0).sub(R1, R8)
    a.label("err_ok")
    _set_result(a, R1)
    a.st(W, FP, _S_CONN + _C["err"], SOCK_STREAM)
    _bump_cached(a, maps, _S_KEY, _S_WALL, _S_VAL, _S_ACTIVE, _S_SCR, CACHE_CONNECTS)
    a.ldx(DW, R1, FP, _S_FLAGS).or_(R1, F_RESOLVED).stx(DW, FP, _S_FLAGS, R1)
    _conn_forget(a, maps, _S_SK, _S_SCR)
    _emit_connect(a, maps, KIND_CONNECT)
    a.ja("out")

    # --- nothing went through SYN_SENT: UDP setting its peer, or an attempt refused early -----
    a.label("no_transition")
    for code in INVALID_CALL:
        if code != -_errno.EINVAL:  # (EINVAL is also a blackhole route's answer: told apart by the address)
            a.jeq(R8, code, "out")
    if maps.exit_only:
        _call_args(a, off)
    a.stx(DW, FP, _S_CODE, R8)
    a.mov(R1, 0).sub(R1, R8)
    a.stx(DW, FP, _S_RESULT, R1)  # errno, 0 for ok
    a.label("by_address")
    # the sockaddr as the call passed it (connect() has used it: the page is resident), no more
    # than the call said it has (the next byte may be unreadable)
    a.zero_stack(_S_SA, 32)
    a.ldx(DW, R2, FP, _S_ADDRLEN)
    a.jmp("jle", R2, 28, "len_ok")
    a.mov(R2, 28)
    a.label("len_ok")
    a.mov(R1, FP).add(R1, _S_SA)
    a.ldx(DW, R3, FP, _S_UADDR)
    a.call(PROBE_READ_USER)
    a.jeq(R0, 0, "sa_ok")
    _count(a, maps.counters, "sockaddr_fault", _S_CNT)
    a.ja("out")
    a.label("sa_ok")
    a.ldx(H, R1, FP, _S_SA)  # sa_family
    a.jeq(R1, AF_INET, "inet")
    a.jeq(R1, AF_INET6, "inet")
    a.ja("out")  # AF_UNIX, AF_NETLINK, AF_UNSPEC (disconnect), ...
    a.label("inet")
    _blackhole_or_invalid(a)
    _clock(a, maps, _S_SCR, _S_WALL, _S_ACTIVE, _S_RAW, "out", _S_MONO, RAW_CONNECTS)
    _start_key(a, off)
    a.ldx(H, R1, FP, _S_SA).stx(B, FP, _S_KEY + _K["family"], R1)
    a.stx(H, FP, _S_CONN + _C["sockfam"], R1)
    a.ldx(H, R1, FP, _S_SA + 2).be16(R1).stx(H, FP, _S_KEY + _K["port"], R1)
    a.ldx(H, R1, FP, _S_SA)
    a.jeq(R1, AF_INET6, "sa_v6")
    a.ldx(W, R1, FP, _S_SA + 4).stx(W, FP, _S_KEY + _K["addr"], R1)
    a.ja("sa_done")
    a.label("sa_v6")
    a.ldx(DW, R1, FP, _S_SA + 8).stx(DW, FP, _S_KEY + _K["addr"], R1)
    a.ldx(DW, R1, FP, _S_SA + 16).stx(DW, FP, _S_KEY + _K["addr"] + 8, R1)
    a.label("sa_done")
    a.ldx(DW, R7, FP, _S_FLAGS)  # r7 = record flags from here on
    a.or_(R7, F_RESOLVED)
    _normalize_mapped(a, _S_KEY, R7)
    a.ldx(DW, R1, FP, _S_RESULT).stx(H, FP, _S_KEY + _K["result"], R1)
    if off.sockinfo:
        _sockinfo(a, maps, off)
    a.label("sockinfo_done")
    a.stx(DW, FP, _S_FLAGS, R7)
    _bump_cached(a, maps, _S_KEY, _S_WALL, _S_VAL, _S_ACTIVE, _S_SCR, CACHE_CONNECTS)
    _emit_connect(a, maps, KIND_CONNECT)
    a.label("out")
    return a.ret(0)


def _blackhole_or_invalid(a: Asm) -> None:
    """An EINVAL (r8) with an inet address at _S_SA (its family read into r1): a route that blackholes the
    destination (the kernel's answer for ``ip route add blackhole``, IPv4 and IPv6, TCP and UDP) when the call's
    arguments were good, else an invalid call (jumps to ``out``): an address length the kernel refuses (above
    sockaddr_storage, shorter than the family's sockaddr) or an IPv6 destination that needs a scope id
    (link-local, interface- or link-local multicast) — the EINVALs a connect() gets for its arguments."""
    ok, v6, not_ll = _uniq(a, "arg_ok"), _uniq(a, "arg_v6"), _uniq(a, "arg_not_ll")
    a.jne(R8, -_errno.EINVAL, ok)
    a.ldx(DW, R2, FP, _S_ADDRLEN)
    a.jmp("jgt", R2, 128, "out")  # (the kernel's int: a negative one is large here)
    a.jeq(R1, AF_INET6, v6)
    a.jmp("jlt", R2, 16, "out")
    a.ja(ok)
    a.label(v6)
    a.jmp("jlt", R2, 24, "out")  # SIN6_LEN_RFC2133
    a.ldx(B, R3, FP, _S_SA + 8)
    a.ldx(B, R4, FP, _S_SA + 9)
    a.jne(R3, 0xFE, not_ll)
    a.and_(R4, 0xC0)
    a.jeq(R4, 0x80, "out")  # fe80::/10
    a.ja(ok)
    a.label(not_ll)
    a.jne(R3, 0xFF, ok)
    a.and_(R4, 0x0F)
    a.jeq(R4, 1, "out")  # ff01::/16, interface-local
    a.jeq(R4, 2, "out")  # ff02::/16, link-local
    a.label(ok)


#: the count key's 8-byte word that holds ``result`` (with port, protocol, family and kind), and where in it
_RESULT_WORD = _K["result"] // 8 * 8
_RESULT_SHIFT = (_K["result"] - _RESULT_WORD) * 8


def _set_result(a: Asm, result: Reg) -> None:
    """_S_KEY.result = ``result`` (its low 16 bits) by rewriting the key's whole word: the count cache compares
    the key a word at a time right after, and an 8-byte load of a word just written in part waits for the
    store (a 2-byte store here was the most expensive instruction of a blocking connect's exit). Clobbers r2
    and r3."""
    a.ldx(DW, R2, FP, _S_KEY + _RESULT_WORD)
    a.ld_imm64(R3, ~(0xFFFF << _RESULT_SHIFT))
    a.and_(R2, R3)
    a.mov(R3, result).and_(R3, 0xFFFF).lsh(R3, _RESULT_SHIFT)
    a.or_(R2, R3)
    a.stx(DW, FP, _S_KEY + _RESULT_WORD, R2)


def _sockinfo(a: Asm, maps: Maps, off: SockOffsets) -> None:
    """fd -> file -> socket -> sock: socket type into the conn value's ``err`` slot, protocol into
    the key (F_SOCKINFO in r7). A TCP call with no transition on a socket an earlier call left connecting
    (exit alone: in ``connecting``, taken out), that returned 0 with the socket still connecting (TCP Fast Open's
    deferred connect; one connected by then had its start's tcp_state run skipped: counted), EINPROGRESS
    (exit alone: its SYN came before tcp_state was attached) or reports an earlier attempt's error (the socket
    has a peer port) is not a new connect: jumps to ``out``. On a failed read jumps to ``sockinfo_done``."""
    assert off.task_files is not None and off.files_fdt is not None and off.fdt_fd is not None
    assert off.fdt_max_fds is not None and off.file_private is not None and off.socket_type is not None
    assert off.socket_sk is not None and off.sk_protocol is not None and off.sk_dport is not None
    S = _S_SA  # the sockaddr copy is not needed any more: scratch
    a.call(GET_CURRENT_TASK)
    a.add(R0, off.task_files)
    _kread(a, S, 8, R0, "sockinfo_done")
    a.ldx(DW, R3, FP, S).add(R3, off.files_fdt)
    _kread(a, S, 8, R3, "sockinfo_done")
    a.ldx(DW, R8, FP, S)  # r8 = fdt
    a.mov(R3, R8).add(R3, off.fdt_max_fds)
    a.st(DW, FP, S, 0)
    _kread(a, S, 4, R3, "sockinfo_done")
    a.ldx(W, R2, FP, S)
    a.ldx(DW, R1, FP, _S_FD)
    a.jmp("jge", R1, R2, "sockinfo_done")
    a.mov(R3, R8).add(R3, off.fdt_fd)
    _kread(a, S, 8, R3, "sockinfo_done")
    a.ldx(DW, R3, FP, _S_FD).lsh(R3, 3)
    a.ldx(DW, R1, FP, S).add(R3, R1)
    _kread(a, S, 8, R3, "sockinfo_done")  # struct file *
    a.ldx(DW, R3, FP, S).add(R3, off.file_private)
    _kread(a, S, 8, R3, "sockinfo_done")  # struct socket *
    a.ldx(DW, R8, FP, S)
    if maps.exit_only:
        a.stx(DW, FP, _S_UADDR, R8)  # (the sockaddr was read)
    a.st(DW, FP, S + 8, 0)
    a.mov(R3, R8).add(R3, off.socket_type)
    _kread(a, S + 8, 2, R3, "sockinfo_done")
    a.mov(R3, R8).add(R3, off.socket_sk)
    _kread(a, S, 8, R3, "sockinfo_done")  # struct sock *
    a.ldx(DW, R8, FP, S)
    a.st(DW, FP, S + 16, 0)
    a.mov(R3, R8).add(R3, off.sk_protocol)
    _kread(a, S + 16, 2, R3, "sockinfo_done")
    a.ldx(DW, R1, FP, S + 8).and_(R1, 0xF)  # SOCK_NONBLOCK/SOCK_CLOEXEC live in the upper bits
    a.stx(W, FP, _S_CONN + _C["err"], R1)
    a.ldx(DW, R1, FP, S + 16).stx(H, FP, _S_KEY + _K["protocol"], R1)
    a.or_(R7, F_SOCKINFO)
    a.jmp("jset", R7, F_TCP, "sockinfo_done")  # it did start (and could not be followed)
    # TCP without a SYN in this call: a new attempt only if it failed before the socket got a peer
    a.jeq(R1, IPPROTO_TCP, "tcp_check")
    a.jne(R1, IPPROTO_MPTCP, "sockinfo_done")
    a.label("tcp_check")
    if maps.connecting is not None:
        # a socket an earlier call left connecting: this call reports that attempt (its result, EALREADY, or
        # ECONNABORTED once SO_ERROR took it); by now the kernel has disconnected it if it failed (entry and
        # exit: connect_enter saw it SS_CONNECTING, and connect_exit counted the call a repeat)
        _socket_ino(a, off, _S_UADDR, _S_SCR, "sockinfo_done")
        a.ld_map_fd(R1, maps.connecting)
        a.mov(R2, FP).add(R2, _S_SCR)
        a.call(MAP_DELETE)
        a.jeq(R0, 0, "recall")
    a.ldx(DW, R1, FP, _S_CODE)
    returned_error = _uniq(a, "returned_error")
    a.jne(R1, 0, returned_error)
    # connected without a CLOSE -> SYN_SENT seen in the call: TCP Fast Open's deferred connect if the socket is still
    # connecting (no SYN sent yet: counted when its data is), else a connect whose start tcp_state did not see (the
    # kernel skipped that run): counted with what the call returned
    _if_connecting(a, off, R8, S + 24, "deferred")
    a.ja("sockinfo_done")
    a.label(returned_error)
    if maps.exit_only:
        a.jeq(R1, -_errno.EINPROGRESS, "unseen_start")  # its SYN was sent before tcp_state was attached
    a.st(DW, FP, S + 24, 0)
    a.mov(R3, R8).add(R3, off.sk_dport)
    _kread(a, S + 24, 2, R3, "sockinfo_done")
    a.ldx(DW, R1, FP, S + 24)
    a.jeq(R1, 0, "sockinfo_done")
    a.label("recall")
    _count(a, maps.counters, "repeat_connects", _S_CNT)
    a.ja("out")
    a.label("deferred")
    _count(a, maps.counters, "deferred", _S_CNT)
    a.ja("out")
    if maps.exit_only:
        a.label("unseen_start")
        _count(a, maps.counters, "exit_without_enter", _S_CNT)
        a.ja("out")


# --- drops ------------------------------------------------------------------------------------

_D_WALL, _D_ACTIVE, _D_RAW, _D_SCR, _D_FLAGS, _D_CNT, _D_TID = -8, -16, -24, -32, -40, -48, -56
_D_LEN, _D_SIZE, _D_ETH = -64, -72, -80
_D_VAL = -104  # 24 bytes; overflow index at -112
_D_KEY = -160  # 48
_D_THREAD = -176  # 16
_D_HDR = -296  # 48 bytes of packet header: IPv4 or IPv6 and, without options, the transport ports
_D_REASON, _D_SP, _D_CGROUP, _D_MONO = -224, -232, -240, -248


def raw_drop_ok(off: SockOffsets) -> bool:
    """Whether :func:`skb_drop` can run as a raw tracepoint program."""
    return off.skb_protocol is not None and raw_prototype_ok("kfree_skb")


def skb_drop(tp: Tracepoint, maps: Maps, off: SockOffsets, skipped: list[int], attribute: bool = True,
             raw: bool = False, btf: bool = False) -> Asm:  # fmt: skip
    """See the module docstring. ``attribute`` False: never charge a drop to a task (the kernel
    has no irq tracepoints to tell interrupt context). ``raw``: a raw tracepoint program (input: the
    arguments skb, location, reason; no trace record built for every free, most of which are
    skipped): the packet's ethertype is read from the skb, and the address of the arguments (on the
    stack the tracepoint runs on) tells a task's stack from an interrupt stack. ``btf`` (with
    ``raw``): a BTF-typed program (``tp_btf``): the skb's and the task's fields are plain loads (the
    verifier knows their types), not helper calls; the packet's bytes are still read with one."""
    a = Asm()
    a.mov(R6, R1)

    def load_skb(reg: Reg) -> None:
        a.ldx(DW, reg, R6, 0 if raw else tp.offset("skbaddr", 8))

    if raw:
        a.ldx(DW, R7, R6, 16).mov32(R7, R7)  # args[2]: enum skb_drop_reason
    else:
        a.ldx(W, R7, R6, tp.offset("reason", 4))
    for value in skipped:
        a.jeq(R7, value, "out")
    a.stx(DW, FP, _D_REASON, R7)
    a.st(DW, FP, _D_CGROUP, 0)
    a.zero_stack(_D_KEY, 48)
    _clock(a, maps, _D_SCR, _D_WALL, _D_ACTIVE, _D_RAW, "out", _D_MONO, RAW_DROPS, second=_D_KEY + _K["second"])
    a.zero_stack(_D_THREAD, 16)
    a.mov(R8, 0)  # r8 = flags
    a.stx(H, FP, _D_KEY + _K["result"], R7)
    a.st(B, FP, _D_KEY + _K["kind"], KIND_DROP)
    a.st(DW, FP, _D_TID, 0)
    a.st(DW, FP, _D_LEN, 0)
    a.st(DW, FP, _D_SIZE, 0)
    if btf:
        assert off.skb_protocol is not None
        load_skb(R1)
        a.ldx(H, R1, R1, off.skb_protocol).be16(R1).stx(DW, FP, _D_ETH, R1)  # (network order in the skb)
    elif raw:
        assert off.skb_protocol is not None
        _read_member(a, load_skb, off.skb_protocol, _D_ETH, 2, "eth_done")
        a.ldx(DW, R1, FP, _D_ETH).be16(R1).stx(DW, FP, _D_ETH, R1)  # (network order in the skb)
        a.label("eth_done")
    else:
        a.ldx(H, R1, R6, tp.offset("protocol", 2)).stx(DW, FP, _D_ETH, R1)
    # charge the current task only when the drop happened on its own kernel stack (not on an
    # interrupt stack: hardirq, or a softirq run at irq exit or at local_bh_enable) and it is not a
    # kernel thread (ksoftirqd). The perf tracepoint machinery leaves the caller's registers'
    # address in the first 8 bytes of our input: their stack pointer says which stack this is.
    if not attribute:
        a.or_(R8, F_IRQ)
        a.ja("attributed")
    assert off.regs_sp is not None and off.task_stack is not None and off.task_flags is not None
    if btf:
        # our input (the arguments array) is on the stack the tracepoint runs on (not our own
        # frame: a program may get a per-CPU stack): compared with the task's stack as it is (the
        # verifier lets a program allowed to leak pointers, CAP_PERFMON, compare one with a number)
        a.call(GET_CURRENT_TASK_BTF)
        a.mov(R9, R0)  # (kept for the process name: one helper call, not two)
        a.ldx(W, R1, R9, off.task_flags)
        a.mov32(R2, PF_KTHREAD)
        a.jmp("jset", R1, R2, "irq")
        a.ldx(DW, R1, R9, off.task_stack)  # (void *: a number)
        a.jmp("jgt", R1, R6, "irq")
        a.add(R1, THREAD_SIZE)
        a.jmp("jle", R1, R6, "irq")
        a.ja("task")
    elif raw:
        # the same, its address read as a number (a copy of the spilled pointer: the verifier lets
        # a root program read it that way)
        a.stx(DW, FP, _D_SCR, R6)
        a.mov(R3, FP).add(R3, _D_SCR)
        _kread(a, _D_SP, 8, R3, "irq")
        a.ldx(DW, R7, FP, _D_SP)  # r7 = a stack address of this context
    else:
        a.st(DW, FP, _D_SCR, 0)
        _kread(a, _D_SCR, 8, R6, "irq")  # struct pt_regs *
        a.ldx(DW, R3, FP, _D_SCR).add(R3, off.regs_sp)
        _kread(a, _D_SCR, 8, R3, "irq")
        a.ldx(DW, R7, FP, _D_SCR)  # r7 = stack pointer at the tracepoint (the reason is in the key already)
    if not btf:
        a.call(GET_CURRENT_TASK)
        a.mov(R9, R0)
        a.st(DW, FP, _D_SCR, 0)
        a.mov(R3, R9).add(R3, off.task_flags)
        _kread(a, _D_SCR, 4, R3, "irq")
        a.ldx(DW, R1, FP, _D_SCR)
        a.mov32(R2, PF_KTHREAD)
        a.jmp("jset", R1, R2, "irq")
        a.mov(R3, R9).add(R3, off.task_stack)
        _kread(a, _D_SCR, 8, R3, "irq")
        a.ldx(DW, R1, FP, _D_SCR)
        a.sub(R7, R1)
        a.jmp("jge", R7, THREAD_SIZE, "irq")  # (unsigned: below the stack wraps around too)
        a.ja("task")
    a.label("irq")
    a.or_(R8, F_IRQ)
    a.ja("attributed")
    a.label("task")
    a.call(GET_CURRENT_PID_TGID)
    a.stx(DW, FP, _D_TID, R0)
    a.rsh(R0, 32).stx(W, FP, _D_KEY + _K["tgid"], R0)
    _process_name(a, off, _D_KEY + _K["comm"], _D_SCR, btf, thread=_D_THREAD, task=R9 if btf else None)
    _record_cgroup(a, _D_RAW, RAW_DROPS, _D_CGROUP)
    a.label("attributed")

    if off.skb_len is not None and btf:
        load_skb(R1)
        a.ldx(W, R1, R1, off.skb_len).stx(DW, FP, _D_LEN, R1).stx(DW, FP, _D_SIZE, R1)
    elif off.skb_len is not None:
        a.mov(R1, FP).add(R1, _D_LEN)
        a.mov(R2, 4)
        load_skb(R3)
        a.add(R3, off.skb_len)
        a.call(PROBE_READ_KERNEL)
        a.ldx(DW, R1, FP, _D_LEN).stx(DW, FP, _D_SIZE, R1)
    if off.packet:
        _drop_headers(a, load_skb, off, btf)
    a.label("parsed")
    _bump_cached(a, maps, _D_KEY, _D_WALL, _D_VAL, _D_ACTIVE, _D_SCR, CACHE_DROPS)
    # the raw record, when wanted
    a.ldx(DW, R1, FP, _D_RAW)
    a.and_(R1, RAW_DROPS)
    a.jeq(R1, 0, "out")
    _reserve(a, maps, R9, "out", _D_CNT)
    a.st(W, R9, _O["kind"], KIND_DROP)
    a.stx(W, R9, _O["flags"], R8)
    a.ldx(DW, R1, FP, _D_WALL).stx(DW, R9, _O["wall"], R1)
    a.ldx(DW, R1, FP, _D_MONO).stx(DW, R9, _O["ts"], R1)
    load_skb(R1)
    a.stx(DW, R9, _O["key"], R1)
    a.ldx(DW, R1, FP, _D_TID).stx(W, R9, _O["tid"], R1)
    a.ldx(DW, R1, FP, _D_REASON).stx(W, R9, _O["code"], R1)
    for i in (0, 8):
        a.ldx(DW, R1, FP, _D_THREAD + i).stx(DW, R9, _O["thread"] + i, R1)
    _record_from_key(a, R9, _D_KEY)
    a.st(W, R9, _O["result"], 0)
    a.ldx(DW, R1, FP, _D_ETH).stx(H, R9, _O["socktype"], R1)
    a.ldx(DW, R1, FP, _D_LEN).stx(W, R9, _O["length"], R1)
    a.ldx(DW, R1, FP, _D_SIZE).stx(W, R9, _O["size"], R1)
    a.st(H, R9, _O["sockfam"], 0)
    a.ldx(DW, R1, FP, _D_CGROUP)
    _store_cgroup(a, R9, R1)
    _submit(a, maps, R9, _D_CNT)
    a.label("out")
    return a.ret(0)


#: IPv6 extension headers walked to find the transport header (bounded)
_V6_HOP, _V6_ROUTING, _V6_FRAGMENT, _V6_DSTOPTS, _V6_AH = 0, 43, 44, 60, 51
_V6_MAX_EXT = 4


def _drop_headers(a: Asm, load_skb: Callable[[Reg], None], off: SockOffsets, btf: bool = False) -> None:
    """Family, destination, L4 protocol and port into the drop key, from the packet. r8 flags.
    Non-first IPv4 fragments have no transport header: no port. Jumps to ``parsed``. ``btf``: the
    skb is a BTF-typed pointer (its fields are plain loads)."""
    assert off.skb_head is not None and off.skb_network_header is not None
    a.ldx(DW, R1, FP, _D_ETH)
    a.jeq(R1, ETH_P_IP, "l3")
    a.jeq(R1, ETH_P_IPV6, "l3")
    a.ja("parsed")
    a.label("l3")
    # r9 = skb->head + skb->network_header
    if btf:
        load_skb(R1)
        a.ldx(DW, R9, R1, off.skb_head)
        a.ldx(H, R1, R1, off.skb_network_header)
    else:
        load_skb(R3)
        a.add(R3, off.skb_head)
        _kread(a, _D_SCR, 8, R3, "parsed")
        a.ldx(DW, R9, FP, _D_SCR)
        a.st(DW, FP, _D_SCR, 0)
        load_skb(R3)
        a.add(R3, off.skb_network_header)
        _kread(a, _D_SCR, 2, R3, "parsed")
        a.ldx(DW, R1, FP, _D_SCR)
    a.jeq(R1, 0xFFFF, "parsed")  # network header not set
    a.add(R9, R1)
    # 48 bytes: the transport ports come with the IP header when it has no options (the usual
    # case: one read, not two); 40 (the IP header alone) if that read fails
    a.zero_stack(_D_HDR, 48)
    a.mov(R7, 1)  # r7 = 1: the first 48 bytes are on the stack (until the ports say otherwise)
    _kread(a, _D_HDR, 48, R9, "hdr_short")
    a.ja("hdr_read")
    a.label("hdr_short")
    a.zero_stack(_D_HDR, 48)
    a.mov(R7, 0)
    _kread(a, _D_HDR, 40, R9, "parsed")
    a.label("hdr_read")
    a.ldx(B, R1, FP, _D_HDR).rsh(R1, 4)
    a.jeq(R1, 6, "ipv6")
    a.jne(R1, 4, "parsed")
    # IPv4: protocol @9, tot_len @2 (be), frag_off @6 (be), daddr @16, ihl*4 in byte 0
    a.ldx(B, R2, FP, _D_HDR + 9).stx(H, FP, _D_KEY + _K["protocol"], R2)
    a.ldx(H, R1, FP, _D_HDR + 2).be16(R1).stx(DW, FP, _D_SIZE, R1)
    a.ldx(W, R1, FP, _D_HDR + 16).stx(W, FP, _D_KEY + _K["addr"], R1)
    a.st(B, FP, _D_KEY + _K["family"], AF_INET)
    a.or_(R8, F_L3)
    a.ldx(H, R1, FP, _D_HDR + 6).be16(R1).and_(R1, 0x1FFF)
    a.jne(R1, 0, "parsed")  # a fragment after the first: its payload is not a transport header
    a.ldx(B, R1, FP, _D_HDR).and_(R1, 0x0F).lsh(R1, 2)
    a.add(R9, R1)
    a.jeq(R1, 20, "ports")  # (no options: the ports are at 20 in the copy, if it has 48 bytes)
    a.mov(R7, 0)
    a.ja("ports")
    a.label("ipv6")
    # IPv6: payload_len @4 (be), nexthdr @6, daddr @24..40
    a.ldx(H, R1, FP, _D_HDR + 4).be16(R1).add(R1, 40).stx(DW, FP, _D_SIZE, R1)
    a.ldx(DW, R1, FP, _D_HDR + 24).stx(DW, FP, _D_KEY + _K["addr"], R1)
    a.ldx(DW, R1, FP, _D_HDR + 32).stx(DW, FP, _D_KEY + _K["addr"] + 8, R1)
    a.st(B, FP, _D_KEY + _K["family"], AF_INET6)
    a.or_(R8, F_L3)
    a.ldx(B, R2, FP, _D_HDR + 6)
    a.add(R9, 40)
    for i in range(_V6_MAX_EXT):
        nxt = f"v6ext{i + 1}"
        # r2 = next header, r9 = where it starts
        a.jeq(R2, _V6_HOP, f"v6opt{i}")
        a.jeq(R2, _V6_ROUTING, f"v6opt{i}")
        a.jeq(R2, _V6_DSTOPTS, f"v6opt{i}")
        a.jeq(R2, _V6_AH, f"v6ah{i}")
        a.jeq(R2, _V6_FRAGMENT, f"v6frag{i}")
        a.ja("v6l4_direct" if i == 0 else "v6l4")
        a.label(f"v6opt{i}")  # length in 8-byte units, not counting the first 8
        a.st(DW, FP, _D_SCR, 0)
        _kread(a, _D_SCR, 4, R9, "v6unknown")
        a.ldx(B, R1, FP, _D_SCR + 1).add(R1, 1).lsh(R1, 3)
        a.ja(f"v6next{i}")
        a.label(f"v6ah{i}")  # length in 4-byte units, minus 2
        a.st(DW, FP, _D_SCR, 0)
        _kread(a, _D_SCR, 4, R9, "v6unknown")
        a.ldx(B, R1, FP, _D_SCR + 1).add(R1, 2).lsh(R1, 2)
        a.ja(f"v6next{i}")
        a.label(f"v6frag{i}")  # 8 bytes; only the first fragment carries the transport header
        a.st(DW, FP, _D_SCR, 0)
        _kread(a, _D_SCR, 4, R9, "v6unknown")
        a.ldx(H, R1, FP, _D_SCR + 2).be16(R1).and_(R1, 0xFFF8)
        a.jne(R1, 0, "v6unknown")
        a.mov(R1, 8)
        a.label(f"v6next{i}")
        a.ldx(B, R2, FP, _D_SCR)
        a.add(R9, R1)
        a.label(nxt)
    a.label("v6unknown")  # too many extension headers, or unreadable: protocol and port unknown
    a.mov(R2, 0)
    a.st(H, FP, _D_KEY + _K["protocol"], 0)
    a.ja("parsed")
    a.label("v6l4_direct")  # no extension headers: the ports are at 40 in the copy, if it has 48 bytes
    a.jeq(R7, 0, "v6l4")
    a.mov(R7, 2)
    a.ja("v6l4_set")
    a.label("v6l4")
    a.mov(R7, 0)
    a.label("v6l4_set")
    a.stx(H, FP, _D_KEY + _K["protocol"], R2)
    a.label("ports")
    # r2 = L4 protocol, r9 = its header: TCP, UDP and UDPLite have the destination port at +2;
    # r7: 1 (IPv4) or 2 (IPv6) when the header is in the copy, else 0 (read it)
    a.ldx(H, R2, FP, _D_KEY + _K["protocol"])
    a.jeq(R2, IPPROTO_TCP, "port")
    a.jeq(R2, 136, "port")
    a.jne(R2, IPPROTO_UDP, "parsed")
    a.label("port")
    a.jeq(R7, 1, "port_v4")
    a.jeq(R7, 2, "port_v6")
    a.st(DW, FP, _D_SCR, 0)
    _kread(a, _D_SCR, 4, R9, "parsed")
    a.ldx(H, R1, FP, _D_SCR + 2)
    a.ja("port_set")
    a.label("port_v4")
    a.ldx(H, R1, FP, _D_HDR + 20 + 2)
    a.ja("port_set")
    a.label("port_v6")
    a.ldx(H, R1, FP, _D_HDR + 40 + 2)
    a.label("port_set")
    a.be16(R1).stx(H, FP, _D_KEY + _K["port"], R1)
    a.or_(R8, F_PORT)
    a.ja("parsed")


# --- traffic: bytes per (socket, process) -----------------------------------------------------

MSG_PEEK = 2

TRAFFIC_KEY = np.dtype(
    {
        "names": ["sk", "tgid", "second", "direction", "ports"],
        "formats": ["<u8", "<u4", "<u4", "u1", "<u4"],
        "offsets": [0, 8, 12, 16, 20],
        "itemsize": 24,
    }
)
"""What bytes are summed by: the socket (kernel address), the process (tgid) that sent or read them,
the wall-clock second, the direction and the socket's two ports (``ports``: a socket freed and its memory
reused within the second is another connection, not more of the first with its addresses; byte rows hold
the kernel's port pair as it is, connection rows both ports in host order) (:data:`DIR_RX` read, :data:`DIR_TX` sent,
:data:`DIR_RETRANS` TCP segments retransmitted, :data:`DIR_ACCEPT` a connection passively opened
(the listener's process), :data:`DIR_CONNECT` an outbound TCP connection established,
:data:`DIR_CLOSE` one of those closed: ``bytes`` is its lifetime in microseconds)."""
TRAFFIC_VALUE = np.dtype(
    {
        "names": ["bytes", "calls", "first", "last", "comm", "laddr", "raddr", "lport", "rport", "family",
                  "protocol"],
        "formats": ["<u8", "<u8", "<u8", "<u8", "S16", ("u1", (16,)), ("u1", (16,)), "<u2", "<u2", "<u2", "<u2"],
        "offsets": [0, 8, 16, 24, 32, 48, 64, 80, 82, 84, 86],
        "itemsize": 88,
    }
)  # fmt: skip
"""``bytes``/``calls``: summed atomically. The rest is written once, when the key is new: first and
last wall-clock ns (``last`` is refreshed on every call, not atomically: a nanosecond race is
harmless), the process name, the socket's addresses (IPv4 in the first 4 bytes, network order) and
ports (host order) as the socket had them then (an unconnected UDP socket has no remote)."""
_TK = {name: TRAFFIC_KEY.fields[name][1] for name in TRAFFIC_KEY.names}
_TK_PORTS = _TK["ports"]
_TV = {name: TRAFFIC_VALUE.fields[name][1] for name in TRAFFIC_VALUE.names}
#: traffic overflow array: (direction - 1) * 2 -> bytes, + 1 -> calls (cumulative)
TRAFFIC_OVERFLOW_SLOTS = 12
#: opened[sk] value: (tgid, pad, process name, ktime when the connection opened)
OPENED_SIZE = 32
#: opened[sk]'s pad (how the connection opened) of a connection open before the collector started, put there by
#: the TCP byte reader (:class:`.tcpcounters.TcpBytes`) so that its close keeps its final counters
OPENED_BEFORE_START = 0
#: owners[sk] value: the process that last moved bytes on a socket (tgid, pad, process name)
OWNER_SIZE = 24

_T_WALL, _T_ACTIVE, _T_RAW, _T_SCR, _T_CNT = -8, -16, -24, -32, -40
_T_KEY = -64  # 24
_T_VAL = -152  # 88
_T_SOCK = -280  # 128: the start of struct sock_common
_T_JIF, _T_SLOT, _T_VALID = -288, -296, -304  # sock_bytes: the tick count read first, its slot's index, the slot's tick

BYTE_SLOT = np.dtype(
    {
        "names": ["sk", "tgid", "second", "direction", "ports", "jiffies", "bytes", "calls", "last"],
        "formats": ["<u8", "<u4", "<u4", "u1", "<u4", "<u8", "<u8", "<u8", "<u8"],
        "offsets": [0, 8, 12, 16, 20, 24, 32, 40, 48],
        "itemsize": 56,
    }
)
"""A byte program's per-CPU slot (:func:`sock_bytes`): the traffic key (its first 24 bytes, as
:data:`TRAFFIC_KEY`) this CPU last counted bytes for, the tick count (jiffies) its second is known good
in (0: not known), and the bytes, calls and last wall-clock ns counted since they were last added to
the key's entry in the traffic map."""
_BS = {name: BYTE_SLOT.fields[name][1] for name in BYTE_SLOT.names}
#: byte slots per CPU: sent and read, each for both traffic maps (see :func:`byte_slot`)
BYTE_SLOTS = 4


def byte_slot(direction: int, active: int) -> int:
    """The index of the byte slot of ``direction`` (:data:`DIR_TX` or :data:`DIR_RX`) that goes with
    traffic map ``active``."""
    return (2 if direction == DIR_RX else 0) + active


def sock_span(off: SockOffsets) -> int:
    """Bytes of ``struct sock_common`` holding every address and port (read in one go)."""
    fields = ((off.sk_daddr, 4), (off.sk_rcv_saddr, 4), (off.sk_num, 2), (off.sk_dport, 2), (off.sk_v6_daddr, 16),
              (off.sk_v6_rcv_saddr, 16))  # fmt: skip
    return max((o + n for o, n in fields if o is not None), default=0)


def sock_bytes(tp: Tracepoint, maps: Maps, off: SockOffsets, direction: int, raw: bool = False,
               btf: bool = False, udp_only: bool = False) -> Asm:  # fmt: skip
    """sock/sock_send_length (``DIR_TX``) or sock/sock_recv_length (``DIR_RX``): ``ret`` bytes (when
    > 0, and not a MSG_PEEK read) counted for ``(sk, tgid, second, direction)`` in ``traffic[active]``; an
    AF_INET/AF_INET6 socket only.

    A stream of calls on one socket costs a run a compare and two adds: this CPU's byte slot
    (:data:`BYTE_SLOT`, one per direction and traffic map) holds the key it last counted and sums its
    bytes and calls until another key comes; only then are they added to the key's entry in the map (which
    the slot's first call made, so the map says who and where; the slot's runs have read neither the
    socket nor the clock). A run is a hit when the slot holds its socket and process and the kernel's tick
    count is the one the slot's second is known good in (:func:`_tick_read`'s guarantee: the tick cache
    held that count); anything else is a miss, which reads the second (the tick cache, else the clock).
    A miss with the slot's own key moves the slot on to this tick; one with another key adds the slot to
    its entry and takes the slot over, unless the slot's key was already counted in this tick (two
    sockets taking turns: the slot stays with the first, the others are added to the map directly).

    No atomic add: a slot is written only by its program on its CPU (a program does not run nested on one
    CPU), and while its traffic map is live; the reader takes a slot with its map, after flipping
    ``ctl.active`` and waiting out every run that could still write them, and empties it then.

    Every miss notes a TCP socket's owner in ``owners`` when it is another process (:func:`_note_owner`: for
    retransmits, which the kernel sends from timers). A new key in the map reads the process name and the
    socket's addresses. A full map adds to the overflow array (and leaves the slot empty).

    ``raw``: a ``BPF_PROG_TYPE_RAW_TRACEPOINT`` program (see :func:`raw_sock_bytes_ok`): its input is
    the tracepoint's arguments (``sk``, ``ret``, ``flags``), not the record a perf event builds before
    every run (that costs a send() about as much as the program itself); family and protocol are read
    from the socket. ``btf`` (with ``raw``): a BTF-typed raw tracepoint program (``tp_btf``), whose
    ``sk`` the verifier knows as a ``struct sock *``: family and protocol are plain loads, not helper
    calls.

    ``udp_only``: a UDP socket's calls only (TCP bytes come from the kernel's own counters then,
    :mod:`.tcpcounters`): the socket's protocol is read right after ``ret`` (a plain load with ``btf``) and
    any other socket's call ends there, so a TCP send() or recv() pays the dispatch and a few instructions;
    no owner is noted (that is for TCP retransmits)."""
    assert maps.byte_slots is not None and maps.tick is not None and maps.traffic is not None
    if raw:
        assert off.sk_family is not None and off.sk_protocol is not None
    a = Asm()
    a.mov(R6, R1)
    if raw:
        a.ldx(DW, R7, R6, 8)  # args[1]: int ret
    else:
        a.ldx(W, R7, R6, tp.offset("ret", 4))
    a.lsh(R7, 32).alu64("arsh", R7, 32)  # sign-extend the int
    a.jmp("jsle", R7, 0, "out")  # r7 = bytes

    def load_sk(reg: Reg) -> None:
        a.ldx(DW, reg, R6, 0 if raw else tp.offset("sk", 8))

    def sk_u16(member: int | None, field: str, dst: Reg, via: Reg) -> None:
        """``dst`` = the socket's 2-byte ``member`` (``field`` of the perf tracepoint's record; ``via``: the
        register the socket is loaded in for a BTF load); unreadable: to ``out``."""
        if btf:
            assert member is not None
            load_sk(via)
            a.ldx(H, dst, via, member)
        elif raw:
            assert member is not None
            _read_member(a, load_sk, member, _T_CNT, 2, "out")
            a.ldx(DW, dst, FP, _T_CNT)
        else:
            a.ldx(H, dst, R6, tp.offset(field, 2))

    if udp_only:
        sk_u16(off.sk_protocol, "protocol", R1, R1)
        a.jne(R1, IPPROTO_UDP, "out")
    if direction == DIR_RX:
        if raw:
            a.ldx(DW, R1, R6, 16)  # args[2]: int flags
        else:
            a.ldx(W, R1, R6, tp.offset("flags", 4))
        a.jmp("jset", R1, MSG_PEEK, "out")

    # the socket's port pair (skc_dport, skc_num: one 4-byte word of struct sock_common) tells a connection from
    # the one whose freed memory it took
    ports = off.sk_dport is not None and off.sk_num == off.sk_dport + 2

    def port_pair(slot: int) -> None:
        """*(u32 *)(FP+slot) = the socket's port pair (0 when unreadable)."""
        assert off.sk_dport is not None
        if btf:
            load_sk(R1)
            a.ldx(W, R1, R1, off.sk_dport).stx(W, FP, slot, R1)
            return
        done = _uniq(a, "pp")
        a.st(W, FP, slot, 0)
        load_sk(R3)
        a.add(R3, off.sk_dport)
        _kread(a, slot, 4, R3, done)
        a.label(done)

    # the hit: this CPU's slot for the live map holds this socket and process, in this tick
    _ctl_address(a, maps, R0)
    a.ldx(DW, R1, R0, 0).stx(DW, FP, _T_ACTIVE, R1)
    a.add(R1, byte_slot(direction, 0)).stx(DW, FP, _T_SLOT, R1)
    _byte_slot(a, maps, R9)
    a.call(JIFFIES64)
    a.stx(DW, FP, _T_JIF, R0)
    a.ldx(DW, R1, R9, _BS["jiffies"])
    a.jne(R0, R1, "miss")
    load_sk(R1)
    a.ldx(DW, R2, R9, _BS["sk"])
    a.jne(R1, R2, "miss")
    a.call(GET_CURRENT_PID_TGID)
    a.rsh(R0, 32)
    a.ldx(W, R1, R9, _BS["tgid"])
    a.jne(R0, R1, "miss")
    if ports:  # (the same memory, another socket: a connection made since, in the same tick)
        port_pair(_T_SCR)
        a.ldx(W, R1, FP, _T_SCR)
        a.ldx(W, R2, R9, _BS["ports"])
        a.jne(R1, R2, "miss")
    _slot_add(a)
    a.ja("out")

    # a miss: the socket's family (a slot only ever holds an AF_INET or AF_INET6 socket: read here only)
    a.label("miss")
    sk_u16(off.sk_family, "family", R8, R3)
    # r8 = the socket's family
    a.jeq(R8, AF_INET, "inet")
    a.jne(R8, AF_INET6, "out")
    a.label("inet")
    a.zero_stack(_T_KEY, 24)
    # the second (the map stays the one the slot was chosen for: the clock offset only, from ctl)
    _ctl_address(a, maps, R0)
    a.ldx(DW, R1, R0, 8).stx(DW, FP, _T_WALL, R1)
    _tick_read(a, maps, _T_SCR, _T_WALL, _T_KEY + _TK["second"], "out")
    # still the tick count read first in the tick cache: the second holds for the rest of that tick
    _tick_slot(a, maps, _T_SCR, "out")
    a.ldx(DW, R1, R0, 0)
    a.ldx(DW, R2, FP, _T_JIF)
    a.jeq(R1, R2, "known")
    a.mov(R2, 0)
    a.label("known")
    a.stx(DW, FP, _T_VALID, R2)
    load_sk(R1)
    a.stx(DW, FP, _T_KEY + _TK["sk"], R1)
    a.call(GET_CURRENT_PID_TGID)
    a.rsh(R0, 32).stx(W, FP, _T_KEY + _TK["tgid"], R0)
    a.st(B, FP, _T_KEY + _TK["direction"], direction)
    if ports:
        port_pair(_T_KEY + _TK["ports"])
    if maps.owners is not None and not udp_only:
        _note_owner(a, maps, off, tp, load_sk, raw, btf)
    _byte_slot(a, maps, R9)  # (the tick read used r9)
    a.ldx(DW, R1, R9, _BS["sk"])
    a.jeq(R1, 0, "take")  # an empty slot
    a.ldx(DW, R2, FP, _T_KEY + _TK["sk"])
    a.jne(R1, R2, "other")
    for at in (_BS["tgid"], _BS["direction"]):  # (tgid and second, then direction and ports: a load each)
        a.ldx(DW, R1, R9, at)
        a.ldx(DW, R2, FP, _T_KEY + at)
        a.jne(R1, R2, "other")
    # the slot's own key in a new tick
    a.ldx(DW, R1, FP, _T_VALID).stx(DW, R9, _BS["jiffies"], R1)
    a.ldx(DW, R1, FP, _T_WALL).stx(DW, R9, _BS["last"], R1)
    _slot_add(a)
    a.ja("out")

    def fill(a: Asm, p: str) -> None:
        _process_name(a, off, _T_VAL + _TV["comm"], _T_SCR)
        a.stx(H, FP, _T_VAL + _TV["family"], R8)
        if btf:
            assert off.sk_protocol is not None
            load_sk(R3)
            a.ldx(H, R1, R3, off.sk_protocol).stx(H, FP, _T_VAL + _TV["protocol"], R1)
        elif raw:
            assert off.sk_protocol is not None
            load_sk(R3)
            a.add(R3, off.sk_protocol)
            _kread(a, _T_VAL + _TV["protocol"], 2, R3, f"{p}_proto")  # (the value is zeroed: 0 if unreadable)
            a.label(f"{p}_proto")
        else:
            a.ldx(H, R1, R6, tp.offset("protocol", 2)).stx(H, FP, _T_VAL + _TV["protocol"], R1)
        span = sock_span(off)
        if not (off.addresses and 0 < span <= 128):
            return
        assert off.sk_daddr is not None and off.sk_rcv_saddr is not None and off.sk_num is not None
        assert off.sk_dport is not None and off.sk_v6_daddr is not None and off.sk_v6_rcv_saddr is not None
        load_sk(R3)
        _kread(a, _T_SOCK, span, R3, f"{p}_insert")
        a.ldx(H, R1, FP, _T_SOCK + off.sk_num).stx(H, FP, _T_VAL + _TV["lport"], R1)
        a.ldx(H, R1, FP, _T_SOCK + off.sk_dport).be16(R1).stx(H, FP, _T_VAL + _TV["rport"], R1)
        if off.inet_sport is not None:
            # a TCP socket that reached CLOSE (data still queued after the peer's FIN) has lost its
            # local port number (skc_num = 0); the source port it sent from is still there
            a.st(DW, FP, _T_SCR, 0)
            load_sk(R3)
            a.add(R3, off.inet_sport)
            _kread(a, _T_SCR, 2, R3, f"{p}_sport")
            a.ldx(DW, R1, FP, _T_SCR).be16(R1)
            a.jeq(R1, 0, f"{p}_sport")
            a.stx(H, FP, _T_VAL + _TV["lport"], R1)
            a.label(f"{p}_sport")
        a.jeq(R8, AF_INET6, f"{p}_v6")
        a.ldx(W, R1, FP, _T_SOCK + off.sk_rcv_saddr).stx(W, FP, _T_VAL + _TV["laddr"], R1)
        a.ldx(W, R1, FP, _T_SOCK + off.sk_daddr).stx(W, FP, _T_VAL + _TV["raddr"], R1)
        a.ja(f"{p}_insert")
        a.label(f"{p}_v6")
        for i in (0, 8):
            a.ldx(DW, R1, FP, _T_SOCK + off.sk_v6_rcv_saddr + i).stx(DW, FP, _T_VAL + _TV["laddr"] + i, R1)
            a.ldx(DW, R1, FP, _T_SOCK + off.sk_v6_daddr + i).stx(DW, FP, _T_VAL + _TV["raddr"] + i, R1)

    # another key: the slot's key already counted in this tick keeps the slot (this call goes to the map)
    a.label("other")
    a.ldx(DW, R1, R9, _BS["jiffies"])
    a.jeq(R1, 0, "flush")
    a.ldx(DW, R2, FP, _T_JIF)
    a.jne(R1, R2, "flush")
    _traffic_add(a, maps, direction, fill, prefix="d", keyed=True)
    # else the slot's sums go to its entry, and the slot to this key
    a.label("flush")
    a.ldx(DW, R1, FP, _T_ACTIVE)
    a.jne(R1, 0, "flush1")
    _flush_slot(a, maps, maps.traffic[0], direction, "f0")
    a.label("flush1")
    _flush_slot(a, maps, maps.traffic[1], direction, "f1")
    a.label("take")
    _traffic_add(a, maps, direction, fill, keyed=True, done="taken", full="out")  # (full: the slot stays empty)
    a.label("taken")
    for i in (0, 8, 16):  # (the whole key: direction and ports in its last word)
        a.ldx(DW, R1, FP, _T_KEY + i).stx(DW, R9, i, R1)
    a.ldx(DW, R1, FP, _T_VALID).stx(DW, R9, _BS["jiffies"], R1)
    a.ldx(DW, R1, FP, _T_WALL).stx(DW, R9, _BS["last"], R1)
    a.label("out")
    return a.ret(0)


def _note_owner(a: Asm, maps: Maps, off: SockOffsets, tp: Tracepoint, load_sk: Callable[[Reg], None], raw: bool,
                btf: bool) -> None:  # fmt: skip
    """For :func:`sock_bytes` (a miss: FP+_T_KEY holds the socket and the process): a TCP socket's owner
    (``owners``, who its retransmits are charged to: the kernel sends them from timers and softirqs) is
    the process that moved bytes on it last. Looked up on every miss, written only when it is another
    process (or none yet): a lookup where most misses find their own process. Uses _T_SCR and _T_SOCK
    (24 bytes); keeps r6-r9."""
    assert maps.owners is not None
    done, write = _uniq(a, "own_done"), _uniq(a, "own_write")
    if btf:
        assert off.sk_protocol is not None
        load_sk(R3)
        a.ldx(H, R1, R3, off.sk_protocol)
    elif raw:
        assert off.sk_protocol is not None
        _read_member(a, load_sk, off.sk_protocol, _T_SCR, 2, done)
        a.ldx(DW, R1, FP, _T_SCR)
    else:
        a.ldx(H, R1, R6, tp.offset("protocol", 2))
    a.jne(R1, IPPROTO_TCP, done)  # (only TCP retransmits)
    a.ld_map_fd(R1, maps.owners)
    a.mov(R2, FP).add(R2, _T_KEY + _TK["sk"])
    a.call(MAP_LOOKUP)
    a.jeq(R0, 0, write)
    a.ldx(W, R1, R0, 0)
    a.ldx(W, R2, FP, _T_KEY + _TK["tgid"])
    a.jeq(R1, R2, done)
    a.label(write)
    a.ldx(W, R1, FP, _T_KEY + _TK["tgid"]).stx(DW, FP, _T_SOCK, R1)
    _process_name(a, off, _T_SOCK + 8, _T_SCR)
    _update_from_stack(a, maps.owners, _T_KEY + _TK["sk"], _T_SOCK)
    a.label(done)


#: ld_imm64's source for "the address of a map's value" (uapi BPF_PSEUDO_MAP_VALUE)
_PSEUDO_MAP_VALUE = 2


def _ctl_address(a: Asm, maps: Maps, dst: Reg) -> None:
    """dst = &ctl[0] as a constant the verifier writes into the instruction (``BPF_PSEUDO_MAP_VALUE``: an
    array's value address), instead of :func:`_ctl`'s lookup (a key on the stack, a bounds check, a null
    check): a dozen instructions fewer on every send() and recv()."""
    a.ld_imm64(dst, maps.ctl, _PSEUDO_MAP_VALUE)  # (the second word: offset 0 in the value)


def _byte_slot(a: Asm, maps: Maps, dst: Reg) -> None:
    """dst = this CPU's byte slot number FP+_T_SLOT (jumps to ``out`` if the lookup fails, which an array's
    cannot)."""
    assert maps.byte_slots is not None
    a.ld_map_fd(R1, maps.byte_slots)
    a.mov(R2, FP).add(R2, _T_SLOT)
    a.call(MAP_LOOKUP)
    a.jeq(R0, 0, "out")
    a.mov(dst, R0)


def _slot_add(a: Asm) -> None:
    """The byte slot at r9 += (r7 bytes, 1 call)."""
    a.ldx(DW, R1, R9, _BS["bytes"]).add(R1, R7).stx(DW, R9, _BS["bytes"], R1)
    a.ldx(DW, R1, R9, _BS["calls"]).add(R1, 1).stx(DW, R9, _BS["calls"], R1)


def _flush_slot(a: Asm, maps: Maps, map_fd: int, direction: int, p: str) -> None:
    """The byte slot at r9: its bytes and calls added to its key's entry in ``map_fd`` (which the slot's
    first call made; were it missing, to the overflow array, counted), then emptied. Ends at ``take``."""
    assert maps.traffic_overflow is not None
    a.ld_map_fd(R1, map_fd)
    a.mov(R2, R9)
    a.call(MAP_LOOKUP)
    a.jeq(R0, 0, f"{p}_over")
    a.ldx(DW, R1, R9, _BS["bytes"])
    a.atomic(DW, R0, _TV["bytes"], R1, _ADD)
    a.ldx(DW, R1, R9, _BS["calls"])
    a.atomic(DW, R0, _TV["calls"], R1, _ADD)
    a.ldx(DW, R1, R9, _BS["last"]).stx(DW, R0, _TV["last"], R1)
    a.ja(f"{p}_empty")
    a.label(f"{p}_over")

    def amount(slot: int) -> Reg:
        a.ldx(DW, R1, R9, _BS["calls" if slot else "bytes"])
        return R1

    _traffic_overflow(a, maps, direction, p, amount)
    # (every call the slot summed: traffic_full counts calls, retransmits and connections, one each)
    a.st(W, FP, _T_CNT, CTR["traffic_full"])
    a.ld_map_fd(R1, maps.counters)
    a.mov(R2, FP).add(R2, _T_CNT)
    a.call(MAP_LOOKUP)
    a.jeq(R0, 0, f"{p}_empty")
    a.ldx(DW, R1, R9, _BS["calls"])
    a.atomic(DW, R0, 0, R1, _ADD)
    a.label(f"{p}_empty")
    for name in ("sk", "jiffies", "bytes", "calls"):
        a.st(DW, R9, _BS[name], 0)
    a.ja("take")


def raw_sock_bytes_ok(off: SockOffsets) -> bool:
    """Whether :func:`sock_bytes` can run as a raw tracepoint program (BTF says where the socket's
    family and protocol are, and what the tracepoint passes)."""
    return (off.sk_family is not None and off.sk_protocol is not None and raw_prototype_ok("sock_send_length")
            and raw_prototype_ok("sock_recv_length"))  # fmt: skip


#: errors ``__tcp_retransmit_skb`` (net/ipv4/tcp_output.c) returns before it adds the segments to RetransSegs: the
#: skb still in a host queue (EBUSY), acked meanwhile (EINVAL), no memory to trim or split it (ENOMEM), no route
#: (EHOSTUNREACH), no window (EAGAIN). Any other error came from sending it, after it was counted (a qdisc's
#: drop is NET_XMIT_DROP, 1).
RETRANSMIT_UNCOUNTED = (_errno.EBUSY, _errno.EINVAL, _errno.ENOMEM, _errno.EHOSTUNREACH, _errno.EAGAIN)


def raw_retransmit_ok(off: SockOffsets) -> bool:
    """Whether :func:`tcp_retransmit` can run as a raw tracepoint program (its arguments: sk, skb, err)."""
    fields = (off.sk_family, off.sk_protocol, off.inet_sport)
    return (off.addresses and None not in fields and 0 < sock_span(off) <= _RS_SPAN
            and raw_prototype_ok("tcp_retransmit_skb"))  # fmt: skip


def tcp_retransmit(tp: Tracepoint, maps: Maps, off: SockOffsets, raw: bool = False, btf: bool = False) -> Asm:
    """tcp/tcp_retransmit_skb: a segment the kernel sent again (SYNs included), counted like traffic
    with direction :data:`DIR_RETRANS` (``bytes``: segments, as the kernel's RetransSegs counts them:
    the skb's ``tcp_gso_segs``, 1 when BTF does not say where it is; ``calls``: retransmissions).
    A retransmission that failed once the kernel had counted it (``err``: a qdisc or the device dropped
    it, as RetransSegs and TCPRetransFail both count) is counted; one the kernel gave up on before counting
    it (:data:`RETRANSMIT_UNCOUNTED`; the tracepoint reports those too since Linux 6.17) is not, so the sum
    is the kernel's RetransSegs (SYN-ACKs of a listener aside: another tracepoint). Retransmits run from
    timers and softirqs, never as the socket's process: that is taken from ``conns`` (a connect in
    SYN_SENT) or ``owners`` (set when an outbound connection is established or an inbound one accepted,
    then by the process that last sent or read on it; forgotten when the socket is freed), else none
    (pid 0). Addresses and ports come from the record (the socket, for a program that gets the arguments).

    ``raw``: a raw tracepoint program (see :func:`raw_retransmit_ok`), ``btf`` (with it) a BTF-typed one.
    Not for a cheaper run (retransmits are rare) but for every run: the kernel runs a perf tracepoint program
    only if no other such program (or kprobe) is running on its CPU, so a retransmit sent from a softirq that
    interrupted one (a connect()'s syscall program, say) was skipped — about one in a thousand under load;
    a program that gets the arguments is skipped only when it interrupts itself."""
    f = _Fields(tp, off, raw, btf and raw)
    a = Asm()
    a.mov(R6, R1)
    if raw:
        a.ldx(DW, R1, R6, 16)  # args[2]: int err
    elif "err" in tp.fields:
        a.ldx(W, R1, R6, tp.offset("err", 4))
    if raw or "err" in tp.fields:
        a.lsh(R1, 32).alu64("arsh", R1, 32)  # sign-extend the int
        for code in RETRANSMIT_UNCOUNTED:
            a.jeq(R1, -code, "out")
    a.mov(R7, 1)  # r7 = segments
    if off.skb_cb is not None and off.tcp_gso_segs is not None:
        a.st(DW, FP, _T_SCR, 0)
        a.ldx(DW, R3, R6, 8 if raw else tp.offset("skbaddr", 8)).add(R3, off.skb_cb + off.tcp_gso_segs)
        _kread(a, _T_SCR, 2, R3, "segs_done")
        a.ldx(DW, R1, FP, _T_SCR)
        a.jeq(R1, 0, "segs_done")
        a.mov(R7, R1)
    a.label("segs_done")
    f.read_sock(a)
    _clock(a, maps, _T_SCR, _T_WALL, _T_ACTIVE, _T_RAW, "out")
    a.zero_stack(_T_KEY, 24)
    a.zero_stack(_T_SOCK, 24)  # the owner: tgid, process name
    f.load(a, DW, R1, "skaddr")
    a.stx(DW, FP, _T_KEY + _TK["sk"], R1)
    _conn_find(a, maps, _T_KEY + _TK["sk"], _T_SCR, "not_connecting", f.btf)
    a.ldx(W, R1, R0, _C["key"] + _K["tgid"]).stx(DW, FP, _T_SOCK, R1)
    for i in (0, 8):
        a.ldx(DW, R1, R0, _C["key"] + _K["comm"] + i).stx(DW, FP, _T_SOCK + 8 + i, R1)
    a.ja("owned")
    a.label("not_connecting")
    if maps.owners is not None:
        a.ld_map_fd(R1, maps.owners)
        a.mov(R2, FP).add(R2, _T_KEY + _TK["sk"])
        a.call(MAP_LOOKUP)
        a.jeq(R0, 0, "owned")
        _copy_to_stack(a, R0, 0, _T_SOCK, 24)
    a.label("owned")
    a.ldx(DW, R1, FP, _T_SOCK).stx(W, FP, _T_KEY + _TK["tgid"], R1)

    def fill(a: Asm, p: str) -> None:
        a.st(H, FP, _T_VAL + _TV["protocol"], IPPROTO_TCP)
        _fill_from_record(a, f, p)

    _traffic_add(a, maps, DIR_RETRANS, fill)
    a.label("out")
    return a.ret(0)


def _fill_from_record(a: Asm, f: _Fields, p: str) -> None:
    """A new traffic entry's process name (from _T_SOCK + 8), family, ports and addresses from a TCP
    tracepoint record (tcp_retransmit_skb, inet_sock_set_state: the same field names)."""
    for i in (0, 8):
        a.ldx(DW, R1, FP, _T_SOCK + 8 + i).stx(DW, FP, _T_VAL + _TV["comm"] + i, R1)
    for name, field_ in (("sport", "lport"), ("dport", "rport"), ("family", "family")):
        f.load(a, H, R1, name)
        a.stx(H, FP, _T_VAL + _TV[field_], R1)
    a.jeq(R1, AF_INET6, f"{p}_v6")
    # (the record's addresses are 2-byte aligned: a wider load from the context is refused)
    for name, field_ in (("saddr", "laddr"), ("daddr", "raddr")):
        for i in range(0, 4, 2):
            f.load(a, H, R1, name, i)
            a.stx(H, FP, _T_VAL + _TV[field_] + i, R1)
    a.ja(f"{p}_insert")
    a.label(f"{p}_v6")
    for name, field_ in (("saddr_v6", "laddr"), ("daddr_v6", "raddr")):
        for i in range(0, 16, 2):
            f.load(a, H, R1, name, i)
            a.stx(H, FP, _T_VAL + _TV[field_] + i, R1)


def _traffic_add(a: Asm, maps: Maps, direction: int, fill: Callable[[Asm, str], None], prefix: str = "t",
                 done: str = "out", keyed: bool = False, full: str | None = None) -> None:  # fmt: skip
    """traffic[active][key at _T_KEY] += (r7, 1 call), the key's direction set here, and its second too
    unless ``keyed`` (the caller has set it); ``fill`` writes a new entry's process name, family,
    protocol, addresses and ports (it may jump to ``<prefix>N_insert``). Ends by jumping to ``done``
    (to ``full``, if given, when the map was full and the overflow array took them)."""
    assert maps.traffic is not None
    if not keyed:
        a.ldx(DW, R1, FP, _T_WALL).alu64("div", R1, NS).stx(W, FP, _T_KEY + _TK["second"], R1)
    a.st(B, FP, _T_KEY + _TK["direction"], direction)
    a.ldx(DW, R1, FP, _T_ACTIVE)
    a.jne(R1, 0, f"{prefix}_map1")
    _traffic_into(a, maps.traffic[0], maps, direction, f"{prefix}0", fill, done, full or done)
    a.label(f"{prefix}_map1")
    _traffic_into(a, maps.traffic[1], maps, direction, f"{prefix}1", fill, done, full or done)


def _traffic_into(a: Asm, map_fd: int, maps: Maps, direction: int, p: str, fill: Callable[[Asm, str], None],
                  done: str, full: str) -> None:  # fmt: skip
    assert maps.traffic_overflow is not None
    a.ld_map_fd(R1, map_fd)
    a.mov(R2, FP).add(R2, _T_KEY)
    a.call(MAP_LOOKUP)
    a.jne(R0, 0, f"{p}_add")
    # a new key: what it is, once
    a.zero_stack(_T_VAL, TRAFFIC_VALUE.itemsize)
    a.stx(DW, FP, _T_VAL + _TV["bytes"], R7)
    a.st(DW, FP, _T_VAL + _TV["calls"], 1)
    a.ldx(DW, R1, FP, _T_WALL).stx(DW, FP, _T_VAL + _TV["first"], R1).stx(DW, FP, _T_VAL + _TV["last"], R1)
    fill(a, p)
    a.label(f"{p}_insert")
    a.ld_map_fd(R1, map_fd)
    a.mov(R2, FP).add(R2, _T_KEY)
    a.mov(R3, FP).add(R3, _T_VAL)
    a.mov(R4, BPF_NOEXIST)
    a.call(MAP_UPDATE)
    a.jeq(R0, 0, done)
    a.jne(R0, -_errno.EEXIST, f"{p}_over")  # (another CPU inserted it meanwhile: add to that)
    a.ld_map_fd(R1, map_fd)
    a.mov(R2, FP).add(R2, _T_KEY)
    a.call(MAP_LOOKUP)
    a.jeq(R0, 0, f"{p}_over")
    a.label(f"{p}_add")
    a.atomic(DW, R0, _TV["bytes"], R7, _ADD)
    a.mov(R1, 1)
    a.atomic(DW, R0, _TV["calls"], R1, _ADD)
    a.ldx(DW, R1, FP, _T_WALL).stx(DW, R0, _TV["last"], R1)
    a.ja(done)
    a.label(f"{p}_over")

    def amount(slot: int) -> Reg:
        if slot:
            a.mov(R1, 1)
            return R1
        return R7

    _traffic_overflow(a, maps, direction, p, amount)
    _count(a, maps.counters, "traffic_full", _T_CNT)
    a.ja(full)


def _traffic_overflow(a: Asm, maps: Maps, direction: int, p: str, amount: Callable[[int], Reg]) -> None:
    """traffic_overflow[direction's bytes, calls] += the register ``amount(0)``, ``amount(1)`` load and return."""
    assert maps.traffic_overflow is not None
    for slot in (0, 1):
        skip = f"{p}_of{slot}"
        a.st(W, FP, _T_CNT, (direction - 1) * 2 + slot)
        a.ld_map_fd(R1, maps.traffic_overflow)
        a.mov(R2, FP).add(R2, _T_CNT)
        a.call(MAP_LOOKUP)
        a.jeq(R0, 0, skip)
        a.atomic(DW, R0, 0, amount(slot), _ADD)
        a.label(skip)
