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
from dataclasses import dataclass

from netspy_tui.collector.base import Collector, CollectorStats, Sink
from netspy_tui.collector.ebpf import programs as P
from netspy_tui.collector.ebpf import syscalls, tracefs
from netspy_tui.collector.ebpf.decode import Decoder, Event
from netspy_tui.collector.ebpf.ringbuf import RingBuffer
from netspy_tui.errors import CollectorError

log = logging.getLogger(__name__)

PROCFS_HINT = "run as root or use --collector procfs"
MIN_RING = 1 << 20
_CAP_SYS_ADMIN, _CAP_PERFMON, _CAP_BPF = 21, 38, 39
#: records read per ring pass; a larger backlog is handed to the sink in several batches (bounds the
#: memory a burst's event objects take: ~1 KiB each)
_BATCH = 16384


def _effective_caps() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def _privileged() -> bool:
    if os.geteuid() == 0:
        return True
    caps = _effective_caps()
    return bool(caps >> _CAP_SYS_ADMIN & 1) or bool(caps >> _CAP_BPF & 1 and caps >> _CAP_PERFMON & 1)


@dataclass(frozen=True)
class _Attach:
    name: str
    group: str
    tracepoint: str
    required: bool


_ATTACH = (
    _Attach("connect_enter", "syscalls", "sys_enter_connect", True),
    _Attach("tcp_reset", "tcp", "tcp_receive_reset", False),
    _Attach("tcp_state", "sock", "inet_sock_set_state", True),
    _Attach("skb_drop", "skb", "kfree_skb", False),
    _Attach("connect_exit", "syscalls", "sys_exit_connect", True),
)


