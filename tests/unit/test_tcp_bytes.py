"""TcpBytes (bytes from the kernel's TCP counters) fed by hand: a connection that closes between a drain's finals
and its pass is counted once, with its final in the next drain; one open before the collector started is
counted from its first pass, and its close without a final is reported, not silently dropped."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from netspy_tui.collector.base import DIR_ACCEPT, DIR_CONNECT, DIR_RX, DIR_TX
from netspy_tui.collector.ebpf import programs as P
from netspy_tui.collector.ebpf import tcpcounters
from netspy_tui.collector.ebpf.tcpcounters import COUNTERS, TcpBytes

SK, LPORT, RPORT, PID = 0xFFFF888800001000, 40000, 8080, 4242
OFF = P.SockOffsets(sk_daddr=0, sk_rcv_saddr=4, sk_num=14, sk_dport=12, sk_family=16, sk_v6_daddr=56,
                    sk_v6_rcv_saddr=72, sk_flags=96)  # fmt: skip


HOME, OTHER = 1, 7  # network namespaces (inodes): the collector's, a container's


class Namespaces:
    home = HOME
    wanted = False
    keep: set[int] = set()


class Pass:
    """A pass's rows, all from namespace ``ns``, and the namespaces whose pass was read (``read``)."""

    def __init__(self) -> None:
        self.rows = np.zeros(0, COUNTERS)
        self.ns = HOME
        self.read = {HOME}
        self.namespaces = Namespaces()

    def sample(self) -> tuple[np.ndarray, np.ndarray, set[int]]:
        return self.rows, np.full(len(self.rows), self.ns, np.uint64), self.read


def live(acked: int, received: int, remote: tuple[int, ...] = (127, 0, 0, 1)) -> np.ndarray:
    row = np.zeros(1, COUNTERS)
    row["sk"], row["bytes_acked"], row["bytes_received"], row["state"] = SK, acked, received, 1
    common = row["common"][0]
    common[16:18] = np.frombuffer(np.uint16(P.AF_INET).tobytes(), "u1")
    common[0:4], common[4:8] = remote, (127, 0, 0, 1)
    common[12:14] = np.frombuffer(RPORT.to_bytes(2, "big"), "u1")
    common[14:16] = np.frombuffer(LPORT.to_bytes(2, "little"), "u1")
    return row


