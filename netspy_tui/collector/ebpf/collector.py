"""EbpfCollector: loads the programs, reads the ring buffer on a thread, hands events to a sink.

Nothing is compiled: programs are assembled in Python (:mod:`.programs`), loaded with bpf(2)
and attached to tracepoints through perf events. Everything the kernel holds for us hangs off
file descriptors; :meth:`EbpfCollector.stop` (also run at interpreter exit and when the
collector is garbage-collected) closes them all, which detaches the programs.
"""

from __future__ import annotations

import errno
import logging
import os
import platform
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from netspy_tui.collector.base import (
    DIR_ACCEPT,
    DIR_CLOSE,
    DIR_CONNECT,
    DIR_RETRANS,
    DIR_RX,
    DIR_TX,
    Batch,
    Collector,
    CollectorStats,
    Sink,
)
from netspy_tui.collector.ebpf import btf as btf_mod
from netspy_tui.collector.ebpf import listeners, syscalls, tracefs
from netspy_tui.collector.ebpf import programs as P
from netspy_tui.collector.ebpf.asm import Asm
from netspy_tui.collector.ebpf.decode import Clock, Codec, Event, random_ids
from netspy_tui.collector.ebpf.ringbuf import RingBuffer
from netspy_tui.collector.ebpf.tcpcounters import TcpBytes, TcpCounters
from netspy_tui.collector.privilege import EBPF_NEEDS_ROOT, EBPF_PRIVILEGE_HINT, ebpf_privileged
from netspy_tui.errors import CollectorError, CollectorSettingError
from netspy_tui.names.workload import kernel_cgroups

log = logging.getLogger(__name__)

PROCFS_HINT = "run as root or use --collector procfs"
MIN_RING = 1 << 20
#: records read per ring pass; a larger backlog is handed to the sink in several batches (bounds the
#: memory a burst's event objects take: ~1 KiB each)
_BATCH = 16384


def _privileged() -> bool:
    return ebpf_privileged()


@dataclass(frozen=True)
class _Attach:
    name: str
    group: str
    tracepoint: str
    required: bool


_COMMON = (
    _Attach("sock_send", "sock", "sock_send_length", False),
    _Attach("sock_recv", "sock", "sock_recv_length", False),
    _Attach("skb_drop", "skb", "kfree_skb", False),
    _Attach("tcp_retransmit", "tcp", "tcp_retransmit_skb", False),
    _Attach("conn_destroy", "tcp", "tcp_destroy_sock", False),
)
_EXIT = _Attach("connect_exit", "syscalls", "sys_exit_connect", True)
_STATE = _Attach("tcp_state", "sock", "inet_sock_set_state", True)
_ENTER = _Attach("connect_enter", "syscalls", "sys_enter_connect", True)
#: an accepted connection's bytes re-charged to the process that accepted it (with the kernel's byte counters)
_ACCEPT = (
    _Attach("accept_exit", "syscalls", "sys_exit_accept4", False),
    _Attach("accept_exit0", "syscalls", "sys_exit_accept", False),
)
#: connect() followed at its exit alone (see :attr:`programs.Maps.exit_only`). Attach order: connect_exit before
#: the state program (every call tcp_state sees starting a connection is seen returning, which takes the
#: thread's mark).
_ATTACH_EXIT_ALONE: tuple[_Attach, ...] = (*_COMMON, _EXIT, _STATE, *_ACCEPT)
#: connect() followed at its entry and exit. Attach order: the state program before connect_exit, and the exit
#: before the entry (no entry is left without its exit).
_ATTACH_ENTRY_AND_EXIT: tuple[_Attach, ...] = (*_COMMON, _STATE, _EXIT, *_ACCEPT, _ENTER)
#: set to 1 (tests and benchmarks only): connect() followed at its entry and exit even where its exit alone would
#: do, to exercise and measure that path
CONNECT_ENTRY_ENV = "NETSPY_EBPF_CONNECT_ENTRY"
#: set to 0: bytes counted by a program on every send() and recv() (each call pays for it) instead of the default,
#: TCP bytes from the kernel's own per-connection counters (a BPF iterator's pass over each network namespace every
#: drain) and UDP bytes from the send() / recv() programs, which return at once for any other socket
#: (:class:`EbpfCollector`'s ``byte_counters``)
BYTE_COUNTERS_ENV = "NETSPY_EBPF_BYTE_COUNTERS"

#: how a program is attached, as :meth:`EbpfCollector.programs` (and ``server_status``) names it:
#: ``tp_btf`` (a BTF-typed tracing program: the tracepoint's arguments, fields read with plain
#: loads), ``raw_tracepoint`` (the arguments, fields read with helper calls), ``tracepoint`` (through
#: a perf event, which builds the trace record before every run: the syscall tracepoints, and every
#: program where the kernel refuses the others), ``fentry`` (a kernel function's entry), ``iter`` (a BPF iterator
#: the reader runs each drain: the TCP counters)
KINDS = ("tp_btf", "raw_tracepoint", "tracepoint", "fentry", "iter")

#: what an optional tracepoint's absence costs (one line in server_status)
_WITHOUT = {
    "sock_send": "bytes sent are not counted (needs Linux 6.3 or later)",
    "sock_recv": "bytes read are not counted (needs Linux 6.3 or later)",
    "skb_drop": "packet drops are not reported",
    "tcp_retransmit": "TCP retransmits are not counted",
    "conn_destroy": "a connect whose handshake end the kernel does not show tcp_state stays in progress",
    "accept_exit": "an accepted connection's bytes are charged to the process that listened",
    "accept_exit0": "an accepted connection's bytes are charged to the process that listened (accept())",
}

#: kernel map sizes: threads that make connect() calls (exit alone: calls that send a SYN; LRU: a thread's entry is
#: kept between its calls, so a call writes it in place instead of inserting and deleting one; entry and exit: a
#: live entry is lost only past 16,384 threads making calls since, counted as ``exit_without_enter``), connections
#: in SYN_SENT, count keys per drain
INFLIGHT_ENTRIES, CONNS_ENTRIES, COUNT_ENTRIES = 16384, 65536, 65536
#: sockets a connect() call left connecting (non-blocking, or interrupted), until their next connect() call
#: (most applications never make one: least recently marked forgotten first)
CONNECTING_ENTRIES = 65536
#: (socket, process, second, direction) keys of traffic per drain
TRAFFIC_ENTRIES = 32768
#: sockets whose owner is remembered for retransmits (least recently used forgotten first)
OWNER_ENTRIES = 65536
#: listening sockets (network namespace, address, port) whose process is remembered (inbound connections are
#: charged to it)
LISTENER_ENTRIES = 16384
#: open TCP connections followed to their close (least recently opened forgotten first)
OPENED_ENTRIES = 65536
#: closed TCP connections whose own counters wait for a drain (:meth:`_Session.drain_finals`)
FINALS_ENTRIES = 16384
#: events a simple (event-list) sink can still update when their outcome arrives
PENDING_EVENTS = 65536
#: raw records the host makes per second, at most, by default (all CPUs together): the raw detail stream stays
#: bounded under a storm (the rest are counted as shed; every count stays exact), and ~50,000 a second is more
#: detail than anyone reads while costing the reader and the store's writer ~1.5 µs of CPU each
RAW_RATE = 50_000
K = TypeVar("K")
V = TypeVar("V")


def _put_bounded(held: OrderedDict[K, V], key: K, value: V) -> None:
    """``held[key] = value``, the oldest entry out past :data:`PENDING_EVENTS`."""
    held[key] = value
    if len(held) > PENDING_EVENTS:
        held.popitem(last=False)


