"""ctypes wrappers for the system calls eBPF needs: bpf(), perf_event_open(), ioctl(), mount().

x86_64 and aarch64 syscall numbers; structures are laid out by hand from the uapi headers
(``linux/bpf.h``, ``linux/perf_event.h``) — only the fields used here, the rest left zero, which
the kernel accepts (it checks that unknown trailing bytes are zero).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import signal
import struct
import threading

_NR = {
    # machine: (bpf, perf_event_open)
    "x86_64": (321, 298),
    "aarch64": (280, 241),
}

BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_NOEXIST = 1  # map_update's flags: only a key not there yet
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_MAP_LOOKUP_BATCH = 24
BPF_MAP_LOOKUP_AND_DELETE_BATCH = 25
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_ENABLE_STATS = 32
BPF_ITER_CREATE = 33
BPF_LINK_CREATE = 28

BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_HASH = 9
BPF_MAP_TYPE_RINGBUF = 27

BPF_STATS_RUN_TIME = 0
_NR_MEMBARRIER = {"x86_64": 324, "aarch64": 283}
MEMBARRIER_CMD_GLOBAL = 1

BPF_PROG_TYPE_TRACEPOINT = 5
BPF_PROG_TYPE_CGROUP_SKB = 8
BPF_PROG_TYPE_RAW_TRACEPOINT = 17
BPF_PROG_TYPE_TRACING = 26
BPF_TRACE_RAW_TP = 23  # expected_attach_type of a BTF-typed raw tracepoint program ("tp_btf")
BPF_TRACE_FENTRY = 24  # expected_attach_type of a program run at a kernel function's entry
BPF_TRACE_ITER = 28  # expected_attach_type of a BPF iterator program (e.g. over TCP sockets: ``bpf_iter_tcp``)
BPF_CGROUP_INET_INGRESS, BPF_CGROUP_INET_EGRESS = 0, 1  # a cgroup_skb program's packets: received, sent

PERF_TYPE_TRACEPOINT = 2
PERF_SAMPLE_RAW = 1 << 10
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_SET_BPF = 0x40042408
PERF_FLAG_FD_CLOEXEC = 1 << 3


@functools.cache
def _libc() -> ctypes.CDLL:
    lib = ctypes.CDLL(None, use_errno=True)
    lib.syscall.restype = ctypes.c_long
    lib.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong]
    lib.ioctl.restype = ctypes.c_int
    lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
    lib.mount.restype = ctypes.c_int
    return lib


class BpfError(OSError):
    """A failed system call; ``log`` holds the verifier log for a rejected program."""

    def __init__(self, err: int, what: str, log: str = "") -> None:
        super().__init__(err, f"{what}: {os.strerror(err)}")
        self.what = what
        self.log = log

    @property
    def last_log_line(self) -> str:
        lines = [line.strip() for line in self.log.splitlines() if line.strip()]
        # the verifier ends with a summary ("processed N insns ..."); the cause is just before it
        for line in reversed(lines):
            if not line.startswith(("processed ", "verification time")):
                return line
        return ""


def _numbers() -> tuple[int, int]:
    machine = platform.machine()
    if machine not in _NR:
        raise BpfError(errno.ENOSYS, f"no syscall numbers for {machine}")
    return _NR[machine]


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char], what: str) -> int:
    nr_bpf, _ = _numbers()
    res = _libc().syscall(ctypes.c_long(nr_bpf), ctypes.c_long(cmd), attr, ctypes.c_ulong(len(attr)))
    if res < 0:
        raise BpfError(ctypes.get_errno(), what)
    return int(res)


def _name(name: str) -> bytes:
    """Object names: at most 15 characters of [A-Za-z0-9_.]."""
    clean = "".join(c if c.isalnum() or c in "_." else "_" for c in name)
    return clean.encode("ascii", "replace")[:15]


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int, name: str, flags: int = 0) -> int:
    """Create a map and return its fd (close-on-exec by default)."""
    attr = ctypes.create_string_buffer(72)
    struct.pack_into("<IIIIIII", attr, 0, map_type, key_size, value_size, max_entries, flags, 0, 0)
    struct.pack_into("16s", attr, 28, _name(name))
    return _bpf(BPF_MAP_CREATE, attr, f"creating map {name}")


@functools.cache
def possible_cpus() -> int:
    """How many CPUs the kernel could bring up: a per-CPU map's value, read from user space, holds one copy
    per possible CPU, in order (``/sys/devices/system/cpu/possible``, e.g. ``0-3`` or ``0,2-5``)."""
    with open("/sys/devices/system/cpu/possible") as f:
        text = f.read().strip()
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


def map_lookup(map_fd: int, key: bytes, value_size: int) -> bytes | None:
    """Read one element; None when the key is absent."""
    key_buf = ctypes.create_string_buffer(key, len(key))
    value_buf = ctypes.create_string_buffer(value_size)
    attr = ctypes.create_string_buffer(32)
    struct.pack_into("<IIQQQ", attr, 0, map_fd, 0, ctypes.addressof(key_buf), ctypes.addressof(value_buf), 0)
    try:
        _bpf(BPF_MAP_LOOKUP_ELEM, attr, "reading map element")
    except BpfError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    return value_buf.raw


def map_update(map_fd: int, key: bytes, value: bytes, flags: int = 0) -> None:
    key_buf = ctypes.create_string_buffer(key, len(key))
    value_buf = ctypes.create_string_buffer(value, len(value))
    attr = ctypes.create_string_buffer(32)
    struct.pack_into("<IIQQQ", attr, 0, map_fd, 0, ctypes.addressof(key_buf), ctypes.addressof(value_buf), flags)
    _bpf(BPF_MAP_UPDATE_ELEM, attr, "writing map element")


def map_next_key(map_fd: int, key: bytes | None, key_size: int) -> bytes | None:
    """The key after ``key`` (the first key when None); None at the end."""
    key_buf = ctypes.create_string_buffer(key, key_size) if key is not None else None
    next_buf = ctypes.create_string_buffer(key_size)
    attr = ctypes.create_string_buffer(32)
    struct.pack_into(
        "<IIQQ", attr, 0, map_fd, 0, ctypes.addressof(key_buf) if key_buf is not None else 0, ctypes.addressof(next_buf)
    )
    try:
        _bpf(BPF_MAP_GET_NEXT_KEY, attr, "walking map keys")
    except BpfError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    return next_buf.raw


def map_count(map_fd: int, key_size: int, limit: int = 1 << 20) -> int:
    """How many keys a hash map holds (walks them; for diagnostics, not hot paths)."""
    n, key = 0, None
    while n < limit:
        key = map_next_key(map_fd, key, key_size)
        if key is None:
            break
        n += 1
    return n


def map_batch(
    map_fd: int, key_size: int, value_size: int, max_entries: int, *, delete: bool
) -> tuple[bytes, bytes, int]:
    """Every element of a map in one or a few calls: ``(keys, values, count)`` as packed bytes.

    ``delete`` uses ``BPF_MAP_LOOKUP_AND_DELETE_BATCH`` (hash maps): exact only when nothing writes
    the map meanwhile. Values of per-CPU maps come back per CPU (``value_size`` must say so).
    """
    keys = _scratch("keys", key_size * max_entries)
    values = _scratch("values", value_size * max_entries)
    token_in = ctypes.create_string_buffer(8)
    token_out = ctypes.create_string_buffer(8)
    cmd = BPF_MAP_LOOKUP_AND_DELETE_BATCH if delete else BPF_MAP_LOOKUP_BATCH
    total, first = 0, True
    while total < max_entries:
        attr = ctypes.create_string_buffer(56)
        struct.pack_into(
            "<QQQQIIQQ", attr, 0,
            0 if first else ctypes.addressof(token_in), ctypes.addressof(token_out),
            ctypes.addressof(keys) + total * key_size, ctypes.addressof(values) + total * value_size,
            max_entries - total, map_fd, 0, 0,
        )  # fmt: skip
        nr_bpf, _ = _numbers()
        res = _libc().syscall(ctypes.c_long(nr_bpf), ctypes.c_long(cmd), attr, ctypes.c_ulong(len(attr)))
        got = struct.unpack_from("<I", attr, 32)[0]
        total += got
        if res < 0:
            err = ctypes.get_errno()
            if err == errno.ENOENT:  # no more elements (the last call may still have returned some)
                break
            raise BpfError(err, "reading map in batches")
        first = False
        token_in.raw = token_out.raw
    return (ctypes.string_at(keys, total * key_size), ctypes.string_at(values, total * value_size), total)


_SCRATCH = threading.local()


def _scratch(name: str, size: int) -> ctypes.Array[ctypes.c_char]:
    """A buffer of at least ``size`` bytes for this thread, kept between calls: a drain copies out
    only what the kernel filled, not megabytes of zeroed buffer each time."""
    buf = getattr(_SCRATCH, name, None)
    if buf is None or len(buf) < size:
        buf = ctypes.create_string_buffer(size)
        setattr(_SCRATCH, name, buf)
    return buf


def enable_stats() -> int:
    """``BPF_ENABLE_STATS`` (run time): while the returned fd is open, programs count run_time_ns/run_cnt."""
    attr = ctypes.create_string_buffer(8)
    struct.pack_into("<I", attr, 0, BPF_STATS_RUN_TIME)
    return _bpf(BPF_ENABLE_STATS, attr, "enabling program statistics")


def prog_run_stats(prog_fd: int) -> tuple[int, int, int]:
    """``(run_time_ns, run_cnt, recursion_misses)`` of a program; the first two count only while
    statistics are enabled, ``recursion_misses`` (runs the kernel skipped) always."""
    info = ctypes.create_string_buffer(256)
    attr = ctypes.create_string_buffer(16)
    struct.pack_into("<IIQ", attr, 0, prog_fd, len(info), ctypes.addressof(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr, "reading program info")
    # struct bpf_prog_info: run_time_ns at 192, run_cnt at 200, recursion_misses at 208 (uapi/linux/bpf.h)
    return struct.unpack_from("<QQQ", info, 192)


def rcu_barrier() -> None:
    """Wait until every eBPF program that was running has returned (``membarrier(GLOBAL)`` is
    ``synchronize_rcu()``; tracepoint programs run inside RCU read-side sections)."""
    nr = _NR_MEMBARRIER.get(platform.machine())
    if nr is None:
        raise BpfError(errno.ENOSYS, "membarrier")
    res = _libc().syscall(ctypes.c_long(nr), ctypes.c_long(MEMBARRIER_CMD_GLOBAL), ctypes.c_long(0), ctypes.c_long(0))
    if res < 0:
        raise BpfError(ctypes.get_errno(), "membarrier")


def prog_load(prog_type: int, insns: bytes, name: str, license: str = "GPL", log_size: int = 1 << 20,
              attach_type: int = 0, attach_btf_id: int = 0) -> int:  # fmt: skip
    """Load a program; on rejection raise :class:`BpfError` carrying the verifier log. ``attach_type``
    and ``attach_btf_id`` (vmlinux BTF): for tracing programs, what they will attach to."""
    insn_buf = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    attempts = [(0, None), (1, ctypes.create_string_buffer(log_size))]
    last: BpfError | None = None
    # First without a log (faster, and no ENOSPC on long logs); on failure again with one.
    for log_level, log_buf in attempts:
        attr = ctypes.create_string_buffer(128)
        struct.pack_into(
            "<IIQQIIQ",
            attr,
            0,
            prog_type,
            len(insns) // 8,
            ctypes.addressof(insn_buf),
            ctypes.addressof(lic),
            log_level,
            log_size if log_buf is not None else 0,
            ctypes.addressof(log_buf) if log_buf is not None else 0,
        )
        struct.pack_into("16s", attr, 48, _name(name))
        struct.pack_into("<I", attr, 68, attach_type)  # expected_attach_type
        struct.pack_into("<I", attr, 108, attach_btf_id)
        try:
            return _load_verified(attr, name)
        except BpfError as exc:
            if log_buf is not None:
                exc.log = log_buf.value.decode("utf-8", "replace")
            last = exc
            if exc.errno == errno.EPERM and log_buf is None:
                # no point asking the verifier for a log: we are not allowed to load at all
                raise
    assert last is not None
    raise last


#: how many times a load the verifier abandoned for a pending signal is tried again (libbpf: 5)
LOAD_ATTEMPTS = 10


def _load_verified(attr: ctypes.Array[ctypes.c_char], name: str) -> int:
    """BPF_PROG_LOAD with this thread's catchable signals blocked: the verifier gives up with EAGAIN
    when a signal is pending (a terminal resize, a child exiting, Ctrl-C, a profiler's stop), and
    the collector would take that for a rejection (fall back to a slower attach, or fail). Blocked
    signals are delivered when the load returns; what blocking cannot hold off (a ptrace stop) is
    retried, as libbpf does."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        for _ in range(LOAD_ATTEMPTS - 1):
            try:
                return _bpf(BPF_PROG_LOAD, attr, f"loading program {name}")
            except BpfError as exc:
                if exc.errno != errno.EAGAIN:
                    raise
        return _bpf(BPF_PROG_LOAD, attr, f"loading program {name}")
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def prog_id(prog_fd: int) -> int:
    """The kernel's id of a loaded program (what ``bpftool prog`` lists)."""
    info = ctypes.create_string_buffer(64)
    attr = ctypes.create_string_buffer(16)
    struct.pack_into("<IIQ", attr, 0, prog_fd, len(info), ctypes.addressof(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr, "reading program info")
    return int(struct.unpack_from("<I", info, 4)[0])


def prog_type(prog_id: int) -> int:
    """The program type (``BPF_PROG_TYPE_*``) of the kernel's program ``prog_id``."""
    attr = ctypes.create_string_buffer(12)
    struct.pack_into("<III", attr, 0, prog_id, 0, 0)
    fd = _bpf(BPF_PROG_GET_FD_BY_ID, attr, f"opening program {prog_id}")
    try:
        info = ctypes.create_string_buffer(64)
        attr = ctypes.create_string_buffer(16)
        struct.pack_into("<IIQ", attr, 0, fd, len(info), ctypes.addressof(info))
        _bpf(BPF_OBJ_GET_INFO_BY_FD, attr, "reading program info")
        return int(struct.unpack_from("<I", info, 0)[0])
    finally:
        os.close(fd)


def prog_exists(prog_id: int) -> bool:
    """True while the kernel still holds program ``prog_id`` (it is freed once detached and closed)."""
    attr = ctypes.create_string_buffer(12)
    struct.pack_into("<III", attr, 0, prog_id, 0, 0)
    try:
        fd = _bpf(BPF_PROG_GET_FD_BY_ID, attr, f"opening program {prog_id}")
    except BpfError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    os.close(fd)
    return True


def perf_event_open_tracepoint(tracepoint_id: int, cpu: int = 0) -> int:
    """Open a perf event on a tracepoint (all processes, one cpu); returns its fd."""
    _, nr_perf = _numbers()
    attr = ctypes.create_string_buffer(112)  # PERF_ATTR_SIZE_VER5
    # type, size, config, sample_period, sample_type, read_format, flags, wakeup_events
    struct.pack_into("<IIQQQQQI", attr, 0, PERF_TYPE_TRACEPOINT, 112, tracepoint_id, 1, PERF_SAMPLE_RAW, 0, 0, 1)
    res = _libc().syscall(
        ctypes.c_long(nr_perf),
        attr,
        ctypes.c_long(-1),
        ctypes.c_long(cpu),
        ctypes.c_long(-1),
        ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC),
    )
    if res < 0:
        raise BpfError(ctypes.get_errno(), f"opening perf event for tracepoint {tracepoint_id}")
    return int(res)


def attach_bpf(perf_fd: int, prog_fd: int) -> None:
    """Attach a program to a tracepoint perf event and enable it."""
    if _libc().ioctl(perf_fd, PERF_EVENT_IOC_SET_BPF, prog_fd) < 0:
        raise BpfError(ctypes.get_errno(), "attaching program to tracepoint")
    if _libc().ioctl(perf_fd, PERF_EVENT_IOC_ENABLE, 0) < 0:
        raise BpfError(ctypes.get_errno(), "enabling tracepoint")


def raw_tracepoint_open(name: str | None, prog_fd: int) -> int:
    """Attach a ``BPF_PROG_TYPE_RAW_TRACEPOINT`` program to the tracepoint ``name`` (no group): it gets
    the tracepoint's arguments as they are (``u64 args[]``), without the trace record a perf event
    builds first. ``name`` None: a tracing program (tp_btf, fentry), which names what it attaches to
    when loaded. Returns the attachment's fd (closing it detaches)."""
    name_buf = ctypes.create_string_buffer(name.encode("ascii")) if name is not None else None
    attr = ctypes.create_string_buffer(16)
    struct.pack_into("<QI", attr, 0, ctypes.addressof(name_buf) if name_buf is not None else 0, prog_fd)
    return _bpf(BPF_RAW_TRACEPOINT_OPEN, attr, f"attaching program to raw tracepoint {name}")


def link_create(prog_fd: int, target_fd: int, attach_type: int) -> int:
    """BPF_LINK_CREATE: attach loaded program ``prog_fd`` as ``attach_type`` to ``target_fd`` (a cgroup
    directory's fd for cgroup programs; 0 for an iterator). Returns the link's fd (closing it detaches)."""
    attr = ctypes.create_string_buffer(64)
    struct.pack_into("<IIII", attr, 0, prog_fd, target_fd, attach_type, 0)
    return _bpf(BPF_LINK_CREATE, attr, f"linking program (attach type {attach_type})")


def iter_create(link_fd: int) -> int:
    """BPF_ITER_CREATE: a new pass of the BPF iterator behind ``link_fd``, as an fd to read to its end. An
    iterator over a network namespace's sockets (``iter/tcp``) reads the namespace of the thread that makes it."""
    attr = ctypes.create_string_buffer(8)
    struct.pack_into("<II", attr, 0, link_fd, 0)
    return _bpf(BPF_ITER_CREATE, attr, "creating an iterator")


def read_all(fd: int, chunk: int = 1 << 16) -> bytes:
    """Everything ``fd`` gives until its end, then ``fd`` closed."""
    parts = []
    try:
        while part := os.read(fd, chunk):
            parts.append(part)
    finally:
        os.close(fd)
    return b"".join(parts)


def iter_read(link_fd: int, chunk: int = 1 << 16) -> bytes:
    """One pass of the BPF iterator behind ``link_fd`` (BPF_ITER_CREATE, read to the end): what its program
    wrote with ``bpf_seq_write``."""
    return read_all(iter_create(link_fd), chunk)


CLONE_NEWNET = 0x40000000


def setns_net(ns_fd: int) -> None:
    """Move the calling thread (only it) into the network namespace ``ns_fd`` (a ``/proc/PID/ns/net`` fd)."""
    if _libc().setns(ctypes.c_int(ns_fd), ctypes.c_int(CLONE_NEWNET)) != 0:
        err = ctypes.get_errno()
        raise BpfError(err, "entering a network namespace")


def mount_tracefs(target: str) -> None:
    if _libc().mount(b"nodev", target.encode(), b"tracefs", 0, None) < 0:
        raise BpfError(ctypes.get_errno(), f"mounting tracefs on {target}")


def close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
