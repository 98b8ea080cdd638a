"""The TCP sockets already listening when the collector starts, with the process that owns each, for the
kernel's ``listeners`` map: the programs learn a listener when they see its socket go to LISTEN, so without
this every server started before the collector (sshd, nginx, any long-running daemon) would have its inbound
connections charged to no process.

Every network namespace some process is in is read once, through one of its processes
(``/proc/PID/net/tcp`` and ``tcp6``: the LISTEN sockets with their inode numbers); then every process's open
files (``/proc/PID/fd``) tell which processes hold those sockets. A socket held by several (a pre-fork
server's workers inherit the master's) is charged to the one that started first, the one that called
listen(). What cannot be seeded is counted (:class:`Seed`): a listening socket no process holds (any more), or none
whose open files could be read holds (the processes whose files were refused are counted: without CAP_SYS_PTRACE
the files of a process with capabilities this one lacks cannot be read, without CAP_DAC_READ_SEARCH those of
another user's), and the sockets left when the scan of open
files runs past its time budget (:data:`SCAN_BUDGET`). Not seen at all:
the listeners of a namespace no process is in (a process that made its socket there, then left it).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from netspy_tui.collector.ebpf import programs as P
from netspy_tui.textsafe import clean

#: seconds the scan of every process's open files may take (a host with a million open files needs ~3 s)
SCAN_BUDGET = 5.0
#: how many of the processes whose open files were refused the note names
NAMED = 3
_CAP_DAC_READ_SEARCH, _CAP_SYS_PTRACE = 2, 19
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's ``st`` column
_AF_INET, _AF_INET6 = 2, 10


@dataclass
class Seed:
    """What the scan found: ``keys``/``values`` (:data:`programs.LISTENER_KEY` and ``LISTENER_VALUE``
    records) for the map, and what it could not seed."""

    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, P.LISTENER_KEY))
    values: np.ndarray = field(default_factory=lambda: np.zeros(0, P.LISTENER_VALUE))
    unowned: int = 0
    """Listening sockets no process was found holding (closed meanwhile, or held by none)."""
    unscanned: int = 0
    """Listening sockets whose holders were not looked for: the scan ran past :data:`SCAN_BUDGET`."""
    connections: dict[tuple[int, bytes, int, bytes, int], tuple[int, bytes]] = field(default_factory=dict)
    """The TCP connections open at the scan (any state but LISTEN), by (family, local address, local port, remote
    address, remote port; addresses as 16 bytes, network order) -> (owner's tgid, its name): whose the bytes of a
    connection that opened before the collector started are (:class:`.tcpcounters.TcpBytes`)."""
    unreadable: int = 0
    """Processes whose open files could not be read (EACCES/EPERM: another process's ``/proc/PID/fd`` needs
    CAP_SYS_PTRACE when it has capabilities this one lacks, and CAP_DAC_READ_SEARCH when another user owns it):
    the sockets not matched may be theirs."""
    unreadable_names: list[str] = field(default_factory=list)
    """The first :data:`NAMED` of those, as ``pid NAME`` (the name made printable)."""
    capable: bool = False
    """This process had CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH in effect: what refused it was something else
    (a security module, a process in a user namespace this one is not privileged over)."""

    def notes(self) -> list[str]:
        out = []
        if self.unowned and self.unreadable:
            n, m = self.unowned, self.unreadable
            named = ", ".join(self.unreadable_names) + (" …" if m > len(self.unreadable_names) else "")
            why = ("refused although this process has CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH: a security module "
                   "or another user namespace guards them" if self.capable else
                   "needs CAP_SYS_PTRACE, and CAP_DAC_READ_SEARCH for other users' processes")  # fmt: skip
            out.append(f"{_sockets(n)} that listened before the collector started {_were(n)} not matched to a "
                       f"process: could not read the open files of {m} process{'' if m == 1 else 'es'}"
                       f"{', ' + named if named else ''} ({why}): inbound connections to {_them(n)} are charged "
                       "to no process (pid 0)")  # fmt: skip
        elif self.unowned:
            out.append(f"no process holds {_sockets(self.unowned)} that listened before the collector started: "
                       f"inbound connections to {_them(self.unowned)} are charged to no process (pid 0)")  # fmt: skip
        if self.unscanned:
            n = self.unscanned
            out.append(f"{_sockets(n)} that listened before the collector started {_were(n)} not matched to a "
                       f"process (the scan of open files stopped after {SCAN_BUDGET:g} s): inbound connections to "
                       f"{_them(n)} are charged to no process (pid 0)")  # fmt: skip
        return out


def _sockets(n: int) -> str:
    return f"{n} listening TCP socket" + ("" if n == 1 else "s")


def _them(n: int) -> str:
    return "it" if n == 1 else "them"


def _were(n: int) -> str:
    return "was" if n == 1 else "were"


def _pids(proc: str) -> list[int]:
    try:
        return sorted(int(name) for name in os.listdir(proc) if name.isdigit())
    except OSError:
        return []


def _address(text: str) -> bytes:
    """``/proc/net/tcp{,6}``'s hex address (32-bit words as the host reads them) as 16 bytes, network order."""
    raw = b"".join(int(text[i : i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(text), 8))
    return raw.ljust(16, b"\0")


def _table(path: str, family: int) -> Iterator[tuple[int, bool, int, bytes, int, bytes, int]]:
    """(inode, listening, family, address, port, remote address, remote port) of each socket with an inode in one
    ``/proc/PID/net/tcp{,6}`` table."""
    with open(path) as f:
        next(f, None)  # the header
        for line in f:
            cols = line.split()
            if len(cols) < 10:
                continue
            addr, _, port = cols[1].partition(":")
            raddr, _, rport = cols[2].partition(":")
            inode = int(cols[9])
            if inode:
                yield inode, cols[3] == _LISTEN, family, _address(addr), int(port, 16), _address(raddr), int(rport, 16)


def _start_time(proc: str, pid: int) -> int:
    """The process's start time in clock ticks since boot (a large number when unknown)."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return 1 << 62


def _capable(proc: str, *caps: int) -> bool:
    """Whether this process has every one of ``caps`` in effect (``CapEff`` of ``PROC/self/status``)."""
    try:
        with open(f"{proc}/self/status") as f:
            effective = next((int(line.split()[1], 16) for line in f if line.startswith("CapEff:")), 0)
    except (OSError, ValueError, IndexError):
        return False
    return all(effective >> cap & 1 for cap in caps)


def _comm(proc: str, pid: int) -> bytes:
    try:
        with open(f"{proc}/{pid}/comm", "rb") as f:
            return f.read().rstrip(b"\n")[:15]
    except OSError:
        return b""


def scan(netns: bool, proc: str = "/proc", budget: float = SCAN_BUDGET, connections: bool = False) -> Seed:
    """The listening TCP sockets of every network namespace a process is in, each with its owner (and with
    ``connections``, the open connections' owners, :attr:`Seed.connections`).
    ``netns`` False: the kernel's programs cannot read a socket's namespace (no BTF for it), so the keys
    carry 0 there too."""
    pids = _pids(proc)
    by_ns: dict[int, list[int]] = {}
    for pid in pids:
        try:
            ns = os.stat(f"{proc}/{pid}/ns/net").st_ino
        except OSError:
            continue  # gone, or a kernel thread without one
        by_ns.setdefault(ns, []).append(pid)
    # inode -> (namespace, family, address, port) of the listeners; of the connections, their addresses and ports
    sockets: dict[int, tuple[int, int, bytes, int]] = {}
    open_ones: dict[int, tuple[int, bytes, int, bytes, int]] = {}
    for ns, members in by_ns.items():
        for pid in members:  # the first of its processes that is still there
            try:
                tables = f"{proc}/{pid}/net/tcp", f"{proc}/{pid}/net/tcp6"
                found = [*_table(tables[0], _AF_INET), *_table(tables[1], _AF_INET6)]
            except OSError:
                continue
            for inode, listening, family, addr, port, raddr, rport in found:
                if listening:
                    sockets[inode] = (ns if netns else 0, family, addr, port)
                elif connections:
                    open_ones[inode] = (family, addr, port, raddr, rport)
            break
    seed = Seed()
    if not sockets and not open_ones:
        return seed
    seed.capable = _capable(proc, _CAP_SYS_PTRACE, _CAP_DAC_READ_SEARCH)
    holders: dict[int, list[int]] = {}
    deadline, complete = time.monotonic() + budget, True
    for pid in pids:
        if time.monotonic() > deadline:
            complete = False
            break
        fd_dir = f"{proc}/{pid}/fd"
        try:
            with os.scandir(fd_dir) as it:
                for entry in it:
                    try:
                        link = os.readlink(f"{fd_dir}/{entry.name}")
                    except PermissionError:
                        raise
                    except OSError:
                        continue
                    if link.startswith("socket:[") and ((inode := int(link[8:-1])) in sockets or inode in open_ones):
                        holders.setdefault(inode, []).append(pid)
        except PermissionError:  # (EACCES, EPERM: not allowed to look at this process's files)
            seed.unreadable += 1
            if len(seed.unreadable_names) < NAMED:
                seed.unreadable_names.append(f"pid {pid} {clean(_comm(proc, pid), 16)}")
        except OSError:
            continue
    found_owner = []
    for inode in sockets:
        if inode in holders:
            owner = min(holders[inode], key=lambda pid: (_start_time(proc, pid), pid))
            found_owner.append((inode, owner))
        elif not complete:
            seed.unscanned += 1
        else:
            seed.unowned += 1
    for inode, place in open_ones.items():
        if inode in holders:
            owner = min(holders[inode], key=lambda pid: (_start_time(proc, pid), pid))
            seed.connections[place] = (owner, _comm(proc, owner))
    seed.keys = np.zeros(len(found_owner), P.LISTENER_KEY)
    seed.values = np.zeros(len(found_owner), P.LISTENER_VALUE)
    for i, (inode, owner) in enumerate(found_owner):
        ns, family, addr, port = sockets[inode]
        seed.keys[i]["netns"], seed.keys[i]["family"], seed.keys[i]["port"] = ns, family, port
        seed.keys[i]["addr"] = np.frombuffer(addr, np.uint8)
        seed.values[i]["tgid"], seed.values[i]["comm"] = owner, _comm(proc, owner)
    return seed
