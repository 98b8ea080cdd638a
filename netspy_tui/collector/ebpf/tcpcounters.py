"""The kernel's own byte counters of every open TCP socket, read in one pass of a BPF iterator (``iter/tcp``).

A building block for counting TCP bytes without a program on every send() and recv(): the kernel already
sums them per socket (``struct tcp_sock``: ``bytes_acked``, ``bytes_received``, 64-bit), so a pass over
the sockets each drain interval gives their deltas, and the socket's close gives the rest. What the counters
hold, checked against ``TCP_INFO`` on Linux 6.18 (``tests/collector/test_tcp_counters.py``):

- ``bytes_acked`` counts the active opener's SYN (1) and each side's FIN once acknowledged (1);
  ``bytes_received`` counts the peer's FIN (1). Data written but not acknowledged yet is
  ``write_seq - snd_una`` (32-bit sequence arithmetic; the FIN too once queued).

One pass costs ~1 ms of kernel time per few hundred sockets (346 in 1.1 ms here). The program reads the
socket with ``bpf_probe_read_kernel``: no BTF-typed access is needed beyond the iterator's attach point.

A pass reads one network namespace: the one the thread that starts it is in (``bpf_iter_init_seq_net`` takes
``current``'s). The host's other namespaces (containers, ``ip netns``) are found by a scan of every process's
``/proc/PID/ns/net`` and of ``/run/netns`` (:class:`Namespaces`), and each drain a short-lived thread enters each
in turn (``setns``, that thread only) to start its pass.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import numpy as np

from netspy_tui.collector.base import DIR_ACCEPT, DIR_CLOSE, DIR_CONNECT, DIR_RX, DIR_TX
from netspy_tui.collector.ebpf import btf as btf_mod
from netspy_tui.collector.ebpf import programs as P
from netspy_tui.collector.ebpf import syscalls
from netspy_tui.collector.ebpf.asm import DW, FP, R0, R1, R2, R3, R6, R7, Asm, B

log = logging.getLogger(__name__)

PROBE_READ_KERNEL = 113
SEQ_WRITE = 127
#: sk_state values whose sock_common is not a full ``struct tcp_sock`` (or holds no connection): LISTEN,
#: TIME_WAIT, NEW_SYN_RECV
_NOT_CONNECTIONS = (10, 6, 12)

#: bytes of ``struct sock_common`` each record copies (addresses, ports, family, state, flags: offsets from BTF)
COMMON_SPAN = 128
COUNTERS = np.dtype(
    {
        "names": ["sk", "bytes_acked", "bytes_received", "write_seq", "snd_una", "ports", "state", "common"],
        "formats": ["<u8", "<u8", "<u8", "<u4", "<u4", "<u4", "u1", ("u1", (COMMON_SPAN,))],
        "offsets": [0, 8, 16, 24, 28, 32, 36, 40],
        "itemsize": 40 + COMMON_SPAN,
    }
)
"""One socket of a pass: its kernel address, the two 64-bit counters, the send sequence's write end and
unacknowledged start, its port pair as ``sock_common`` holds it (``skc_dport`` network order in the low
half, ``skc_num`` host order in the high half), its TCP state and a copy of the start of its
``sock_common``."""

_REC = -(40 + COMMON_SPAN)  # the record on the stack
_AT: dict[str, int] = dict(
    zip(
        ["sk", "bytes_acked", "bytes_received", "write_seq", "snd_una", "ports", "state", "common"],
        [0, 8, 16, 24, 28, 32, 36, 40],
        strict=True,
    )
)  # COUNTERS' field offsets


#: network namespaces besides the collector's own whose TCP connections are read live (one pass each per drain);
#: the connections of those past it count their bytes when they close (``tcp_netns_unread`` says how many)
MAX_NAMESPACES = 1024
#: seconds between scans for network namespaces: at most this often when a connection seen opening is in no pass
#: (it is in a namespace not found yet), and at least every NETNS_SCAN_EVERY (a vanished namespace let go)
NETNS_RESCAN, NETNS_SCAN_EVERY = 1.0, 5.0


class Namespaces:
    """The host's network namespaces other than the collector's, each with an open fd to enter it, found by a
    scan of ``/proc/PID/ns/net`` (every process's) and ``/run/netns/*`` (``ip netns``'s, perhaps with no process
    yet), deduplicated by the namespace's inode (only files on nsfs are taken: no link in ``/run/netns`` is
    followed). A namespace no scan finds any more is let go (its fd closed: the fd alone would keep it alive),
    unless it is in ``keep`` (connections counted from it may still be open). Bounded by ``limit``: the
    namespaces past it are counted (``unread``, once each as they appear), not read; so are those that could not
    be opened, and those where no pass could start (:meth:`refused`: entering one needs CAP_SYS_ADMIN)."""

    def __init__(self, proc: str = "/proc", run: str = "/run/netns", limit: int | None = None) -> None:
        self.proc, self.run = proc, run
        self.limit = MAX_NAMESPACES if limit is None else limit
        home = os.stat(f"{proc}/thread-self/ns/net")
        self.home, self.nsfs = home.st_ino, home.st_dev  # (every namespace file is on the one nsfs: its st_dev)
        self.fds: dict[int, int] = {}  # inode -> fd
        self.unread = 0
        self._over: set[int] = set()
        self._refused: set[int] = set()
        self._unopened: set[int] = set()
        self.scanned_at = -float("inf")
        self.wanted = True  # a scan at the next chance (the first pass makes one)
        self.keep: set[int] = set()  # namespaces not to let go: connections counted from them may be open

    def _places(self) -> dict[int, str]:
        """inode -> one path that enters it, of every network namespace a process is in or ``ip netns`` named:
        only namespace files (on nsfs), never what a link in ``/run/netns`` points to."""
        found: dict[int, str] = {}
        paths: list[tuple[str, bool]] = []
        try:
            paths += [(f"{self.proc}/{name}/ns/net", True) for name in os.listdir(self.proc) if name.isdigit()]
        except OSError:
            pass
        try:
            paths += [(f"{self.run}/{name}", False) for name in os.listdir(self.run)]
        except OSError:
            pass
        for path, follow in paths:
            try:
                st = os.stat(path, follow_symlinks=follow)  # (/proc/PID/ns/net is a link to follow; nothing else)
            except OSError:
                continue  # gone, or a kernel thread without one
            if st.st_dev == self.nsfs:
                found.setdefault(st.st_ino, path)
        return found

    def scan(self) -> None:
        self.scanned_at, self.wanted = time.monotonic(), False
        places = self._places()
        for ino in [i for i in self.fds if i not in places and i not in self.keep]:
            syscalls.close_fd(self.fds.pop(ino))
        self._refused &= set(self.fds)
        over, unopened = set(), set()
        for ino, path in places.items():
            if ino == self.home or ino in self.fds:
                continue
            if len(self.fds) >= self.limit:
                over.add(ino)
                continue
            flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
            try:
                fd = os.open(path, flags if path.startswith(f"{self.proc}/") else flags | os.O_NOFOLLOW)
            except OSError:
                unopened.add(ino)  # (EMFILE, ...: counted once while it lasts, tried again next scan)
                continue
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (self.nsfs, ino):  # a pid reused since the stat, or a path swapped
                os.close(fd)
                continue
            self.fds[ino] = fd
        self.unread += len(over - self._over) + len(unopened - self._unopened)
        self._over, self._unopened = over, unopened

    def refused(self, ino: int) -> None:
        """No pass could start in namespace ``ino`` (counted in ``unread`` once while it lasts)."""
        if ino not in self._refused:
            self._refused.add(ino)
            self.unread += 1

    def due(self) -> bool:
        since = time.monotonic() - self.scanned_at
        return since >= NETNS_SCAN_EVERY or (self.wanted and since >= NETNS_RESCAN)

    def close(self) -> None:
        for fd in self.fds.values():
            syscalls.close_fd(fd)
        self.fds = {}


def _passes_in(link: int, ns_fds: list[int]) -> tuple[list[bytes | None], list[str]]:
    """A pass of iterator ``link`` in each namespace of ``ns_fds``, read to its end (None for a namespace that
    cannot be entered, or whose pass the kernel refused or could not be read), made by a thread that enters them one
    after another and ends (its namespace dies with it: the caller's own thread never leaves its namespace). Each
    pass is read as soon as it starts, so one iterator fd is open at a time. Also why each missing pass is missing
    (to log from the caller's thread, not from inside a foreign namespace)."""
    data: list[bytes | None] = [None] * len(ns_fds)
    why: list[str] = []

    def start() -> None:
        for j, ns in enumerate(ns_fds):
            try:
                syscalls.setns_net(ns)
                data[j] = syscalls.read_all(syscalls.iter_create(link))
            except Exception as exc:  # one namespace's failure costs that namespace's pass, not the others'
                why.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=start, name="netspy-netns-pass", daemon=True)
    try:
        thread.start()
    except RuntimeError as exc:  # (no thread could be made: no pass outside this namespace this drain)
        return [None] * len(ns_fds), [f"no thread to enter namespaces: {exc}"]
    thread.join()
    return data, why


class TcpCounters:
    """An ``iter/tcp`` program and its link; :meth:`sample` reads every open TCP connection's counters, in every
    network namespace of the host (:class:`Namespaces`).
    Raises :class:`syscalls.BpfError` or :class:`btf_mod.BtfError` when this kernel cannot (no BTF for
    ``tcp_sock``, no ``bpf_iter_tcp``, or iterators refused): the caller then counts bytes another way."""

    def __init__(self, namespaces: Namespaces | None = None) -> None:
        self.namespaces = namespaces if namespaces is not None else Namespaces()
        kbtf = btf_mod.vmlinux()
        fields = {
            "bytes_acked": (kbtf.member("tcp_sock", "bytes_acked"), 8),
            "bytes_received": (kbtf.member("tcp_sock", "bytes_received"), 8),
            "write_seq": (kbtf.member("tcp_sock", "write_seq"), 4),
            "snd_una": (kbtf.member("tcp_sock", "snd_una"), 4),
            "ports": (kbtf.member("sock_common", "skc_dport"), 4),
        }
        num = kbtf.member("sock_common", "skc_num")
        if num.offset != fields["ports"][0].offset + 2:
            raise btf_mod.BtfError("skc_dport and skc_num are not one word here")
        state = kbtf.member("sock_common", "skc_state")
        a = Asm()
        a.mov(R6, R1)
        a.ldx(DW, R7, R6, 8)  # ctx->sk_common (NULL at the end of the pass)
        a.jeq(R7, 0, "out")
        a.zero_stack(_REC, COUNTERS.itemsize)
        a.mov(R1, FP).add(R1, _REC + _AT["state"])
        a.mov(R2, 1)
        a.mov(R3, R7).add(R3, state.offset)
        a.call(PROBE_READ_KERNEL)
        a.ldx(B, R1, FP, _REC + _AT["state"])
        for skip in _NOT_CONNECTIONS:
            a.jeq(R1, skip, "out")
        a.stx(DW, FP, _REC, R7)
        for name, (member, size) in fields.items():
            a.mov(R1, FP).add(R1, _REC + _AT[name])
            a.mov(R2, size)
            a.mov(R3, R7).add(R3, member.offset)
            a.call(PROBE_READ_KERNEL)
        a.mov(R1, FP).add(R1, _REC + _AT["common"])
        a.mov(R2, COMMON_SPAN)
        a.mov(R3, R7)
        a.call(PROBE_READ_KERNEL)
        a.ldx(DW, R1, R6, 0)  # ctx->meta
        a.ldx(DW, R1, R1, 0)  # meta->seq
        a.mov(R2, FP).add(R2, _REC)
        a.mov(R3, COUNTERS.itemsize)
        a.call(SEQ_WRITE)
        a.label("out")
        a.mov(R0, 0).exit()
        self._prog = syscalls.prog_load(syscalls.BPF_PROG_TYPE_TRACING, a.assemble(), "netspy_tcpctr",
                                        attach_type=syscalls.BPF_TRACE_ITER,
                                        attach_btf_id=kbtf.function_id("bpf_iter_tcp"))  # fmt: skip
        try:
            self._link = syscalls.link_create(self._prog, 0, syscalls.BPF_TRACE_ITER)
        except BaseException:
            syscalls.close_fd(self._prog)
            raise

    def sample(self) -> tuple[np.ndarray, np.ndarray, set[int]]:
        """Every open TCP connection's counters now (:data:`COUNTERS`): a pass in this namespace, one in each
        other (scanned for when :meth:`Namespaces.due`); with the namespace (inode) each row came from, and the
        namespaces whose pass was read (a connection of another one may be open though in no row)."""
        ns = self.namespaces
        if ns.due():
            ns.scan()
        data = [syscalls.iter_read(self._link)]
        inos = [ns.home]
        if ns.fds:
            others = list(ns.fds)
            got, why = _passes_in(self._link, [ns.fds[i] for i in others])
            for ino, d in zip(others, got, strict=True):
                if d is None:
                    ns.refused(ino)
                else:
                    data.append(d)
                    inos.append(ino)
            for reason in why:
                log.info("TCP counters: no pass in a network namespace: %s", reason)
        parts = [np.frombuffer(d[: len(d) - len(d) % COUNTERS.itemsize], COUNTERS) for d in data]
        rows = np.concatenate(parts) if len(parts) > 1 else parts[0].copy()
        where = np.repeat(np.array(inos, np.uint64), [len(part) for part in parts])
        return rows, where, set(inos)

    def close(self) -> None:
        for fd in (self._link, self._prog):
            if fd >= 0:
                syscalls.close_fd(fd)
        self._link = self._prog = -1
        self.namespaces.close()


#: live TCP states that had queued this side's FIN (see :data:`programs.FIN_SENT_STATES`)
_FIN_SENT = P.FIN_SENT_STATES
#: a TCP connection: (sk, local port, remote port, remote address)
_Ident = tuple[int, int, int, bytes]
#: connections whose addresses are remembered for a close that a later drain brings (least recent out first)
_REMEMBERED = 65536
#: connections forgotten (missing from two passes of their namespace) whose counted bytes are remembered, so a pass
#: or final that finds one again adds only what grew since (least recent out first: ``forgotten_dropped``)
_FORGOTTEN = 65536


class TcpBytes:
    """TCP bytes per connection from the kernel's own counters, as traffic rows (:data:`P.TRAFFIC_KEY`,
    :data:`P.TRAFFIC_VALUE`) with no program on send() or recv(): each drain, a pass of :class:`TcpCounters` over
    the open connections and the counters of those that closed since (``finals``, kept by the state program)
    give each connection's bytes written and arrived; what grew since the last drain is that drain's row,
    charged to the connection's owner (whoever connected, or the listener that accepted it: ``opened``).

    A connection seen opening is counted from its start (its close exactly: :func:`P.final_bytes`); one open
    before the collector started from its first pass on, charged to the process that held it when the collector
    started (``preexisting``, from :func:`.listeners.scan`; else to no process, pid 0). Its first pass registers
    it in ``opened`` (:data:`P.OPENED_BEFORE_START`), so its close keeps its final counters like any other's and
    is exact; its bytes after its last pass are not counted when it closes (``uncounted_closes`` says how many
    such closes were seen) only where that did not happen: it closed between its first pass and its registration,
    ``opened`` had no room (``room``: how many entries those may hold with the ones seen opening), or its final
    was not kept (``finals_full``)."""

    def __init__(self, counters: TcpCounters, off: P.SockOffsets, opened_fd: int, room: int = 0) -> None:
        self.counters = counters
        self.opened_fd = opened_fd
        self.room = room
        need = (off.sk_daddr, off.sk_rcv_saddr, off.sk_num, off.sk_dport, off.sk_family, off.sk_v6_daddr,
                off.sk_v6_rcv_saddr, off.sk_flags)  # fmt: skip
        if any(o is None for o in need) or max(o for o in need if o is not None) + 16 > COMMON_SPAN:
            raise btf_mod.BtfError("sock_common's addresses are not where a TCP counter pass copies them")
        self.off = off
        # a connection: (sk, local port, remote port, remote address): a socket's memory reused for a connection
        # between the same ports to another address within a drain is another connection
        # connection -> (bytes written, bytes arrived) counted so far
        self.counted: dict[_Ident, tuple[int, int]] = {}
        # connection -> (family, local address): for closes a later drain brings
        self.addresses: dict[_Ident, tuple[int, bytes]] = {}
        self.uncounted_closes = 0
        self.preexisting: dict[tuple[int, bytes, int, bytes, int], tuple[int, bytes]] = {}
        """(family, local address, local port, remote address, remote port) -> (tgid, name) of the connections open
        when the collector started (:attr:`.listeners.Seed.connections`)."""
        self.absent: dict[_Ident, int] = {}  # counted connections missing from the last pass of their namespace
        # counted connection -> (the namespace (inode) of the pass that found it, whether it opened before the start)
        self.origin: dict[_Ident, tuple[int, bool]] = {}
        # connection -> (bytes written, bytes arrived) counted when it was forgotten; and how many the bound let go
        # (a final of one of those would count its bytes since its open again)
        self.forgotten: dict[_Ident, tuple[int, int]] = {}
        self.forgotten_dropped = 0
        self._sought: set[int] = set()  # sks seen opening, in no pass, that already asked for a namespace scan

    def _owners(self) -> dict[int, tuple[int, int, bytes]]:
        """sk -> (tgid, how it opened, process name) of the connections the state program saw opening."""
        raw_keys, raw_values, n = syscalls.map_batch(self.opened_fd, 8, P.OPENED_SIZE, 1 << 16, delete=False)
        keys = np.frombuffer(raw_keys, "<u8")[:n].tolist()
        values = np.frombuffer(raw_values, _OPENED)[:n]
        return dict(zip(keys, zip(values["tgid"].tolist(), values["opened"].tolist(), values["comm"].tolist(),
                                  strict=True), strict=True))  # fmt: skip

    def _register(self, unregistered: list[tuple[int, int, bytes]], held: int) -> None:
        """Registers connections open before the collector started, as a pass found them, in ``opened``
        (:data:`P.OPENED_BEFORE_START`): the state program keeps the final counters of a registered one as it
        closes (and makes no connection row of it), so its bytes since its last pass are counted. ``held``
        entries are there; up to ``room`` may be (the map is an LRU: one more would push out a connection seen
        opening); the rest stay unregistered (tried again next pass, their closes counted as uncounted). One that
        closed since the pass is not found by the state program: its entry stays until its socket's memory opens
        another connection (which replaces it) or the LRU lets it go, and its close is counted as uncounted."""
        if not unregistered or held >= self.room:
            return
        value = np.zeros(1, _OPENED)
        for sk, tgid, comm in unregistered[: self.room - held]:
            value["tgid"], value["opened"], value["comm"] = tgid, P.OPENED_BEFORE_START, comm
            try:
                # (not over an entry the state program made meanwhile: a new connection in that socket's memory)
                syscalls.map_update(self.opened_fd, sk.to_bytes(8, "little"), value.tobytes(), syscalls.BPF_NOEXIST)
            except syscalls.BpfError:
                continue  # (EEXIST; else it stays unregistered: tried again next pass)

    def drain(self, finals: tuple[np.ndarray, np.ndarray], connection_rows: tuple[np.ndarray, np.ndarray] | None,
              now_ns: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """This drain's TCP byte rows: ``finals`` (drained before the traffic map's flip) and a pass now;
        ``connection_rows``: the drained traffic (its connection rows say where a closed connection went)."""
        off = self.off
        if connection_rows is not None:
            keys, values = connection_rows
            is_conn = np.isin(keys["direction"], (DIR_CONNECT, DIR_ACCEPT, DIR_CLOSE))
            for k, v in zip(keys[is_conn], values[is_conn], strict=True):
                ports = int(k["ports"])
                self.addresses[(int(k["sk"]), ports & 0xFFFF, ports >> 16, bytes(v["raddr"]))] = (
                    int(v["family"]), bytes(v["laddr"]))  # fmt: skip
            while len(self.addresses) > _REMEMBERED:
                del self.addresses[next(iter(self.addresses))]
        rows: list[tuple[int, int, int, int, bytes, int, bytes, bytes, int, int]] = []

        def add(ident: _Ident, sent: int, arrived: int, tgid: int, comm: bytes, family: int,
                laddr: bytes, raddr: bytes, first: bool) -> None:  # fmt: skip
            before = self.counted.get(ident)
            if before is None:
                before = self.forgotten.pop(ident, None)
            if before is None:
                if first:  # open before the collector started: counted from now on
                    self.counted[ident] = (sent, arrived)
                    return
                before = (0, 0)
            self.counted[ident] = (sent, arrived)
            for direction, delta in ((DIR_TX, sent - before[0]), (DIR_RX, arrived - before[1])):
                if delta > 0:
                    rows.append((ident[0], tgid, direction, delta, comm, family, laddr, raddr, ident[1], ident[2]))

        owners = self._owners()
        live, where, read = self.counters.sample()
        home = self.counters.namespaces.home
        common = live["common"]
        seen: set[_Ident] = set()
        unregistered: list[tuple[int, int, bytes]] = []  # (sk, tgid, name) of connections from before the start
        if len(live):
            assert off.sk_family is not None and off.sk_flags is not None and off.sk_num is not None
            assert off.sk_dport is not None and off.sk_rcv_saddr is not None and off.sk_daddr is not None
            assert off.sk_v6_rcv_saddr is not None and off.sk_v6_daddr is not None
            family = common[:, off.sk_family : off.sk_family + 2].copy().view("<u2")[:, 0]
            flags = common[:, off.sk_flags : off.sk_flags + 8].copy().view("<u8")[:, 0]
            lport = common[:, off.sk_num : off.sk_num + 2].copy().view("<u2")[:, 0]
            rport = common[:, off.sk_dport : off.sk_dport + 2].copy().view(">u2")[:, 0]
            unacked = (live["write_seq"].astype(np.int64) - live["snd_una"].astype(np.int64)) % (1 << 32)
            fin_sent = np.isin(live["state"], _FIN_SENT).astype(np.int64)
            sent = live["bytes_acked"].astype(np.int64) + unacked - fin_sent
            arrived = live["bytes_received"].astype(np.int64) - ((flags >> P.SOCK_DONE) & 1).astype(np.int64)
            for i, sk in enumerate(live["sk"].tolist()):
                owner = owners.get(sk)
                fam = int(family[i])
                if fam == P.AF_INET:
                    laddr = bytes(common[i, off.sk_rcv_saddr : off.sk_rcv_saddr + 4]) + bytes(12)
                    raddr = bytes(common[i, off.sk_daddr : off.sk_daddr + 4]) + bytes(12)
                else:
                    laddr = bytes(common[i, off.sk_v6_rcv_saddr : off.sk_v6_rcv_saddr + 16])
                    raddr = bytes(common[i, off.sk_v6_daddr : off.sk_v6_daddr + 16])
                ident = (sk, int(lport[i]), int(rport[i]), raddr)
                seen.add(ident)
                before_start = owner is None or owner[1] == P.OPENED_BEFORE_START
                self.origin[ident] = (int(where[i]), before_start)
                self.addresses[ident] = (fam, laddr)
                if owner is None:
                    tgid, comm = self.preexisting.get((fam, laddr, ident[1], raddr, ident[2]), (0, b""))
                    add(ident, int(sent[i]), int(arrived[i]), tgid, comm, fam, laddr, raddr, first=True)
                    unregistered.append((sk, tgid, comm))
                elif before_start:  # (registered by an earlier pass: counted from its first pass, no SYN to take)
                    add(ident, int(sent[i]), int(arrived[i]), owner[0], owner[2], fam, laddr, raddr, first=True)
                else:
                    syn = int(owner[1] == DIR_CONNECT)
                    add(ident, int(sent[i]) - syn, int(arrived[i]), owner[0], owner[2], fam, laddr, raddr, first=False)
        self._register(unregistered, len(owners))
        fkeys, fvalues = finals
        if len(fkeys):
            f_sent, f_arrived = P.final_bytes(fvalues)
            for i, (sk, ports) in enumerate(zip(fkeys["sk"].tolist(), fkeys["ports"].tolist(), strict=True)):
                raddr = bytes(fkeys["raddr"][i])
                ident = (sk, ports & 0xFFFF, ports >> 16, raddr)
                fam, laddr = self.addresses.pop(ident, (0, bytes(16)))
                v = fvalues[i]
                add(ident, int(f_sent[i]), int(f_arrived[i]), int(v["tgid"]), bytes(v["comm"]), fam, laddr, raddr,
                    first=False)  # fmt: skip
                self.counted.pop(ident, None)
                self.absent.pop(ident, None)
                self.origin.pop(ident, None)
                seen.discard(ident)
        # connections that left without a final: one that closed between this drain's finals and its pass has its
        # final in the next drain (kept until then, so its bytes are not counted twice); one open before the
        # collector started has none (forgotten after two passes of its namespace without it, its bytes since its
        # last pass uncounted). One whose namespace had no pass (refused, or no thread) is not judged: it may be open.
        # A forgotten connection's counted bytes are kept (bounded), so one found again adds only what grew since.
        for ident in [i for i in self.counted if i not in seen]:
            ns, before_start = self.origin.get(ident, (home, True))
            if ns not in read:
                continue
            if self.absent.get(ident):
                counted = self.counted.pop(ident)
                del self.absent[ident]
                del self.origin[ident]
                if before_start:  # (no final comes for it)
                    self.uncounted_closes += 1
                else:
                    self.forgotten[ident] = counted
            else:
                self.absent[ident] = 1
        for ident in [i for i in self.absent if i in seen or i not in self.counted]:
            del self.absent[ident]
        while len(self.forgotten) > _FORGOTTEN:
            del self.forgotten[next(iter(self.forgotten))]
            self.forgotten_dropped += 1
        # the namespaces connections were counted from stay read while those are open (let go, a namespace's
        # connections would be missing from the passes and forgotten while open)
        self.counters.namespaces.keep = {ns for ns, _ in self.origin.values()}
        # a connection seen opening that no pass found: in a network namespace not found yet (or it closed since);
        # each asks for one scan (one in a namespace not read, past the bound or refused, would ask every drain)
        unseen = set(owners) - {i[0] for i in seen}
        if unseen - self._sought:
            self.counters.namespaces.wanted = True
        self._sought = unseen
        keys = np.zeros(len(rows), P.TRAFFIC_KEY)
        values = np.zeros(len(rows), P.TRAFFIC_VALUE)
        for j, (sk, tgid, direction, nbytes, comm, fam, laddr, raddr, lp, rp) in enumerate(rows):
            keys[j]["sk"], keys[j]["tgid"], keys[j]["second"], keys[j]["direction"] = (
                sk,
                tgid,
                now_ns // P.NS,
                direction,
            )
            keys[j]["ports"] = lp | rp << 16
            v = values[j]
            v["bytes"], v["calls"], v["first"], v["last"], v["comm"] = nbytes, 0, now_ns, now_ns, comm
            v["laddr"] = np.frombuffer(laddr, "u1")
            v["raddr"] = np.frombuffer(raddr, "u1")
            v["lport"], v["rport"], v["family"], v["protocol"] = lp, rp, fam, P.IPPROTO_TCP
        return keys, values


_OPENED = np.dtype({"names": ["tgid", "opened", "comm", "ktime"], "formats": ["<u4", "<u4", "S16", "<u8"],
                    "offsets": [0, 4, 8, 24], "itemsize": 32})  # fmt: skip