def final(acked: int, received: int, opened: int = DIR_CONNECT, remote: tuple[int, ...] = (127, 0, 0, 1)
          ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    keys, values = np.zeros(1, P.FINAL_KEY), np.zeros(1, P.FINAL)
    keys["sk"], keys["ports"] = SK, LPORT | RPORT << 16
    keys["raddr"][0][:4] = remote
    values["tgid"], values["opened"], values["comm"] = PID, opened, b"client"
    values["bytes_acked"], values["bytes_received"], values["oldstate"] = acked, received, 5  # FIN_WAIT2
    values["sk_flags"] = 1 << P.SOCK_DONE
    return keys, values


NONE = (np.zeros(0, P.FINAL_KEY), np.zeros(0, P.FINAL))


def sums(rows: tuple[np.ndarray, np.ndarray]) -> dict[tuple[int, int], int]:
    keys, values = rows
    out: dict[tuple[int, int], int] = {}
    for k, v in zip(keys, values, strict=True):
        out[(int(k["tgid"]), int(k["direction"]))] = out.get((int(k["tgid"]), int(k["direction"])), 0) + int(v["bytes"])
    return out


def accountant(owners: dict[int, tuple[int, int, bytes]]) -> tuple[TcpBytes, Pass]:
    counters = Pass()
    tb = TcpBytes(counters, OFF, -1)  # type: ignore[arg-type]
    tb._owners = lambda: owners  # type: ignore[method-assign]
    return tb, counters


def test_a_close_between_the_finals_and_the_pass_is_counted_once() -> None:
    owners = {SK: (PID, DIR_CONNECT, b"client")}
    tb, counters = accountant(owners)
    counters.rows = live(1 + 1000, 50)  # (SYN acked: 1000 written, 50 arrived)
    assert sums(tb.drain(NONE, None, 10**18)) == {(PID, DIR_TX): 1000, (PID, DIR_RX): 50}
    # it closes after this drain's finals were read and before its pass: in neither
    counters.rows = np.zeros(0, COUNTERS)
    owners.clear()
    assert sums(tb.drain(NONE, None, 10**18)) == {}
    # its final (300 more written and the FIN acked; 20 more and the peer's FIN arrived) comes with the next drain
    assert sums(tb.drain(final(1 + 1300 + 1, 70 + 1), None, 10**18)) == {(PID, DIR_TX): 300, (PID, DIR_RX): 20}
    assert tb.uncounted_closes == 0


def test_a_connection_from_before_the_start_is_counted_from_its_first_pass_and_its_close_reported() -> None:
    tb, counters = accountant({})
    counters.rows = live(5_000, 7_000)
    assert sums(tb.drain(NONE, None, 10**18)) == {}  # (its history is not this drain's traffic)
    counters.rows = live(5_600, 7_000)
    assert sums(tb.drain(NONE, None, 10**18)) == {(0, DIR_TX): 600}
    counters.rows = np.zeros(0, COUNTERS)
    tb.drain(NONE, None, 10**18)
    tb.drain(NONE, None, 10**18)
    assert tb.uncounted_closes == 1


def test_an_accepted_connection_counts_no_syn() -> None:
    tb, counters = accountant({SK: (PID, DIR_ACCEPT, b"server")})
    counters.rows = live(900, 1200)
    assert sums(tb.drain(NONE, None, 10**18)) == {(PID, DIR_TX): 900, (PID, DIR_RX): 1200}


def test_a_socket_reused_for_the_same_ports_to_another_address_between_drains_is_another_connection() -> None:
    """A socket's memory freed at a close and reused, before the next drain, for a connection between the same port
    numbers to another address (the pass finds the new one where the old one was, the old one's counters arrive as
    it closed): each gets exactly its own bytes. (A kernel cannot be made to reuse a socket's memory on demand.)"""
    first, second = (10, 0, 0, 1), (10, 0, 0, 2)
    tb, counters = accountant({SK: (PID, DIR_CONNECT, b"client")})
    counters.rows = live(101, 50, first)  # (+1: the SYN of the side that connected)
    assert sums(tb.drain(NONE, None, 10**18)) == {(PID, DIR_TX): 100, (PID, DIR_RX): 50}
    # the first closed (300 bytes written, 80 arrived, its FIN sent and the peer's in), its memory holds the second
    counters.rows = live(11, 5, second)
    rows = tb.drain(final(300 + 1 + 1, 80 + 1, remote=first), None, 10**18 + 10**9)
    got = {(bytes(v["raddr"][:4]), int(k["direction"])): int(v["bytes"]) for k, v in zip(*rows, strict=True)}
    assert got == {(bytes(first), DIR_TX): 200, (bytes(first), DIR_RX): 30, (bytes(second), DIR_TX): 10,
                   (bytes(second), DIR_RX): 5}  # fmt: skip
    counters.rows = live(18, 5, second)  # and the second goes on from its own counters
    assert sums(tb.drain(NONE, None, 10**18 + 2 * 10**9)) == {(PID, DIR_TX): 7}


def test_a_connection_whose_namespace_had_no_pass_is_not_forgotten_and_its_close_counts_only_the_rest() -> None:
    """A container's connection read in its namespace's pass; then two drains where that namespace had no pass (it
    could not be entered: no thread, EMFILE, ...); then its close: its bytes are counted once, not again from 0."""
    owners = {SK: (PID, DIR_CONNECT, b"client")}
    tb, counters = accountant(owners)
    counters.rows, counters.ns, counters.read = live(1 + 1000, 50), OTHER, {HOME, OTHER}
    assert sums(tb.drain(NONE, None, 10**18)) == {(PID, DIR_TX): 1000, (PID, DIR_RX): 50}
    assert counters.namespaces.keep == {OTHER}  # (the scan does not let its namespace go while it is counted)
    counters.rows, counters.read = np.zeros(0, COUNTERS), {HOME}
    assert sums(tb.drain(NONE, None, 10**18)) == {}
    assert sums(tb.drain(NONE, None, 10**18)) == {}
    owners.clear()
    assert sums(tb.drain(final(1 + 1300 + 1, 70 + 1), None, 10**18)) == {(PID, DIR_TX): 300, (PID, DIR_RX): 20}
    assert tb.uncounted_closes == 0 and counters.namespaces.keep == set()


def test_a_connection_whose_namespace_had_no_pass_goes_on_from_its_counted_bytes_when_read_again() -> None:
    tb, counters = accountant({SK: (PID, DIR_CONNECT, b"client")})
    counters.rows, counters.ns, counters.read = live(1 + 1000, 50), OTHER, {HOME, OTHER}
    tb.drain(NONE, None, 10**18)
    counters.rows, counters.read = np.zeros(0, COUNTERS), {HOME}
    tb.drain(NONE, None, 10**18)
    tb.drain(NONE, None, 10**18)
    counters.rows, counters.read = live(1 + 1100, 60), {HOME, OTHER}
    assert sums(tb.drain(NONE, None, 10**18)) == {(PID, DIR_TX): 100, (PID, DIR_RX): 10}
    assert tb.uncounted_closes == 0


def test_a_forgotten_connection_found_again_adds_only_what_grew_and_the_bound_is_counted(monkeypatch) -> None:
    """A connection seen opening that two passes of its namespace missed is forgotten, but its counted bytes are
    kept: its final later adds only the rest. Past the bound on those kept, the ones let go are counted."""
    owners = {SK: (PID, DIR_CONNECT, b"client")}
    tb, counters = accountant(owners)
    counters.rows, counters.ns, counters.read = live(1 + 1000, 50), OTHER, {HOME, OTHER}
    tb.drain(NONE, None, 10**18)
    counters.rows = np.zeros(0, COUNTERS)
    tb.drain(NONE, None, 10**18)
    tb.drain(NONE, None, 10**18)
    assert not tb.counted and len(tb.forgotten) == 1 and counters.namespaces.keep == set()
    assert sums(tb.drain(final(1 + 1300 + 1, 70 + 1), None, 10**18)) == {(PID, DIR_TX): 300, (PID, DIR_RX): 20}
    assert not tb.forgotten and tb.uncounted_closes == 0 and tb.forgotten_dropped == 0
    monkeypatch.setattr(tcpcounters, "_FORGOTTEN", 0)
    counters.rows = live(1 + 10, 5)
    tb.drain(NONE, None, 10**18)
    counters.rows = np.zeros(0, COUNTERS)
    tb.drain(NONE, None, 10**18)
    tb.drain(NONE, None, 10**18)
    assert not tb.forgotten and tb.forgotten_dropped == 1


def test_a_connection_in_no_pass_asks_for_one_namespace_scan_not_one_every_drain() -> None:
    """A connection seen opening in a namespace that is not read (past the bound, or refused) would otherwise make
    every drain rescan /proc."""
    owners = {SK: (PID, DIR_CONNECT, b"client")}
    tb, counters = accountant(owners)
    tb.drain(NONE, None, 10**18)
    assert counters.namespaces.wanted
    counters.namespaces.wanted = False  # (the scan made; the connection still in no pass)
    tb.drain(NONE, None, 10**18)
    assert not counters.namespaces.wanted
    owners[SK + 64] = (PID, DIR_CONNECT, b"client")  # another one: another scan
    tb.drain(NONE, None, 10**18)
    assert counters.namespaces.wanted


def test_the_namespace_scan_opens_only_namespace_files_and_follows_no_link_in_run_netns(tmp_path: Path) -> None:
    """/run/netns is where ``ip netns`` leaves its namespaces; anything else found there (a file, a FIFO, a link to
    either, planted by whoever can write there) is neither opened nor followed by the collector, which runs as
    root. (A FIFO opened for reading would block the scan for good.)"""
    proc, run = tmp_path / "proc", tmp_path / "run"
    proc.mkdir()
    run.mkdir()
    (proc / "thread-self").symlink_to("/proc/thread-self")
    (run / "file").write_bytes(b"")
    os.mkfifo(run / "fifo")
    (run / "link-to-fifo").symlink_to(run / "fifo")
    (run / "link-to-file").symlink_to(run / "file")
    ns = tcpcounters.Namespaces(str(proc), str(run))
    scan = threading.Thread(target=ns.scan, daemon=True)
    scan.start()
    scan.join(10)
    try:
        assert not scan.is_alive(), "the scan blocked opening a FIFO"
        assert ns.fds == {} and ns.unread == 0
    finally:
        ns.close()


def test_each_namespace_pass_is_read_before_the_next_starts_and_any_failure_costs_only_its_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One iterator fd open at a time (not one per namespace, up to 1,024, before any is read); a namespace whose
    entry or pass fails in any way (not only OSError) gives no pass, the others theirs; the reasons are returned
    to be logged from the caller's thread."""
    open_fds: set[int] = set()
    most = 0

    def setns(ns: int) -> None:
        if ns == 2:
            raise ValueError("no such namespace")

    def iter_create(link: int) -> int:
        nonlocal most
        fd = 100 + len(open_fds)
        open_fds.add(fd)
        most = max(most, len(open_fds))
        return fd

    def read_all(fd: int) -> bytes:
        open_fds.discard(fd)
        return b"x"

    monkeypatch.setattr(tcpcounters.syscalls, "setns_net", setns)
    monkeypatch.setattr(tcpcounters.syscalls, "iter_create", iter_create)
    monkeypatch.setattr(tcpcounters.syscalls, "read_all", read_all)
    data, why = tcpcounters._passes_in(5, [1, 2, 3, 4])
    assert data == [b"x", None, b"x", b"x"] and most == 1 and not open_fds
    assert why == ["ValueError: no such namespace"]


def test_a_connection_from_before_the_start_registered_by_its_first_pass_closes_exactly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its first pass registers it in ``opened`` (how it opened: :data:`P.OPENED_BEFORE_START`, so neither the pass
    nor its final takes a SYN off); its final then adds only what grew since the last pass, and no close is
    reported uncounted. None is registered past ``room`` (the entries already there count)."""
    owners: dict[int, tuple[int, int, bytes]] = {}
    written: list[tuple[int, bytes, int]] = []

    def update(fd: int, key: bytes, value: bytes, flags: int) -> None:
        written.append((int.from_bytes(key, "little"), value, flags))
        v = np.frombuffer(value, tcpcounters._OPENED)[0]
        owners[int.from_bytes(key, "little")] = (int(v["tgid"]), int(v["opened"]), bytes(v["comm"]))

    monkeypatch.setattr(tcpcounters.syscalls, "map_update", update)
    counters = Pass()
    tb = TcpBytes(counters, OFF, -1, room=1)  # type: ignore[arg-type]
    tb._owners = lambda: dict(owners)  # type: ignore[method-assign]
    tb.preexisting[(P.AF_INET, bytes([127, 0, 0, 1]) + bytes(12), LPORT, bytes([127, 0, 0, 1]) + bytes(12), RPORT)] = (
        PID, b"client")  # fmt: skip
    counters.rows = live(5_000, 7_000)
    assert sums(tb.drain(NONE, None, 10**18)) == {}
    assert [(sk, flags) for sk, _, flags in written] == [(SK, tcpcounters.syscalls.BPF_NOEXIST)]
    assert owners[SK] == (PID, P.OPENED_BEFORE_START, b"client")
    counters.rows = live(5_600, 7_000)
    assert sums(tb.drain(NONE, None, 10**18)) == {(PID, DIR_TX): 600}
    assert len(written) == 1  # (registered once)
    # it closes: its final (the FIN acked, the peer's FIN arrived) adds what it moved since that pass
    counters.rows = np.zeros(0, COUNTERS)
    owners.clear()
    got = sums(tb.drain(final(5_900 + 1, 7_050 + 1, opened=P.OPENED_BEFORE_START), None, 10**18))
    assert got == {(PID, DIR_TX): 300, (PID, DIR_RX): 50}
    tb.drain(NONE, None, 10**18)
    tb.drain(NONE, None, 10**18)
    assert tb.uncounted_closes == 0
    # no room: another stays unregistered, and its close is reported uncounted as before
    owners[SK + 64] = (PID, DIR_CONNECT, b"other")  # (an entry of a connection seen opening fills the room)
    counters.rows = live(1_000, 1_000)
    tb.drain(NONE, None, 10**18)
    assert len(written) == 1
    counters.rows = np.zeros(0, COUNTERS)
    tb.drain(NONE, None, 10**18)
    tb.drain(NONE, None, 10**18)
    assert tb.uncounted_closes == 1


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="opening another process's network namespace needs root")
def test_namespaces_close_every_handle_they_opened() -> None:
    """The namespace handles a scan opens (one per other network namespace: here a child's, made with unshare) are
    all closed by close(), so a stopped collector keeps no namespace alive. (The collector tests' open-file checks
    leave namespace handles out: a shared collector of the same process opens and closes them meanwhile.)"""
    import shutil  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    child = subprocess.Popen(["unshare", "--net", "sh", "-c", "echo ready; exec sleep 60"], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        theirs = os.stat(f"/proc/{child.pid}/ns/net").st_ino
        ns = tcpcounters.Namespaces()
        ns.scan()
        opened = dict(ns.fds)
        assert theirs in opened, opened
        assert all(os.readlink(f"/proc/self/fd/{fd}").startswith("net:[") for fd in opened.values())
        ns.close()
        assert ns.fds == {}
        for ino, fd in opened.items():  # (closed; a number reused meanwhile is some other file)
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except FileNotFoundError:
                continue
            assert target != f"net:[{ino}]", (fd, target)
    finally:
        child.kill()
        child.wait()