class _Session:
    """One start..stop: owns every fd, the mmaps and the reader thread. Holds no reference to the
    collector, so a forgotten collector can be finalised (and its session closed)."""

    def __init__(
        self, stats: CollectorStats, sink: Sink, ring_bytes: int, poll_interval: float, outcome_deadline: float
    ) -> None:
        self.stats = stats
        self.sink = sink
        self.ring_bytes = ring_bytes
        self.poll_interval = poll_interval
        self.outcome_deadline = outcome_deadline
        self.map_fds: list[int] = []
        self.prog_fds: list[int] = []
        self.perf_fds: list[int] = []
        self.loaded: list[tuple[str, int]] = []  # (program name, kernel id)
        self.ring: RingBuffer | None = None
        self.wake_fd = -1
        self.counters_fd = -1
        self.decoder: Decoder | None = None
        self.thread: threading.Thread | None = None
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.closed = False
        self.release_on_exit = False
        self.lost_before = stats.lost  # counts of earlier sessions of the same collector
        self.kernel_lost = 0
        self.dropped = 0  # rejected by the sink, or in a batch that failed to decode
        self.reader_cpu = 0.0
        self.notes: list[str] = []
        self._last_sink_log = 0.0

    # --- loading ----------------------------------------------------------------------------
    def load(self) -> None:
        root = tracefs.find_tracefs()
        tps: dict[str, tracefs.Tracepoint] = {}
        for spec in _ATTACH:
            if spec.required or tracefs.exists(root, spec.group, spec.tracepoint):
                tps[spec.name] = tracefs.tracepoint(root, spec.group, spec.tracepoint)
            else:
                self.notes.append(f"tracepoint {spec.group}/{spec.tracepoint} missing")
        drop_tp = tps.get("skb_drop")
        reasons: dict[int, str] = {}
        if drop_tp is not None:
            reasons = drop_tp.symbols("reason")
            if "reason" not in drop_tp.fields or not reasons:
                self.notes.append("skb/kfree_skb has no drop reasons on this kernel: drops not reported")
                del tps["skb_drop"]
        if "tcp_reset" not in tps:
            self.notes.append("no tcp/tcp_receive_reset: refused non-blocking connects are reported as failed")
        states = {name: value for value, name in tps["tcp_state"].symbols("oldstate").items()}
        for needed in ("TCP_CLOSE", "TCP_SYN_SENT", "TCP_ESTABLISHED"):
            if needed not in states:
                raise CollectorError(
                    f"sock/inet_sock_set_state does not name {needed} on this kernel", "use --collector procfs"
                )
        offsets = P.SockOffsets.from_btf()
        if not offsets.sockinfo:
            self.notes.append("no BTF for sockets: protocol of non-TCP connects is guessed (protocol_inferred)")

        ring = self._map(syscalls.BPF_MAP_TYPE_RINGBUF, 0, 0, self.ring_bytes, "netspy_ring")
        maps = P.Maps(
            ring=ring,
            ring_bytes=self.ring_bytes,
            inflight=self._map(syscalls.BPF_MAP_TYPE_LRU_HASH, 8, P.INFLIGHT_VALUE, 16384, "netspy_inflight"),
            socks=self._map(syscalls.BPF_MAP_TYPE_LRU_HASH, 8, 8, 16384, "netspy_socks"),
            counters=self._map(syscalls.BPF_MAP_TYPE_ARRAY, 4, 8, P.N_COUNTERS, "netspy_counters"),
        )
        self.counters_fd = maps.counters
        by_name = {name: value for value, name in reasons.items()}
        skipped = sorted(by_name[n] for n in P.SKIPPED_DROP_REASONS if n in by_name)
        builders = {
            "connect_enter": lambda tp: P.connect_enter(tp, maps),
            "connect_exit": lambda tp: P.connect_exit(tp, maps, offsets),
            "tcp_state": lambda tp: P.tcp_state(tp, maps, states),
            "tcp_reset": lambda tp: P.tcp_reset(tp, maps),
            "skb_drop": lambda tp: P.skb_drop(tp, maps, offsets, skipped),
        }
        self.ring = RingBuffer(ring, self.ring_bytes, P.RECORD)
        self.wake_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.ring.add_wakeup(self.wake_fd)
        self.decoder = Decoder(reasons, states, self.outcome_deadline)
        # Attach in an order that never loses the start of a connect: state and reset before exit.
        for spec in _ATTACH:
            tp = tps.get(spec.name)
            if tp is not None:
                self._load_and_attach(spec, tp, builders[spec.name](tp).assemble())
        for note in self.notes:
            log.warning("eBPF collector: %s", note)

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
        except syscalls.BpfError as exc:
            hint = PROCFS_HINT if exc.errno in (errno.EPERM, errno.EACCES) else "use --collector procfs"
            raise CollectorError(
                f"cannot open tracepoint {spec.group}/{spec.tracepoint}: {exc.strerror}", hint
            ) from exc
        self.perf_fds.append(perf)
        try:
            syscalls.attach_bpf(perf, prog)
        except syscalls.BpfError as exc:
            raise CollectorError(
                f"cannot attach eBPF program to {spec.group}/{spec.tracepoint}: {exc.strerror}",
                "use --collector procfs",
            ) from exc
        self.loaded.append((spec.name, syscalls.prog_id(prog)))

    # --- reading ----------------------------------------------------------------------------
    def start_reader(self) -> None:
        self.thread = threading.Thread(target=self._run, name="netspy-ebpf-reader", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        assert self.ring is not None
        try:
            while not self.stop_event.is_set():
                self.ring.wait(self.poll_interval)
                self._drain(final=False)
            self._drain(final=True)
        except Exception as exc:  # a bug here must be visible, not a silent dead thread
            log.exception("eBPF reader stopped")
            self.stats.errors += 1
            self.stats.last_error = f"eBPF reader stopped: {exc!r}"
        finally:
            if self.release_on_exit:
                self._release()

    def _drain(self, final: bool) -> None:
        assert self.ring is not None and self.decoder is not None
        while True:
            recs = self.ring.read(_BATCH)
            try:
                events = self.decoder.feed(recs)
                if final and len(recs) < _BATCH:
                    events.extend(self.decoder.expire(everything=True))
            except Exception as exc:  # a decoding bug loses this batch, not the collector
                log.exception("eBPF collector: cannot decode a batch")
                self.dropped += len(recs)
                self._publish_lost()
                self.stats.errors += 1
                self.stats.last_error = f"decode failed: {exc!r}"
                events = []
            self._deliver(events)
            if len(recs) < _BATCH:
                break
        self._count_lost()
        self.reader_cpu = time.thread_time()

    def _deliver(self, events: list[Event]) -> None:
        if not events:
            return
        try:
            self.sink(events)
        except Exception as exc:
            self.dropped += len(events)
            self._publish_lost()  # before the error count: whoever sees the error sees the loss
            self.stats.errors += 1
            self.stats.last_error = f"sink rejected {len(events)} events: {exc!r}"
            now = time.monotonic()
            if now - self._last_sink_log > 10:
                self._last_sink_log = now
                log.error("eBPF collector: sink rejected %d events: %r", len(events), exc, exc_info=exc)
        else:
            self.stats.events += len(events)

    def _count_lost(self) -> None:
        try:
            raw = syscalls.map_lookup(self.counters_fd, P.CTR_RING_FULL.to_bytes(4, "little"), 8)
        except OSError:
            raw = None
        if raw is not None:
            self.kernel_lost = int.from_bytes(raw, "little")
        self._publish_lost()

    def _publish_lost(self) -> None:
        skipped = self.ring.skipped if self.ring is not None else 0
        self.stats.lost = self.lost_before + self.kernel_lost + self.dropped + skipped

    # --- teardown ---------------------------------------------------------------------------
    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        # detach first: nothing new is written, then let the reader drain what is there
        for fd in self.perf_fds:
            syscalls.close_fd(fd)
        self.perf_fds = []
        self.loaded = []
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
                return
            thread.join(timeout=10)
            if thread.is_alive():
                log.error("eBPF reader did not stop within 10 s (sink blocked?); leaving its buffers mapped")
                self._release(keep_ring=True)
                return
        self._release()

    def _release(self, keep_ring: bool = False) -> None:
        if self.ring is not None and not keep_ring:
            self.ring.close()
        for fd in self.prog_fds + self.map_fds:
            syscalls.close_fd(fd)
        self.prog_fds = []
        self.map_fds = []
        if self.wake_fd >= 0:
            syscalls.close_fd(self.wake_fd)
            self.wake_fd = -1


class EbpfCollector(Collector):
    """Every connect() and packet drop on the host, from eBPF tracepoint programs.

    ``ring_bytes``: ring-buffer size, a power of two >= 1 MiB. ``poll_interval``: how often the
    reader drains the ring (seconds; it is also woken early when the ring is a quarter full).
    ``outcome_deadline``: how long a non-blocking connect waits for its TCP outcome before it is
    reported as ``in_progress``.
    """

    name = "ebpf"
    label = "eBPF"
    sampled = False

    def __init__(
        self, ring_bytes: int = 4 << 20, poll_interval: float = 0.05, *, outcome_deadline: float = 3.0
    ) -> None:
        super().__init__()
        if ring_bytes < MIN_RING or ring_bytes & (ring_bytes - 1):
            raise CollectorError(
                f"eBPF ring buffer size {ring_bytes} is not a power of two of at least 1 MiB",
                "use e.g. 4194304 (4 MiB)",
            )
        if not 0 < poll_interval <= 5:
            raise CollectorError(f"eBPF poll interval {poll_interval} s is out of range", "use 0.01 to 5 seconds")
        if not 0 < outcome_deadline <= 600:
            raise CollectorError(f"outcome deadline {outcome_deadline} s is out of range", "use 0.1 to 600 seconds")
        self.ring_bytes = ring_bytes
        self.poll_interval = poll_interval
        self.outcome_deadline = outcome_deadline
        self._session: _Session | None = None
        self._finalizer: weakref.finalize[..., _Session] | None = None
        self._stop.set()  # not running until start()

    def start(self, sink: Sink) -> None:
        if self._session is not None and not self._session.closed:
            raise CollectorError("the eBPF collector is already running", "stop it before starting it again")
        if not sys.platform.startswith("linux"):
            raise CollectorError("the eBPF collector needs Linux", "use --collector procfs or --collector replay")
        if platform.machine() not in ("x86_64", "aarch64"):
            raise CollectorError(f"the eBPF collector does not support {platform.machine()}", "use --collector procfs")
        if not _privileged():
            raise CollectorError("the eBPF collector needs root (or CAP_BPF and CAP_PERFMON)", PROCFS_HINT)
        # stats accumulate over restarts and stay the same object, so holders see the updates
        session = _Session(self.stats, sink, self.ring_bytes, self.poll_interval, self.outcome_deadline)
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
        log.info("eBPF collector started: %s", ", ".join(f"{n} (id {i})" for n, i in session.loaded))

    def stop(self) -> None:
        self._stop.set()
        if self._finalizer is not None:
            self._finalizer()  # runs session.close once
            self._finalizer = None

    def programs(self) -> list[tuple[str, str, str, int | None]]:
        session = self._session
        if session is None or session.closed:
            return []
        return [(name, "tracepoint", "active", prog_id) for name, prog_id in session.loaded]

    @property
    def reader_cpu_seconds(self) -> float:
        """CPU time the reader thread has used so far (decode + sink), for benchmarks."""
        session = self._session
        return session.reader_cpu if session is not None else 0.0

    @property
    def notes(self) -> list[str]:
        """What this kernel cannot do (missing tracepoints, no BTF), as logged at start."""
        session = self._session
        return list(session.notes) if session is not None else []
