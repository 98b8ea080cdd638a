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
"""

from __future__ import annotations

import numpy as np

from netspy_tui.collector.ebpf import btf as btf_mod
from netspy_tui.collector.ebpf import syscalls
from netspy_tui.collector.ebpf.asm import DW, FP, R0, R1, R2, R3, R6, R7, Asm, B

PROBE_READ_KERNEL = 113
SEQ_WRITE = 127
#: sk_state values whose sock_common is not a full ``struct tcp_sock`` (or holds no connection): LISTEN,
#: TIME_WAIT, NEW_SYN_RECV
_NOT_CONNECTIONS = (10, 6, 12)

COUNTERS = np.dtype(
    {
        "names": ["sk", "bytes_acked", "bytes_received", "write_seq", "snd_una", "ports", "state"],
        "formats": ["<u8", "<u8", "<u8", "<u4", "<u4", "<u4", "u1"],
        "offsets": [0, 8, 16, 24, 28, 32, 36],
        "itemsize": 40,
    }
)
"""One socket of a pass: its kernel address, the two 64-bit counters, the send sequence's write end and
unacknowledged start, its port pair as ``sock_common`` holds it (``skc_dport`` network order in the low
half, ``skc_num`` host order in the high half) and its TCP state."""

_REC = -40  # the record on the stack (40 bytes)
_AT: dict[str, int] = dict(
    zip(
        ["sk", "bytes_acked", "bytes_received", "write_seq", "snd_una", "ports", "state"],
        [0, 8, 16, 24, 28, 32, 36],
        strict=True,
    )
)  # COUNTERS' field offsets


class TcpCounters:
    """An ``iter/tcp`` program and its link; :meth:`sample` reads every open TCP connection's counters.
    Raises :class:`syscalls.BpfError` or :class:`btf_mod.BtfError` when this kernel cannot (no BTF for
    ``tcp_sock``, no ``bpf_iter_tcp``, or iterators refused): the caller then counts bytes another way."""

    def __init__(self) -> None:
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

    def sample(self) -> np.ndarray:
        """Every open TCP connection's counters now (:data:`COUNTERS`), one pass."""
        data = syscalls.iter_read(self._link)
        return np.frombuffer(data[: len(data) - len(data) % COUNTERS.itemsize], COUNTERS).copy()

    def close(self) -> None:
        for fd in (self._link, self._prog):
            if fd >= 0:
                syscalls.close_fd(fd)
        self._link = self._prog = -1
