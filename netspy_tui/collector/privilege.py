"""Whether this process may load the eBPF collector, and what to say when it may not.

The collector loads BPF programs and maps (``CAP_BPF``), attaches them to tracepoints (``CAP_PERFMON``;
``CAP_SYS_ADMIN`` covers both) and reads the tracepoints' ids under tracefs, which is root's and closed to
other users (``CAP_DAC_READ_SEARCH``, or ``CAP_DAC_OVERRIDE``, unless tracefs was mounted open to this user).
Root has all of them.
"""

from __future__ import annotations

import os

__all__ = ["EBPF_NEEDS_ROOT", "EBPF_PRIVILEGE_HINT", "ebpf_privileged"]

#: what the header, ``server_status`` and the error say (short: it has to fit the header at 80 columns)
EBPF_NEEDS_ROOT = "eBPF needs root"
#: what to do about it (the error's second sentence; README's troubleshooting says the same)
EBPF_PRIVILEGE_HINT = "run as root (or with CAP_BPF, CAP_PERFMON and CAP_DAC_READ_SEARCH) or use --collector procfs"

_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_SYS_ADMIN, _CAP_PERFMON, _CAP_BPF = 1, 2, 21, 38, 39
TRACEFS_EVENTS = "/sys/kernel/tracing/events"


def effective_caps() -> int:
    """This process's effective capabilities (``CapEff`` of /proc/self/status); 0 when unreadable."""
    try:  # (bytes: no codec to import, which a process that dropped root may no longer be able to read)
        with open("/proc/self/status", "rb") as status:
            return next((int(line.split()[1], 16) for line in status if line.startswith(b"CapEff:")), 0)
    except (OSError, ValueError, IndexError):
        return 0


def ebpf_privileged() -> bool:
    """Root, or the capabilities the eBPF collector needs: BPF and PERFMON (or SYS_ADMIN), and a way to read
    tracefs (DAC_READ_SEARCH or DAC_OVERRIDE, or a tracefs this user may read)."""
    if os.geteuid() == 0:
        return True
    caps = effective_caps()

    def has(bit: int) -> bool:
        return bool(caps >> bit & 1)

    load = has(_CAP_SYS_ADMIN) or (has(_CAP_BPF) and has(_CAP_PERFMON))
    read_tracefs = has(_CAP_DAC_READ_SEARCH) or has(_CAP_DAC_OVERRIDE) or os.access(TRACEFS_EVENTS, os.R_OK | os.X_OK)
    return load and read_tracefs