def _take_slots(map_fd: int, index: int, dtype: np.dtype) -> np.ndarray:
    """Every CPU's element ``index`` of the per-CPU array ``map_fd`` (slots no program writes now: the grace
    period of the flip they go with covers them), emptied for their next turn when any holds something."""
    size = dtype.itemsize * syscalls.possible_cpus()
    key = index.to_bytes(4, "little")
    raw = syscalls.map_lookup(map_fd, key, size) or b""
    if raw.strip(b"\0"):
        syscalls.map_update(map_fd, key, bytes(size))
    return np.frombuffer(raw, dtype)


class _Session:
    """One start..stop: owns every fd, the mmaps and the reader thread. Holds no reference to the
    collector, so a forgotten collector can be finalised (and its session closed)."""

    def __init__(
        self, stats: CollectorStats, sink: Sink, ring_bytes: int, poll_interval: float, drain_interval: float,
        raw: int, raw_rate: int = 0,
    ) -> None:  # fmt: skip
        self.stats = stats
        self.sink = sink
        self.batch_sink = getattr(sink, "ingest", None)
        self.ring_bytes = ring_bytes
        self.poll_interval = poll_interval
        self.drain_interval = drain_interval
        self.raw = raw
        self.raw_rate = raw_rate
        self.map_fds: list[int] = []
        self.prog_fds: list[int] = []
        self.perf_fds: list[int] = []
        self.loaded: list[tuple[str, int, int]] = []  # (program name, kernel id, fd)
        self.attach = _ATTACH_EXIT_ALONE  # the programs to attach (set by load: how connect() is followed)
        self.kinds: dict[str, str] = {}  # program name -> how it is attached (see :data:`KINDS`)
        self.maps: P.Maps | None = None
        self.ring: RingBuffer | None = None
        self.wake_fd = -1
        self.codec: Codec | None = None
        self.clock = Clock()
        self.active = 0
        self.thread: threading.Thread | None = None
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.closed = False
        self.release_on_exit = False
        self.counters = [0] * P.N_COUNTERS
        self.skipped_runs: dict[int, int] = {}  # program id -> its runs the kernel skipped (recursion misses), so far
        self.overflow = [0] * P.OVERFLOW_SLOTS
        self.traffic_overflow = [0] * P.TRAFFIC_OVERFLOW_SLOTS
        self.dropped = 0  # rejected by the sink, or in a batch that failed to decode
        self.reader_cpu = 0.0
        self.drained_once = False
        self.notes: list[str] = []
        self.conn_error_at: str | None = None  # where conn_error runs (None: nowhere)
        self.tcp_finals = False  # keep each closing TCP connection's own counters in ``maps.finals``
        self.keep_finals = False  # (tests) keep them even where no reader drains them
        self.per_call_why = ""  # why bytes are counted per call when byte_counters is False
        # TCP bytes from the kernel's counters (:class:`TcpBytes`) where this kernel has them; the programs on
        # sock_send_length / sock_recv_length then count UDP sockets' calls only (``udp_only``)
        self.byte_counters = False
        self.tcp_bytes: TcpBytes | None = None
        self.udp_only = False
        self._counter_programs: list[tuple[str, str, int, int]] = []  # (name, kind, program fd, link or placeholder)
        self._last_sink_log = 0.0
        self._pending: OrderedDict[int, Event] = OrderedDict()
        self._early: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()  # OUTCOMEs before their CONNECT

    # --- loading ----------------------------------------------------------------------------
    def _exit_alone(self, offsets: P.SockOffsets) -> str | None:
        """Why connect() cannot be followed at its exit alone here (None: it can): x86_64, kernel BTF that says
        where the registers and a socket's inode are, and a program reading a task's saved registers
        (``bpf_task_pt_regs``) that the kernel loads — tried, not assumed. Or the test's and bench's
        :data:`CONNECT_ENTRY_ENV`."""
        if os.environ.get(CONNECT_ENTRY_ENV) == "1":
            return f"{CONNECT_ENTRY_ENV}=1"
        if platform.machine() != "x86_64":
            return f"its exit alone needs x86_64 ({platform.machine()} here)"
        if not (offsets.syscall_args and offsets.socket_ino):
            return "kernel BTF does not say where connect()'s arguments and a socket's inode are"
        try:
            prog = syscalls.prog_load(syscalls.BPF_PROG_TYPE_TRACEPOINT, P.pt_regs_probe(offsets).assemble(),
                                      "netspy_probe")  # fmt: skip
        except syscalls.BpfError as exc:
            log.info("eBPF: a program reading a task's saved registers is refused: %s", exc)
            detail = exc.last_log_line or exc.strerror
            return f"this kernel refuses a program reading a task's saved registers ({detail})"
        syscalls.close_fd(prog)
        return None

    def load(self) -> None:
        root = tracefs.find_tracefs()
        offsets = P.SockOffsets.from_btf()
        entry_why = self._exit_alone(offsets)
        if entry_why is not None:
            self.notes.append(f"connect() is followed at its entry and exit (sys_enter_connect too), not its exit "
                              f"alone: {entry_why}")  # fmt: skip
        self.attach = _ATTACH_EXIT_ALONE if entry_why is None else _ATTACH_ENTRY_AND_EXIT
        tps: dict[str, tracefs.Tracepoint] = {}
        for spec in self.attach:
            if spec.required or tracefs.exists(root, spec.group, spec.tracepoint):
                tps[spec.name] = tracefs.tracepoint(root, spec.group, spec.tracepoint)
            else:
                without = _WITHOUT.get(spec.name)
                self.notes.append(f"tracepoint {spec.group}/{spec.tracepoint} missing" + (f": {without}" if without
                                                                                           else ""))  # fmt: skip
        drop_tp = tps.get("skb_drop")
        reasons: dict[int, str] = {}
        if drop_tp is not None:
            reasons = drop_tp.symbols("reason")
            if "reason" not in drop_tp.fields or not reasons:
                self.notes.append("skb/kfree_skb has no drop reasons on this kernel: drops not reported")
                del tps["skb_drop"]
        states = {name: value for value, name in tps["tcp_state"].symbols("oldstate").items()}
        for needed in ("TCP_CLOSE", "TCP_SYN_SENT", "TCP_ESTABLISHED"):
            if needed not in states:
                raise CollectorError(
                    f"sock/inet_sock_set_state does not name {needed} on this kernel", "use --collector procfs"
                )
        attribute = offsets.stack
        if "skb_drop" in tps and not attribute:
            self.notes.append("no BTF for task stacks: packet drops are not attributed to processes")
        if not offsets.sockinfo:
            self.notes.append("no BTF for sockets: protocol of non-TCP connects is guessed (protocol_inferred)")
        if offsets.sk_err is None:
            self.notes.append("no BTF for sk_err: failed TCP handshakes are reported as aborted")
        traffic = any(name in tps for name in ("sock_send", "sock_recv", "tcp_retransmit"))
        if traffic and not offsets.addresses:
            self.notes.append("no BTF for socket addresses: traffic is counted per process without addresses")

        hash_, array, lru = syscalls.BPF_MAP_TYPE_HASH, syscalls.BPF_MAP_TYPE_ARRAY, syscalls.BPF_MAP_TYPE_LRU_HASH
        self.maps = maps = P.Maps(
            ring=self._map(syscalls.BPF_MAP_TYPE_RINGBUF, 0, 0, self.ring_bytes, "netspy_ring"),
            ring_bytes=self.ring_bytes,
            inflight=self._map(lru, 8, P.INFLIGHT.itemsize, INFLIGHT_ENTRIES, "netspy_inflight"),
            conns=self._map(hash_, 8, P.CONN.itemsize, CONNS_ENTRIES, "netspy_conns"),
            conn_slots=self._map(array, 4, P.CONN_SLOT.itemsize, P.CONN_SLOTS, "netspy_conn_slots"),
            counts=(
                self._map(hash_, P.KEY_SIZE, P.VALUE_SIZE, COUNT_ENTRIES, "netspy_counts0"),
                self._map(hash_, P.KEY_SIZE, P.VALUE_SIZE, COUNT_ENTRIES, "netspy_counts1"),
            ),
            overflow=self._map(array, 4, 8, P.OVERFLOW_SLOTS, "netspy_overflow"),
            counters=self._map(array, 4, 8, P.N_COUNTERS, "netspy_counters"),
            ctl=self._map(array, 4, P.CTL.itemsize, 1, "netspy_ctl"),
            connecting=self._map(lru, 8, 8, CONNECTING_ENTRIES, "netspy_recall") if entry_why is None else None,
            cache=self._map(
                syscalls.BPF_MAP_TYPE_PERCPU_ARRAY, 4, P.COUNT_SLOT.itemsize, 2 * P.CACHE_SLOTS, "netspy_cache"
            ),  # fmt: skip
        )
        if traffic:
            maps.traffic = (
                self._map(hash_, P.TRAFFIC_KEY.itemsize, P.TRAFFIC_VALUE.itemsize, TRAFFIC_ENTRIES, "netspy_traffic0"),
                self._map(hash_, P.TRAFFIC_KEY.itemsize, P.TRAFFIC_VALUE.itemsize, TRAFFIC_ENTRIES, "netspy_traffic1"),
            )
            maps.traffic_overflow = self._map(array, 4, 8, P.TRAFFIC_OVERFLOW_SLOTS, "netspy_traffic_of")
            maps.owners = self._map(syscalls.BPF_MAP_TYPE_LRU_HASH, 8, P.OWNER_SIZE, OWNER_ENTRIES, "netspy_owners")
            maps.listeners = self._map(syscalls.BPF_MAP_TYPE_LRU_HASH, P.LISTENER_KEY.itemsize,
                                       P.LISTENER_VALUE.itemsize, LISTENER_ENTRIES, "netspy_listeners")  # fmt: skip
            maps.opened = self._map(syscalls.BPF_MAP_TYPE_LRU_HASH, 8, P.OPENED_SIZE, OPENED_ENTRIES, "netspy_opened")
            if self.tcp_finals and offsets.tcp_counters:
                maps.finals = self._map(hash_, P.FINAL_KEY.itemsize, P.FINAL.itemsize, FINALS_ENTRIES, "netspy_finals")
            # the byte programs' clock cache (one slot per CPU; read and written by the programs only)
            maps.tick = self._map(syscalls.BPF_MAP_TYPE_PERCPU_ARRAY, 4, P.TICK.itemsize, 1, "netspy_tick")
            # the byte programs' last key per CPU and its sums (drained with the traffic map they go with)
            maps.byte_slots = self._map(syscalls.BPF_MAP_TYPE_PERCPU_ARRAY, 4, P.BYTE_SLOT.itemsize, P.BYTE_SLOTS,
                                        "netspy_byteslot")  # fmt: skip
        if self.raw and self.raw_rate:
            maps.budget = self._map(syscalls.BPF_MAP_TYPE_PERCPU_ARRAY, 4, P.BUDGET.itemsize, 1, "netspy_budget")
            maps.host_budget = self._map(array, 4, P.HOST_BUDGET.itemsize, 1, "netspy_hostbud")
            # (per window; a cap that large is no cap in practice)
            maps.budget_cap = min(max(1, self.raw_rate * (1 << P.BUDGET_SHIFT) // P.NS), P.BUDGET_CAP_MAX)
        self._write_ctl()
        # programs that run as raw tracepoint programs (the tracepoint's arguments, no trace record)
        raw_bytes, raw_state, raw_drop = P.raw_sock_bytes_ok(offsets), P.raw_state_ok(offsets), P.raw_drop_ok(offsets)
        raw_destroy = P.raw_prototype_ok("tcp_destroy_sock")
        raw_retransmit = P.raw_retransmit_ok(offsets)
        raw_progs = {name for name, ok in (("sock_send", raw_bytes), ("sock_recv", raw_bytes), ("tcp_state", raw_state),
                                           ("skb_drop", raw_drop), ("conn_destroy", raw_destroy),
                                           ("tcp_retransmit", raw_retransmit)) if ok}  # fmt: skip
        by_name = {name: value for value, name in reasons.items()}
        skipped = sorted(by_name[n] for n in P.SKIPPED_DROP_REASONS if n in by_name)
        # builders by program: (tracepoint, raw) -> program
        builders: dict[str, Callable[[tracefs.Tracepoint, bool], Asm]] = {
            "connect_enter": lambda tp, raw: P.connect_enter(tp, maps, offsets),
            "connect_exit": lambda tp, raw: P.connect_exit(tp, maps, offsets),
            "tcp_state": lambda tp, raw: P.tcp_state(tp, maps, states, offsets, raw=raw),
            "skb_drop": lambda tp, raw: P.skb_drop(tp, maps, offsets, skipped, attribute, raw=raw),
            "sock_send": lambda tp, raw: P.sock_bytes(tp, maps, offsets, DIR_TX, raw=raw, udp_only=self.udp_only),
            "sock_recv": lambda tp, raw: P.sock_bytes(tp, maps, offsets, DIR_RX, raw=raw, udp_only=self.udp_only),
            "tcp_retransmit": lambda tp, raw: P.tcp_retransmit(tp, maps, offsets, raw=raw),
            "conn_destroy": lambda tp, raw: P.conn_destroy(tp, maps, offsets, raw=raw),
            "accept_exit": lambda tp, raw: P.accept_exit(tp, maps, offsets),
            "accept_exit0": lambda tp, raw: P.accept_exit(tp, maps, offsets),
        }
        self.ring = RingBuffer(maps.ring, self.ring_bytes, P.RECORD)
        self.wake_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.ring.add_wakeup(self.wake_fd)
        self.codec = Codec(reasons)
        # the byte counters as BTF-typed programs where the kernel allows (plain loads of the socket's
        # fields instead of helper calls, on every send() and recv()); raw tracepoint programs if not
        typed: dict[str, Callable[[tracefs.Tracepoint], Asm]] = {}
        if raw_bytes:
            typed["sock_send"] = lambda tp: P.sock_bytes(tp, maps, offsets, DIR_TX, raw=True, btf=True,
                                                         udp_only=self.udp_only)  # fmt: skip
            typed["sock_recv"] = lambda tp: P.sock_bytes(tp, maps, offsets, DIR_RX, raw=True, btf=True,
                                                         udp_only=self.udp_only)  # fmt: skip
        if raw_state:
            typed["tcp_state"] = lambda tp: P.tcp_state(tp, maps, states, offsets, raw=True, btf=True)
        if raw_drop:
            typed["skb_drop"] = lambda tp: P.skb_drop(tp, maps, offsets, skipped, attribute, raw=True, btf=True)
        if raw_destroy:
            typed["conn_destroy"] = lambda tp: P.conn_destroy(tp, maps, offsets, raw=True, btf=True)
        if raw_retransmit:
            typed["tcp_retransmit"] = lambda tp: P.tcp_retransmit(tp, maps, offsets, raw=True, btf=True)
        self._attach_conn_error(maps)
        if self.byte_counters and "sock_send" in tps:
            self._use_byte_counters(maps, offsets, tps)
        elif "sock_send" in tps:
            self._per_call(self.per_call_why)
        if self.tcp_bytes is None:  # (per-call byte programs charge whoever reads; nothing to re-charge)
            for name in ("accept_exit", "accept_exit0"):
                tps.pop(name, None)
        for spec in self.attach:
            tp = tps.get(spec.name)
            if tp is None:
                continue
            if spec.name in typed and self._attach_args(spec, typed[spec.name](tp).assemble(), typed=True):
                continue
            if spec.name in raw_progs and self._attach_args(spec, builders[spec.name](tp, True).assemble()):
                continue
            self._load_and_attach(spec, tp, builders[spec.name](tp, False).assemble())
        for name, kind, prog, link in self._counter_programs:
            self.perf_fds.append(link)
            self.loaded.append((name, syscalls.prog_id(prog), prog))
            self.kinds[name] = kind
        self._counter_programs = []
        if maps.listeners is not None and "TCP_LISTEN" in states:
            self._seed_listeners(maps.listeners, offsets)
        for note in self.notes:
            log.warning("eBPF collector: %s", note)

    def _use_byte_counters(self, maps: P.Maps, offsets: P.SockOffsets, tps: dict[str, tracefs.Tracepoint]) -> None:
        """Count TCP bytes from the kernel's own per-socket counters (:class:`TcpBytes`), the programs on
        sock_send_length / sock_recv_length counting UDP sockets' calls only (a TCP call returns after reading
        the socket's protocol); where this kernel lacks the counters, the per-call byte programs count every
        call instead and one note says what is missing."""
        if maps.finals is None or maps.opened is None:
            self._per_call("no BTF for struct tcp_sock's byte counters")
            return
        try:
            counters = TcpCounters()
        except (OSError, btf_mod.BtfError) as exc:
            self._per_call(f"no BPF iterator over TCP sockets ({exc})")
            return
        self.prog_fds.extend((counters._prog, counters._link))  # (closed with the session's programs)
        try:
            # (connections from before the start registered in opened while it is at most half full: room left for
            # the connections that open before the next drain)
            tcp_bytes = TcpBytes(counters, offsets, maps.opened, room=OPENED_ENTRIES // 2)
        except btf_mod.BtfError as exc:
            self._per_call(f"{exc}")
            return
        self.tcp_bytes = tcp_bytes
        self.udp_only = True
        # listed with the others once they are attached (see load): the iterator is run by the reader, attached
        # to nothing (a placeholder where the others' links are)
        self._counter_programs = [
            ("tcp_counters", "iter", counters._prog, os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)),
        ]
        if not (offsets.sockinfo and offsets.socket_sk is not None):  # (accepted connections stay the listener's)
            for name in ("accept_exit", "accept_exit0"):
                tps.pop(name, None)
        log.info("eBPF: TCP bytes from the kernel's per-socket counters, UDP bytes per send() and recv()")

    def _per_call(self, why: str) -> None:
        self.notes.append(f"bytes counted by a program on every send() and recv() (each call pays for it): {why}")
        # no reader drains the closing connections' counters now: the state program keeps none (unless a test
        # asked for them, ``tcp_finals``), else every close would write to a map that fills and stays full
        if self.maps is not None and self.maps.finals is not None and not self.keep_finals:
            fd, self.maps.finals = self.maps.finals, None
            self.map_fds.remove(fd)
            syscalls.close_fd(fd)

    def _seed_listeners(self, map_fd: int, offsets: P.SockOffsets) -> None:
        """The sockets that were listening before the programs were attached, with their owners (see
        :mod:`.listeners`), into the ``listeners`` map. After the attach: a listen() the programs saw since is
        newer and stays (BPF_NOEXIST). A socket that stopped listening between the attach and the scan (a few
        milliseconds) stays listed until that address and port listen and close again, or it is evicted: only a
        wildcard listener on its port would then lose that address's connections to it."""
        if not offsets.netns:
            self.notes.append(
                "no BTF for network namespaces: listeners on one address and port in different "
                "namespaces are not told apart (inbound connections go to the last to listen)"
            )
        seed = listeners.scan(offsets.netns, connections=self.tcp_bytes is not None)
        if self.tcp_bytes is not None:  # (the connections open before the start: whose their bytes are)
            self.tcp_bytes.preexisting = seed.connections
        seeded, failed = 0, 0
        for key, value in zip(seed.keys, seed.values, strict=True):
            try:
                syscalls.map_update(map_fd, key.tobytes(), value.tobytes(), flags=1)  # BPF_NOEXIST
                seeded += 1
            except syscalls.BpfError as exc:
                failed += exc.errno != errno.EEXIST
        self.notes.extend(seed.notes())
        if failed:
            self.notes.append(f"{failed} of the listening TCP sockets that listened before the collector started could "
                              "not be stored with their owners: inbound connections to them are charged to no process "
                              "(pid 0)")  # fmt: skip
        log.info("eBPF: listening TCP sockets from before the start charged to their owners: %d", seeded)

    def _write_ctl(self) -> None:
        assert self.maps is not None
        value = np.zeros(1, P.CTL)
        value["active"], value["offset"], value["raw"] = self.active, self.clock.offset_ns, self.raw
        syscalls.map_update(self.maps.ctl, b"\0\0\0\0", value.tobytes())

    def _map(self, map_type: int, key: int, value: int, entries: int, name: str) -> int:
        try:
            fd = syscalls.map_create(map_type, key, value, entries, name)
        except syscalls.BpfError as exc:
            if exc.errno in (errno.EPERM, errno.EACCES):
                raise CollectorError(
                    f"the kernel does not allow this process to create eBPF maps ({exc.strerror})", PROCFS_HINT
                ) from exc
            raise CollectorError(f"cannot create eBPF map {name}: {exc.strerror}", "use --collector procfs") from exc
        self.map_fds.append(fd)
        return fd

    def _attach_args(self, spec: _Attach, insns: bytes, typed: bool = False) -> bool:
        """Load and attach a program that gets the tracepoint's arguments: a raw tracepoint program,
        or (``typed``) a BTF-typed one (``tp_btf``). False, with nothing left open, when this kernel
        refuses it: the caller falls back to another kind (in the end the perf tracepoint program)."""
        kind = "a BTF-typed" if typed else "a raw tracepoint"
        try:
            if typed:
                type_id = btf_mod.vmlinux().raw_tracepoint_id(spec.tracepoint)
                prog = syscalls.prog_load(syscalls.BPF_PROG_TYPE_TRACING, insns, spec.name,
                                          attach_type=syscalls.BPF_TRACE_RAW_TP, attach_btf_id=type_id)  # fmt: skip
            else:
                prog = syscalls.prog_load(syscalls.BPF_PROG_TYPE_RAW_TRACEPOINT, insns, spec.name)
        except (OSError, btf_mod.BtfError) as exc:
            log.info("eBPF: %s as %s program refused (%s): another kind instead", spec.name, kind, exc)
            return False
        try:
            self._link(spec.name, prog, None if typed else spec.tracepoint, "tp_btf" if typed else "raw_tracepoint")
        except syscalls.BpfError as exc:
            log.info("eBPF: %s as %s program not attached (%s): another kind instead", spec.name, kind, exc)
            return False
        return True

    def _link(self, name: str, prog: int, tracepoint: str | None, kind: str) -> None:
        """Attach loaded program ``prog`` (:func:`syscalls.raw_tracepoint_open`) and keep it as
        ``kind``; on :class:`syscalls.BpfError` it is closed and the error raised."""
        try:
            link = syscalls.raw_tracepoint_open(tracepoint, prog)
        except syscalls.BpfError:
            syscalls.close_fd(prog)
            raise
        self.prog_fds.append(prog)
        self.perf_fds.append(link)
        self.loaded.append((name, syscalls.prog_id(prog), prog))
        self.kinds[name] = kind

    def _attach_conn_error(self, maps: P.Maps) -> None:
        """``conn_error`` (before ``tcp_state``, whose outcomes it makes exact) at the entry of the
        function that closes a TCP socket with an error; one note when the kernel has none or refuses
        it (a failed handshake whose error the application takes while the kernel closes the socket
        is then reported as aborted)."""
        try:
            kbtf = btf_mod.vmlinux()
            args = kbtf.function_args(P.ERROR_FUNCTION)
            if args[:2] != ["struct sock *", "int"]:
                raise btf_mod.BtfError(f"{P.ERROR_FUNCTION}({', '.join(args)}) is not (struct sock *, int)")
            prog = syscalls.prog_load(syscalls.BPF_PROG_TYPE_TRACING, P.conn_error(maps).assemble(), "conn_error",
                                      attach_type=syscalls.BPF_TRACE_FENTRY,
                                      attach_btf_id=kbtf.function_id(P.ERROR_FUNCTION))  # fmt: skip
        except (OSError, btf_mod.BtfError) as exc:
            self._no_conn_error(f"{exc}")
            return
        try:
            self._link("conn_error", prog, None, "fentry")
        except syscalls.BpfError as exc:
            self._no_conn_error(f"{exc}")
            return
        self.conn_error_at = f"fentry {P.ERROR_FUNCTION}"

    def _no_conn_error(self, why: str) -> None:
        log.info("eBPF: conn_error not attached to %s(): %s", P.ERROR_FUNCTION, why)
        self.notes.append(
            f"{P.ERROR_FUNCTION}() cannot be traced here: a failed TCP handshake whose error the application takes "
            "(SO_ERROR) while the kernel closes the socket is reported as aborted"
        )

    def _load_and_attach(self, spec: _Attach, tp: tracefs.Tracepoint, insns: bytes) -> None:
        try:
            prog = syscalls.prog_load(syscalls.BPF_PROG_TYPE_TRACEPOINT, insns, spec.name)
        except syscalls.BpfError as exc:
            if exc.errno == errno.EPERM:
                raise CollectorError(f"not allowed to load eBPF programs ({exc.strerror})", PROCFS_HINT) from exc
            detail = exc.last_log_line or exc.strerror
            raise CollectorError(
                f"the kernel verifier rejected eBPF program {spec.name}: {detail}",
                "use --collector procfs, and report this with your kernel version (uname -r)",
            ) from exc
        self.prog_fds.append(prog)
        try:
            perf = syscalls.perf_event_open_tracepoint(tp.id)
            self.perf_fds.append(perf)
            syscalls.attach_bpf(perf, prog)
        except syscalls.BpfError as exc:
            hint = PROCFS_HINT if exc.errno in (errno.EPERM, errno.EACCES) else "use --collector procfs"
            raise CollectorError(
                f"cannot attach eBPF program {spec.name} to tracepoint {spec.group}/{spec.tracepoint}: {exc.strerror}",
                hint,
            ) from exc
        self.loaded.append((spec.name, syscalls.prog_id(prog), prog))
        self.kinds[spec.name] = "tracepoint"

    # --- reading ----------------------------------------------------------------------------
    def start_reader(self) -> None:
        self.thread = threading.Thread(target=self._run, name="netspy-ebpf-reader", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        assert self.ring is not None
        next_drain = time.monotonic() + self.drain_interval
        try:
            while not self.stop_event.is_set():
                self.ring.wait(max(0.0, min(self.poll_interval, next_drain - time.monotonic())))
                due = time.monotonic() >= next_drain
                if due:
                    next_drain = max(next_drain + self.drain_interval, time.monotonic() + self.drain_interval / 2)
                self._cycle(drain=due)
            self._cycle(drain=True)
        except Exception as exc:  # a bug here must be visible, not a silent dead thread
            log.exception("eBPF reader stopped")
            self.stats.errors += 1
            self.stats.last_error = f"eBPF reader stopped: {exc!r}"
        finally:
            if self.release_on_exit:
                self._release()

    def _cycle(self, drain: bool) -> None:
        """Read the ring; when ``drain``, also drain the counts (after the records, so an
        OUTCOME's count never comes before its CONNECT record was read)."""
        assert self.ring is not None
        chunks = []
        while True:
            recs = self.ring.read(_BATCH)
            if len(recs):
                chunks.append(recs)
            if len(recs) < _BATCH:
                break
            if len(chunks) * _BATCH >= 4 * _BATCH:  # bound memory: hand over what we have
                self._deliver(np.concatenate(chunks), None, {})
                chunks = []
        records = np.concatenate(chunks) if len(chunks) > 1 else (chunks[0] if chunks else None)
        finals = self.drain_finals() if drain and self.tcp_bytes is not None else None
        counts, lost = (self._drain_counts(), self._counter_deltas()) if drain else (None, {})
        traffic = self._drain_traffic() if drain else None
        if finals is not None and self.tcp_bytes is not None:
            uncounted, unread = self.tcp_bytes.uncounted_closes, self.tcp_bytes.counters.namespaces.unread
            dropped = self.tcp_bytes.forgotten_dropped
            more = self.tcp_bytes.drain(finals, traffic, time.time_ns())
            if len(more[0]):
                traffic = more if traffic is None else (np.concatenate([traffic[0], more[0]]),
                                                        np.concatenate([traffic[1], more[1]]))  # fmt: skip
            for cause, n in (
                ("tcp_tail_uncounted", self.tcp_bytes.uncounted_closes - uncounted),
                ("tcp_netns_unread", self.tcp_bytes.counters.namespaces.unread - unread),
                ("tcp_forgotten_dropped", self.tcp_bytes.forgotten_dropped - dropped),
            ):
                if n:
                    lost = {**lost, cause: lost.get(cause, 0) + n}
                    self.stats.losses[cause] = self.stats.losses.get(cause, 0) + n
        if records is not None or counts is not None or lost or traffic is not None:
            self._deliver(records, counts, lost, traffic)
        self.reader_cpu = time.thread_time()

    def _drain_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Flip the live count map, wait until no program can still write the other, drain it."""
        assert self.maps is not None
        idle = self.active
        self.active ^= 1
        self.clock.sync()
        self._write_ctl()
        try:
            syscalls.rcu_barrier()
        except OSError:
            time.sleep(0.01)  # programs run for microseconds: a conservative grace period
        raw_keys, raw_values, n = syscalls.map_batch(
            self.maps.counts[idle], P.KEY_SIZE, P.VALUE_SIZE, COUNT_ENTRIES, delete=True
        )
        keys = np.frombuffer(raw_keys, P.COUNT_KEY)[:n]
        values = np.frombuffer(raw_values, P.COUNT_VALUE)[:n]
        # what each CPU's count cache slots of that map hold (counted in no map yet), emptied for its next turn
        if self.maps.cache is not None:
            for index in range(idle * P.CACHE_SLOTS, (idle + 1) * P.CACHE_SLOTS):
                slots = _take_slots(self.maps.cache, index, P.COUNT_SLOT)
                held = slots[slots["value"]["n"] != 0]
                if len(held):
                    keys, values = np.concatenate([keys, held["key"]]), np.concatenate([values, held["value"]])
        # counts that did not fit: the overflow array, cumulative
        _, raw, m = syscalls.map_batch(self.maps.overflow, 4, 8, P.OVERFLOW_SLOTS, delete=False)
        totals = np.frombuffer(raw, "<i8")[:m].tolist()
        extra = [(i, v - self.overflow[i]) for i, v in enumerate(totals) if v != self.overflow[i]]
        self.overflow[: len(totals)] = totals
        if extra:
            more_k = np.zeros(len(extra), P.COUNT_KEY)
            more_v = np.zeros(len(extra), P.COUNT_VALUE)
            now = time.time_ns()
            for j, (slot, delta) in enumerate(extra):
                kind, result = P.slot_result(slot)
                more_k[j]["kind"], more_k[j]["result"], more_k[j]["second"] = kind, result, now // P.NS
                more_v[j]["n"], more_v[j]["first"], more_v[j]["last"] = delta, now, now
            keys, values = np.concatenate([keys, more_k]), np.concatenate([values, more_v])
        self.stats.counted += int(values["n"].sum()) if len(values) else 0
        return keys, values

    def _drain_traffic(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The idle traffic map (flipped with the counts, by :meth:`_drain_counts`, so the same grace
        period covers it) with the byte slots that go with it, and what went to the overflow array since
        the last drain as keys with no socket (sk 0, tgid 0): totals stay exact when the map was full."""
        assert self.maps is not None
        if self.maps.traffic is None or self.maps.traffic_overflow is None:
            return None
        idle = self.active ^ 1
        raw_keys, raw_values, n = syscalls.map_batch(
            self.maps.traffic[idle], P.TRAFFIC_KEY.itemsize, P.TRAFFIC_VALUE.itemsize, TRAFFIC_ENTRIES, delete=True
        )
        keys = np.frombuffer(raw_keys, P.TRAFFIC_KEY)[:n]
        values = np.frombuffer(raw_values, P.TRAFFIC_VALUE)[:n]
        values, extra = self._add_byte_slots(idle, keys, values)
        _, raw, m = syscalls.map_batch(self.maps.traffic_overflow, 4, 8, P.TRAFFIC_OVERFLOW_SLOTS, delete=False)
        totals = np.frombuffer(raw, "<u8")[:m].tolist()
        for direction in (DIR_RX, DIR_TX, DIR_RETRANS, DIR_ACCEPT, DIR_CONNECT, DIR_CLOSE):
            slot = (direction - 1) * 2
            if slot + 1 < len(totals) and totals[slot] != self.traffic_overflow[slot]:
                extra.append((direction, totals[slot] - self.traffic_overflow[slot],
                              totals[slot + 1] - self.traffic_overflow[slot + 1]))  # fmt: skip
        self.traffic_overflow[: len(totals)] = totals
        if extra:
            more_k = np.zeros(len(extra), P.TRAFFIC_KEY)
            more_v = np.zeros(len(extra), P.TRAFFIC_VALUE)
            now = time.time_ns()
            for j, (direction, nbytes, calls) in enumerate(extra):
                more_k[j]["direction"], more_k[j]["second"] = direction, now // P.NS
                more_v[j]["bytes"], more_v[j]["calls"], more_v[j]["first"], more_v[j]["last"] = nbytes, calls, now, now
            keys, values = np.concatenate([keys, more_k]), np.concatenate([values, more_v])
        return keys, values

    def drain_finals(self) -> tuple[np.ndarray, np.ndarray]:
        """(experiment) The TCP connections that closed since the last call, as the kernel's own counters had
        them then (:data:`P.FINAL_KEY`, :data:`P.FINAL`; :func:`P.final_bytes` makes them bytes)."""
        assert self.maps is not None
        if self.maps.finals is None:
            return np.zeros(0, P.FINAL_KEY), np.zeros(0, P.FINAL)
        raw_keys, raw_values, n = syscalls.map_batch(self.maps.finals, P.FINAL_KEY.itemsize, P.FINAL.itemsize,
                                                     FINALS_ENTRIES, delete=True)  # fmt: skip
        return np.frombuffer(raw_keys, P.FINAL_KEY)[:n].copy(), np.frombuffer(raw_values, P.FINAL)[:n].copy()

    def _add_byte_slots(self, idle: int, keys: np.ndarray, values: np.ndarray
                        ) -> tuple[np.ndarray, list[tuple[int, int, int]]]:  # fmt: skip
        """The byte programs' slots that go with traffic map ``idle`` (:func:`P.sock_bytes`; no program writes
        them now: the grace period of the flip covers them too), each CPU's sums added to its key's row,
        then emptied for the map's next turn. A slot's key has a row (the slot's first call made it), else
        its sums are the overflow's: ``(direction, bytes, calls)`` for :meth:`_drain_traffic`."""
        assert self.maps is not None
        unmatched: list[tuple[int, int, int]] = []
        if self.maps.byte_slots is None:
            return values, unmatched
        for direction in (DIR_TX, DIR_RX):
            slots = _take_slots(self.maps.byte_slots, P.byte_slot(direction, idle), P.BYTE_SLOT)
            for sk, tgid, second, ports, nbytes, calls, last in zip(
                *(slots[name].tolist() for name in ("sk", "tgid", "second", "ports", "bytes", "calls", "last")),
                strict=True,
            ):  # fmt: skip
                if not calls:
                    continue
                row = np.flatnonzero((keys["sk"] == sk) & (keys["tgid"] == tgid) & (keys["second"] == second)
                                     & (keys["direction"] == direction) & (keys["ports"] == ports))  # fmt: skip
                if not len(row):
                    unmatched.append((direction, nbytes, calls))
                    continue
                if not values.flags.writeable:
                    values = values.copy()
                values["bytes"][row[0]] += nbytes
                values["calls"][row[0]] += calls
                values["last"][row[0]] = max(int(values["last"][row[0]]), last)
        return values, unmatched

    def _counter_deltas(self) -> dict[str, int]:
        assert self.maps is not None
        _, raw, m = syscalls.map_batch(self.maps.counters, 4, 8, P.N_COUNTERS, delete=False)
        totals = np.frombuffer(raw, "<u8")[:m].tolist()
        if self.maps.budget is not None:
            # raw records capped: counted per CPU in the budget map (see P._within_budget), summed here
            budgets = syscalls.map_lookup(self.maps.budget, bytes(4), P.BUDGET.itemsize * syscalls.possible_cpus())
            totals[P.CTR["raw_capped"]] = int(np.frombuffer(budgets or b"", P.BUDGET)["capped"].sum())
        out: dict[str, int] = {}
        for i, name in enumerate(P.COUNTERS):
            if i < len(totals) and totals[i] != self.counters[i]:
                if name in P.LOSS_COUNTERS:
                    cause = P.REPORTED_AS.get(name, name)
                    out[cause] = out.get(cause, 0) + totals[i] - self.counters[i]
                self.counters[i] = totals[i]
        # runs the kernel skipped: a program interrupted on its CPU (by a softirq) by an event it also follows
        # is not run for that event (tcp_state during tcp_state, most): what they would have counted is missing
        missed = 0
        for _, prog_id, fd in self.loaded:
            try:
                n = syscalls.prog_run_stats(fd)[2]
            except syscalls.BpfError:  # (closed meanwhile: the session is stopping)
                continue
            if n > self.skipped_runs.get(prog_id, 0):
                missed += n - self.skipped_runs.get(prog_id, 0)
                self.skipped_runs[prog_id] = n
        if missed:
            out["kernel_skipped"] = missed
        if not self.drained_once:
            # connect() calls already running when the programs attached: seen ending, not starting
            self.drained_once = True
            out.pop("exit_without_enter", 0)
        skipped = self.ring.skipped if self.ring is not None else 0
        if skipped:
            out["bad_records"] = skipped
            self.ring.skipped = 0  # type: ignore[union-attr]
        for name, n in out.items():
            self.stats.losses[name] = self.stats.losses.get(name, 0) + n
        self._publish_lost()
        return out

    def _deliver(
        self,
        records: np.ndarray | None,
        counts: tuple[np.ndarray, np.ndarray] | None,
        lost: dict[str, int],
        traffic: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        n = len(records) if records is not None else 0
        if n:
            _note_cgroups(records)  # type: ignore[arg-type]
        try:
            if self.batch_sink is not None:
                self.batch_sink(Batch(records=records, counts=counts, lost=lost, second=time.time_ns() // P.NS,
                                      codec=self.codec, traffic=traffic))  # fmt: skip
            elif n:
                events = self._events(records)  # type: ignore[arg-type]
                if events:
                    self.sink(events)
        except Exception as exc:
            self.dropped += n
            self.stats.losses["sink_rejected"] = self.stats.losses.get("sink_rejected", 0) + n
            self._publish_lost()  # before the error count: whoever sees the error sees the loss
            self.stats.errors += 1
            self.stats.last_error = f"sink rejected {n} events: {exc!r}"
            now = time.monotonic()
            if now - self._last_sink_log > 10:
                self._last_sink_log = now
                log.error("eBPF collector: sink rejected %d events: %r", n, exc, exc_info=exc)
        else:
            self.stats.events += n

    def _events(self, records: np.ndarray) -> list[Event]:
        """For a plain sink: events now, and the same event again (same id) when its outcome comes."""
        assert self.codec is not None
        kind = records["kind"]
        out: list[Event] = []
        fresh = P.pick(records, kind != P.KIND_OUTCOME)
        events = self.codec.events(fresh, random_ids(len(fresh)))
        pending = (fresh["flags"] & P.F_PENDING) != 0
        keys = fresh["key"].tolist()
        starts = fresh["ts"].tolist()  # (a connection's CONNECT and OUTCOME records share it)
        by_pos = iter(events)
        outcome_at = iter(np.flatnonzero(kind == P.KIND_OUTCOME).tolist())
        next_outcome = next(outcome_at, None)
        fresh_pos = 0
        for i in range(len(records)):
            if i == next_outcome:
                rec = records[i : i + 1]
                old = self._pending.pop(int(rec["key"][0]), None)
                if old is not None:
                    out.append(self._with_outcome(old, rec))
                else:
                    # its CONNECT record is still to come: connect_exit and tcp_state hand off through
                    # the conns flags, then each reserves its record, and the second can reserve first
                    _put_bounded(self._early, (int(rec["key"][0]), int(rec["ts"][0])), rec)
                next_outcome = next(outcome_at, None)
                continue
            event, pos = next(by_pos), fresh_pos
            fresh_pos += 1
            out.append(event)
            if not pending[pos]:
                continue
            early = self._early.pop((keys[pos], starts[pos]), None) if self._early else None
            if early is not None:
                out.append(self._with_outcome(event, early))
            else:
                _put_bounded(self._pending, keys[pos], event)
        return out

    def _with_outcome(self, event: Event, outcome: np.ndarray) -> Event:
        """``event`` again (same id) with the outcome its OUTCOME record (one record) carries."""
        assert self.codec is not None
        new = self.codec.events(outcome, [event.id])[0]
        return event.model_copy(update={"outcome": new.outcome})

    def _publish_lost(self) -> None:
        self.stats.lost = sum(self.stats.losses.get(k, 0) for k in ("ring_full", "sink_rejected", "bad_records"))

    def kernel_counters(self) -> dict[str, int]:
        """Every kernel counter's total in this session."""
        return {name: self.counters[i] for i, name in enumerate(P.COUNTERS)}

    def tracked(self) -> dict[str, int]:
        """Entries currently held in the maps that follow connect() calls and connections."""
        if self.maps is None or self.closed:
            return {"inflight": 0, "conns": 0}
        return {"inflight": self._calls_in_flight(), "conns": len(self.connections())}

    def connections(self) -> np.ndarray:
        """The conns values of the connections the kernel follows now (in their slots or the hash map)."""
        assert self.maps is not None
        _, raw, n = syscalls.map_batch(self.maps.conn_slots, 4, P.CONN_SLOT.itemsize, P.CONN_SLOTS, delete=False)
        slots = np.frombuffer(raw, P.CONN_SLOT)[:n]
        _, raw, m = syscalls.map_batch(self.maps.conns, 8, P.CONN.itemsize, CONNS_ENTRIES, delete=False)
        return np.concatenate([slots[slots["sk"] != 0]["conn"], np.frombuffer(raw, P.CONN)[:m]])

    def _calls_in_flight(self) -> int:
        """Threads in a connect() call (exit alone: one that started a connection): their ``inflight`` entries
        holding its socket (exit alone) or marked live (entry and exit). A thread's entry stays between its
        calls."""
        assert self.maps is not None
        _, raw, n = syscalls.map_batch(self.maps.inflight, 8, P.INFLIGHT.itemsize, INFLIGHT_ENTRIES, delete=False)
        entries = np.frombuffer(raw, P.INFLIGHT)[:n]
        if self.maps.exit_only:
            return int(np.count_nonzero(entries["sk"]))
        return int(np.count_nonzero(entries["flags"] & P.IF_LIVE))

    def program_stats(self) -> list[tuple[str, int, int, int]]:
        """(program, run_time_ns, run_cnt, recursion_misses) of each loaded program."""
        return [(name, *syscalls.prog_run_stats(fd)) for name, _, fd in self.loaded]

    # --- teardown ---------------------------------------------------------------------------
    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        # detach first: nothing new is written, then let the reader drain what is there
        _close_together(self.perf_fds + [link for *_, link in self._counter_programs])  # (a load that failed)
        self.perf_fds, self._counter_programs = [], []
        self.stop_event.set()
        if self.wake_fd >= 0:
            try:
                os.eventfd_write(self.wake_fd, 1)
            except OSError:
                pass
        thread = self.thread
        if thread is not None and thread.is_alive():
            if thread is threading.current_thread():
                # stop() called from the sink: the reader releases everything when it returns
                self.release_on_exit = True
                self.loaded = []
                return
            thread.join(timeout=10)
            if thread.is_alive():
                log.error("eBPF reader did not stop within 10 s (sink blocked?); leaving its buffers mapped")
                self._release(keep_ring=True)
                return
        self._release()

    def _release(self, keep_ring: bool = False) -> None:
        self.loaded = []
        if self.tcp_bytes is not None:
            self.tcp_bytes.counters.namespaces.close()
        if self.ring is not None and not keep_ring:
            self.ring.close()
        for fd in self.prog_fds + self.map_fds:
            syscalls.close_fd(fd)
        self.prog_fds = []
        self.map_fds = []
        if self.wake_fd >= 0:
            syscalls.close_fd(self.wake_fd)
            self.wake_fd = -1


def _note_cgroups(records: np.ndarray) -> None:
    """Tell the workload resolver which cgroup each process connected (or dropped a packet) from: the
    last id of each pid in the batch (the kernel read it; the process may be gone before anyone
    reads its ``/proc`` entry)."""
    cgroups = P.record_cgroups(records)
    known = cgroups != 0
    if not known.any():
        return
    pids, ids = records["pid"][known][::-1], cgroups[known][::-1]
    _, last = np.unique(pids, return_index=True)
    kernel_cgroups().note(zip(pids[last].tolist(), ids[last].tolist(), strict=True))


def _close_together(fds: list[int]) -> None:
    """Close tracepoint attachments at once: each close waits for an RCU grace period in the
    kernel (~17 ms here), and closes made together share one (29 one by one took 0.5 s of every
    dashboard quit; together they take about one)."""
    if len(fds) <= 1:
        for fd in fds:
            syscalls.close_fd(fd)
        return
    threads = [threading.Thread(target=syscalls.close_fd, args=(fd,), name="netspy-detach", daemon=True) for fd in fds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _env_switch(var: str, default: bool) -> bool:
    """An on/off setting from environment variable ``var`` (unset or empty: ``default``); any value but
    1/true/yes/on or 0/false/no/off is refused."""
    value = os.environ.get(var, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise CollectorSettingError(
        f"{var}={os.environ[var]!r} is not an on/off setting", f"set {var} to 1 or 0 (or unset it)"
    )


class EbpfCollector(Collector):
    """Every connect() and packet drop on the host, from eBPF tracepoint programs.

    ``ring_bytes``: ring-buffer size, a power of two >= 1 MiB. ``poll_interval``: how often the
    reader reads the ring (seconds; it is also woken early when the ring is a quarter full).
    ``drain_interval``: how often the kernel's counts are drained. ``raw_connects`` /
    ``raw_drops``: whether the kernel writes a raw record per connect / drop (counts are kept
    either way). ``raw_rate``: raw records the host makes per second at most, all CPUs together (0: no
    cap); the ones over it are counted as shed, their counts kept. ``byte_counters``: TCP bytes from the kernel's
    own per-socket counters (read each drain and when a connection closes), the programs on sock_send_length /
    sock_recv_length counting UDP sockets' calls only (a TCP call leaves them after one load); where the kernel
    lacks the counters, or with False, those programs count every call, TCP's too. None (the default): True unless
    :data:`BYTE_COUNTERS_ENV` is 0. The kernel's TCP iterator reads one network namespace a pass: one pass in each
    of the host's namespaces (:class:`.tcpcounters.Namespaces`).
    ``tcp_finals`` (tests): keep each closing TCP connection's counters for :meth:`drain_tcp_finals` without counting
    bytes from them.
    """

    name = "ebpf"
    label = "eBPF"
    sampled = False

    def __init__(
        self,
        ring_bytes: int = 4 << 20,
        poll_interval: float = 0.05,
        *,
        drain_interval: float = 1.0,
        raw_connects: bool = True,
        raw_drops: bool = True,
        raw_rate: int = RAW_RATE,
        byte_counters: bool | None = None,
        tcp_finals: bool = False,
    ) -> None:
        super().__init__()
        if ring_bytes < MIN_RING or ring_bytes & (ring_bytes - 1):
            raise CollectorError(
                f"eBPF ring buffer size {ring_bytes} is not a power of two of at least 1 MiB",
                "use e.g. 4194304 (4 MiB)",
            )
        if not 0 < poll_interval <= 5:
            raise CollectorError(f"eBPF poll interval {poll_interval} s is out of range", "use 0.01 to 5 seconds")
        if not 0.05 <= drain_interval <= 60:
            raise CollectorError(f"count drain interval {drain_interval} s is out of range", "use 0.05 to 60 s")
        self.ring_bytes = ring_bytes
        self.poll_interval = poll_interval
        self.drain_interval = drain_interval
        if raw_rate < 0:
            raise CollectorError(f"raw event rate {raw_rate} a second is negative", "use 0 (no cap) or more")
        self.raw = (P.RAW_CONNECTS if raw_connects else 0) | (P.RAW_DROPS if raw_drops else 0)
        self.raw_rate = raw_rate
        self.tcp_finals = tcp_finals
        self.per_call_why = "the per-call byte programs were asked for"
        if byte_counters is None:
            byte_counters = _env_switch(BYTE_COUNTERS_ENV, default=True)
            self.per_call_why = f"{BYTE_COUNTERS_ENV}={os.environ.get(BYTE_COUNTERS_ENV)}"
        self.byte_counters = byte_counters
        self._session: _Session | None = None
        self._finalizer: weakref.finalize[..., EbpfCollector] | None = None
        self._stop.set()  # not running until start()

    def start(self, sink: Sink) -> None:
        if self._session is not None and not self._session.closed:
            raise CollectorError("the eBPF collector is already running", "stop it before starting it again")
        if not sys.platform.startswith("linux"):
            raise CollectorError("the eBPF collector needs Linux", "use --collector procfs or --collector replay")
        if platform.machine() not in ("x86_64", "aarch64"):
            raise CollectorError(f"the eBPF collector does not support {platform.machine()}", "use --collector procfs")
        if not _privileged():
            raise CollectorError(EBPF_NEEDS_ROOT, EBPF_PRIVILEGE_HINT)
        # stats accumulate over restarts and stay the same object, so holders see the updates
        session = _Session(self.stats, sink, self.ring_bytes, self.poll_interval, self.drain_interval, self.raw,
                           self.raw_rate)  # fmt: skip
        session.tcp_finals = self.tcp_finals or self.byte_counters
        session.keep_finals = self.tcp_finals
        session.per_call_why = self.per_call_why
        session.byte_counters = self.byte_counters
        try:
            session.load()
        except tracefs.TracefsError as exc:
            session.close()
            raise CollectorError(exc.message, exc.hint) from exc
        except CollectorError:
            session.close()
            raise
        except OSError as exc:  # mmap of the ring, eventfd, program info: say so in one line
            session.close()
            raise CollectorError(f"cannot set up the eBPF collector: {exc}", "use --collector procfs") from exc
        except BaseException:
            session.close()
            raise
        session.start_reader()
        self._session = session
        self._finalizer = weakref.finalize(self, session.close)
        self._stop.clear()
        log.info("eBPF collector started: %s", ", ".join(f"{n} (id {i})" for n, i, _ in session.loaded))

    def stop(self) -> None:
        self._stop.set()
        if self._finalizer is not None:
            self._finalizer()  # runs session.close once
            self._finalizer = None

    def programs(self) -> list[tuple[str, str, str, int | None]]:
        session = self._session
        if session is None or session.closed:
            return []
        return [(name, session.kinds.get(name, "tracepoint"), "active", prog_id) for name, prog_id, _ in session.loaded]

    def _live(self) -> _Session | None:
        session = self._session
        return session if session is not None and not session.closed else None

    def kernel_counters(self) -> dict[str, int]:
        """The kernel's loss/skip counters, totals of the current session (all zero when stopped)."""
        session = self._live()
        return session.kernel_counters() if session is not None else {name: 0 for name in P.COUNTERS}

    def error_source(self) -> str | None:
        """Where ``conn_error`` learns the error a failing handshake's socket is closed with (None:
        nowhere on this kernel, see the notes: a race can then report such a handshake as aborted)."""
        session = self._live()
        return session.conn_error_at if session is not None else None

    def drain_tcp_finals(self) -> tuple[np.ndarray, np.ndarray]:
        """(experiment, ``tcp_finals=True``) The TCP connections seen opening that closed since the last call:
        (:data:`P.FINAL_KEY`, :data:`P.FINAL`) as the kernel's own counters had them when they closed; empty when
        stopped, not asked for, or this kernel's BTF does not say where the counters are."""
        session = self._live()
        if session is None:
            return np.zeros(0, P.FINAL_KEY), np.zeros(0, P.FINAL)
        return session.drain_finals()

    def tracked(self) -> dict[str, int]:
        """Entries the kernel maps hold now: connect() calls in flight, connections in SYN_SENT."""
        session = self._live()
        return session.tracked() if session is not None else {"inflight": 0, "conns": 0}

    def program_stats(self) -> list[tuple[str, int, int, int]]:
        """(program, run_time_ns, run_cnt, recursion_misses) per program (run figures need
        ``syscalls.enable_stats()``)."""
        session = self._live()
        return session.program_stats() if session is not None else []

    @property
    def events_made(self) -> int:
        """The connects and drops the kernel counted and were drained since the first start (raw records or not:
        those over the raw rate cap are shed, their counts kept)."""
        return self.stats.counted

    @property
    def reader_cpu_seconds(self) -> float:
        """CPU time the reader thread has used so far (ring reads, count drains, sink), for benchmarks."""
        session = self._session
        return session.reader_cpu if session is not None else 0.0

    @property
    def counts_traffic(self) -> bool:
        """True when bytes per (socket, process) are counted (sock/sock_*_length programs attached, or TCP bytes
        from the kernel's counters)."""
        session = self._live()
        return session is not None and (session.tcp_bytes is not None or any(
            name in ("sock_send", "sock_recv") for name, _, _ in session.loaded))  # fmt: skip

    @property
    def tcp_bytes_from_counters(self) -> bool:
        """True when TCP bytes come from the kernel's counters (the programs on sock_send_length /
        sock_recv_length count UDP sockets' calls only)."""
        session = self._live()
        return session is not None and session.tcp_bytes is not None

    @property
    def notes(self) -> list[str]:
        """What this kernel cannot do (missing tracepoints, no BTF), as logged at start."""
        session = self._session
        return list(session.notes) if session is not None else []
