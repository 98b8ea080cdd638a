"""Inbound connections are charged to the listener that accepted them, against the real kernel, as an outside
agent sees them (``list_connections(direction="inbound")`` through a real MCP session): servers are child
processes of their own (pid, name), some in a network namespace the test makes (``ip netns add``).

- Listeners that share a port number — on another address (127.0.0.1 and 127.0.0.2), the wildcard address
  beside a specific one (SO_REUSEPORT), a dual-stack ``::`` listener's IPv4 (v4-mapped) connections, the same
  address and port in another network namespace — each get their own connections, none of another's. Under
  each kind of program the kernel may run tcp_state as (BTF-typed, raw tracepoint, perf tracepoint).
- Servers that were listening before the collector started (any long-running daemon), in the root namespace
  and in another, get their inbound connections with their pid and name, not pid 0.

Waits are bounded polls on the tool's own answer; the assertions are exact.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
from mcp.client import Client

from netspy_tui.collector.ebpf import EbpfCollector, syscalls
from netspy_tui.errors import CollectorError
from netspy_tui.mcp_tools.server import create_server
from netspy_tui.models import ConnectionList
from netspy_tui.store import EventStore
from netspy_tui.telemetry.embedded import EmbeddedSource
from tests.collector.test_traffic import REQUIRE

#: a server: listens on (host, port) (``reuseport``: with SO_REUSEPORT; ``v6only`` 0: a dual-stack ``::``),
#: prints its pid and port, accepts ``n`` connections (each read to its end), then waits for a line on stdin
SERVER = textwrap.dedent(
    """
    import os, socket, sys
    host, port, n, reuseport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
    t = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    if ":" in host:
        t.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    if reuseport:
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    t.bind((host, port))
    t.listen(64)
    print(os.getpid(), t.getsockname()[1], flush=True)
    for _ in range(n):
        c, _ = t.accept()
        while c.recv(4096):
            pass
        c.close()
    sys.stdin.readline()
    """
)
#: a client: one connection to each (host, port) argument pair (in the namespace it runs in)
CLIENT = textwrap.dedent(
    """
    import socket, sys
    for host, port in zip(sys.argv[1::2], sys.argv[2::2]):
        with socket.create_connection((host, int(port))) as s:
            s.sendall(b"x")
    """
)


class Server:
    def __init__(self, host: str, port: int, n: int, reuseport: bool = False, netns: str | None = None) -> None:
        prefix = ["ip", "netns", "exec", netns] if netns else []
        self.proc = subprocess.Popen([*prefix, sys.executable, "-c", SERVER, host, str(port), str(n),
                                      "1" if reuseport else "0"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        assert len(line) == 2, f"server on {host}:{port} did not start"
        self.pid, self.port = int(line[0]), int(line[1])
        self.name = Path(f"/proc/{self.pid}/comm").read_text().strip()

    def finish(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        assert self.proc.wait(timeout=10) == 0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def connect(*targets: tuple[str, int], netns: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    args = [str(x) for target in targets for x in target]
    subprocess.run([*prefix, sys.executable, "-c", CLIENT, *args], check=True, timeout=20)


def free_port() -> int:
    """A port free on 127.0.0.0/8 and ::."""
    while True:
        with socket.socket(socket.AF_INET6) as s:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind(("::", 0))
            port = s.getsockname()[1]
        try:  # and on 127.0.0.2 (a listener on 127.0.0.1 alone does not tell)
            with socket.socket() as t:
                t.bind(("127.0.0.2", port))
            return int(port)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise


@contextmanager
def namespace() -> Iterator[str]:
    """A network namespace of this test's own, loopback up."""
    if shutil.which("ip") is None:
        pytest.skip("no ip(8) to make a network namespace")
    name = f"nspy_l{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=20)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=20)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=20)


#: which kinds of program the kernel is allowed: all (tcp_state BTF-typed where it can), no tracing programs
#: (raw tracepoint), neither (perf tracepoint)
REFUSED = {
    "tp_btf": (),
    "raw_tracepoint": (syscalls.BPF_PROG_TYPE_TRACING,),
    "tracepoint": (syscalls.BPF_PROG_TYPE_TRACING, syscalls.BPF_PROG_TYPE_RAW_TRACEPOINT),
}


@asynccontextmanager
async def collecting(monkeypatch: pytest.MonkeyPatch, kind: str = "tp_btf") -> AsyncIterator[Client]:
    """A live eBPF collector whose tcp_state runs as ``kind``, feeding an in-memory store; an MCP client on it."""
    real_load = syscalls.prog_load

    def load(prog_type: int, *args: object, **kwargs: object) -> int:
        if prog_type in REFUSED[kind]:
            raise syscalls.BpfError(errno.EPERM, "loading program")
        return real_load(prog_type, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(syscalls, "prog_load", load)
    collector = EbpfCollector(drain_interval=0.2)
    store = EventStore(None)
    source = EmbeddedSource(collector, store)
    try:
        await source.start()
    except CollectorError as exc:
        store.close()
        if REQUIRE:
            pytest.fail(f"NETSPY_REQUIRE_EBPF=1 but the eBPF collector cannot start: {exc}")
        pytest.skip(f"eBPF collector unavailable: {exc}")
    try:
        kinds = {name: how for name, how, _, _ in collector.programs()}
        if kinds.get("tcp_state") != kind:
            pytest.skip(f"this kernel runs tcp_state as {kinds.get('tcp_state')}, not {kind}")
        if not collector.counts_traffic:
            pytest.skip("this kernel has no sock/sock_send_length and sock_recv_length tracepoints")
        async with Client(create_server(source)) as client:
            yield client
    finally:
        await source.aclose()


async def inbound(client: Client, want: dict[int, int]) -> dict[int, list[tuple[str | None, int | None]]]:
    """pid -> the (local address, local port) of each inbound connection listed for it, once every pid in
    ``want`` has at least its count (or 10 s passed)."""
    deadline = time.monotonic() + 10
    while True:
        got: dict[int, list[tuple[str | None, int | None]]] = {}
        for pid in want:
            result = await client.call_tool("list_connections", {"pid": pid, "direction": "inbound",
                                                                 "max_events": 1000})  # fmt: skip
            assert not result.is_error, result.content
            listed = ConnectionList.model_validate(result.structured_content)
            assert listed.total_count == len(listed.events)
            got[pid] = [(e.destination_ip, e.destination_port) for e in listed.events]
            assert {e.pid for e in listed.events} <= {pid}
        if all(len(got[pid]) >= n for pid, n in want.items()) or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.05)


@pytest.mark.ebpf
@pytest.mark.parametrize("kind", list(REFUSED))
async def test_listeners_sharing_a_port_number_each_get_their_own_inbound_connections(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    with namespace() as ns:
        async with collecting(monkeypatch, kind) as client:
            servers: list[Server] = []
            try:
                p, q, r, t = free_port(), free_port(), free_port(), free_port()
                # the same address and port in another namespace, listening first
                n = Server("0.0.0.0", p, 2, netns=ns)
                # the same port on two addresses: B listens after A (the last one to listen took them all)
                a = Server("127.0.0.1", p, 1)
                b = Server("127.0.0.2", p, 2)
                # the wildcard address beside a specific one (both SO_REUSEPORT)
                w = Server("0.0.0.0", q, 1, reuseport=True)
                x = Server("127.0.0.5", q, 2, reuseport=True)
                # a dual-stack :: listener: IPv4 connections come as v4-mapped IPv6 sockets
                d = Server("::", r, 2)
                # a listener that closed: a wildcard one on its port later gets its address's connections
                gone = Server("127.0.0.3", t, 0)
                gone.finish()
                v = Server("0.0.0.0", t, 1)
                servers = [a, b, w, x, d, n, v]
                connect(("127.0.0.1", p), ("127.0.0.2", p), ("127.0.0.2", p), ("127.0.0.1", q), ("127.0.0.5", q),
                        ("127.0.0.5", q), ("127.0.0.1", r), ("::1", r), ("127.0.0.3", t))  # fmt: skip
                connect(("127.0.0.1", p), ("127.0.0.1", p), netns=ns)
                want = {a.pid: 1, b.pid: 2, w.pid: 1, x.pid: 2, d.pid: 2, n.pid: 2, v.pid: 1, gone.pid: 0}
                got = await inbound(client, want)
                assert sorted(got[a.pid]) == [("127.0.0.1", p)]
                assert sorted(got[b.pid]) == [("127.0.0.2", p)] * 2
                assert sorted(got[w.pid]) == [("127.0.0.1", q)]
                assert sorted(got[x.pid]) == [("127.0.0.5", q)] * 2
                assert sorted(got[d.pid]) == sorted([("127.0.0.1", r), ("::1", r)])
                assert sorted(got[n.pid]) == [("127.0.0.1", p)] * 2
                assert got[v.pid] == [("127.0.0.3", t)] and got[gone.pid] == []
                for s in servers:
                    s.finish()
            finally:
                for s in servers:
                    s.kill()


@pytest.mark.ebpf
async def test_servers_listening_before_the_collector_started_own_their_inbound_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with namespace() as ns:
        servers: list[Server] = []
        try:
            p, q = free_port(), free_port()
            old = Server("127.0.0.1", p, 2)
            old6 = Server("::", q, 1)
            old_ns = Server("0.0.0.0", p, 1, netns=ns)
            servers = [old, old6, old_ns]
            async with collecting(monkeypatch) as client:
                connect(("127.0.0.1", p), ("127.0.0.1", p), ("::1", q))
                connect(("127.0.0.1", p), netns=ns)
                got = await inbound(client, {old.pid: 2, old6.pid: 1, old_ns.pid: 1})
                assert got == {old.pid: [("127.0.0.1", p)] * 2, old6.pid: [("::1", q)], old_ns.pid: [("127.0.0.1", p)]}
                # (asked by process: the host's 1,000 newest inbound connections need not hold these while other
                # tests connect)
                names = set()
                for s in servers:
                    listed = await client.call_tool("list_connections", {"direction": "inbound", "pid": s.pid,
                                                                         "max_events": 1000})  # fmt: skip
                    names |= {(e["pid"], e["command"]) for e in listed.structured_content["events"]  # type: ignore[index]
                              if e["destination_port"] in (p, q)}  # fmt: skip
                assert names == {(s.pid, s.name) for s in servers}
                for s in servers:
                    s.finish()
        finally:
            for s in servers:
                s.kill()


def test_what_the_scan_of_listening_sockets_could_not_seed_is_said(tmp_path: Path) -> None:
    """A listening socket that no process holds is counted and said in one note (server_status shows the
    collector's notes); the ones some process holds are seeded with the one that started first."""
    from netspy_tui.collector.ebpf import listeners  # noqa: PLC0415

    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    rows = [  # 127.0.0.1:8080 and 0.0.0.0:22 listening, one established connection
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1\n",
        "   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1\n",
        "   2: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 333 1\n",
    ]
    for pid, start, fds in ((40, 500, {"3": 111}), (41, 900, {"4": 111}), (42, 100, {})):
        d = tmp_path / str(pid)
        (d / "ns").mkdir(parents=True)
        (d / "net").mkdir()
        (d / "fd").mkdir()
        (d / "ns" / "net").write_text("")
        (d / "net" / "tcp").write_text(header + "".join(rows))
        (d / "net" / "tcp6").write_text(header)
        (d / "comm").write_text(f"srv{pid}\n")
        (d / "stat").write_text(f"{pid} (srv {pid}) S 1 " + " ".join(["0"] * 17) + f" {start} 0\n")
        for fd, inode in fds.items():
            (d / "fd" / fd).symlink_to(f"socket:[{inode}]")
    seed = listeners.scan(False, proc=str(tmp_path))
    seeded = [(int(k["port"]), bytes(k["addr"][:4]), int(v["tgid"]), bytes(v["comm"]))
              for k, v in zip(seed.keys, seed.values, strict=True)]  # fmt: skip
    assert seeded == [(8080, bytes([127, 0, 0, 1]), 40, b"srv40")]
    assert seed.notes() == [
        "no process holds 1 listening TCP socket that listened before the collector started: inbound connections "
        "to it are charged to no process (pid 0)"
    ]


@pytest.mark.root
@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0, reason="needs setpriv, as root")
def test_a_process_whose_files_were_refused_is_named_and_the_note_says_whether_capabilities_were_why(
    tmp_path: Path,
) -> None:
    """Seen as root in a sandbox whose init's open files are refused even to root: the note said "needs
    CAP_SYS_PTRACE, and CAP_DAC_READ_SEARCH", which that root had. The scan of a /proc tree made here (its
    ``self/status`` saying which capabilities are in effect), run without the capabilities that pass over a
    directory's mode, so the one process's ``fd`` (mode 000) is refused: the note names it (its name made
    printable) and says capabilities are the cause only when they are missing."""
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    row = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1\n"
    d = tmp_path / "40"
    for sub in ("ns", "net", "fd"):
        (d / sub).mkdir(parents=True)
    (d / "ns" / "net").write_text("")
    (d / "net" / "tcp").write_text(header + row)
    (d / "net" / "tcp6").write_text(header)
    (d / "comm").write_bytes(b"srv\x1b[31m40\n")
    (d / "fd" / "3").symlink_to("socket:[111]")
    (d / "fd").chmod(0)
    (tmp_path / "self").mkdir()
    scan = "import json, sys; from netspy_tui.collector.ebpf import listeners as L; " \
        "print(json.dumps(L.scan(False, proc=sys.argv[1]).notes()))"  # fmt: skip
    said = {}
    for effective in (1 << 19 | 1 << 2, 1 << 19):  # CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH; CAP_SYS_PTRACE alone
        (tmp_path / "self" / "status").write_text(f"Name:\tpython\nCapEff:\t{effective:016x}\n")
        run = subprocess.run([*_capabilities(["SYS_PTRACE"]), sys.executable, "-c", scan, str(tmp_path)],
                             capture_output=True, text=True, timeout=60, check=True,
                             cwd=Path(__file__).resolve().parents[2])  # fmt: skip
        said[effective] = json.loads(run.stdout)
    start = ("1 listening TCP socket that listened before the collector started was not matched to a process: could "
             "not read the open files of 1 process, pid 40 srv\\x1b[31m40 (")  # fmt: skip
    end = "): inbound connections to it are charged to no process (pid 0)"
    assert said == {
        1 << 19 | 1 << 2: [
            start + "refused although this process has CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH: a "
            "security module or another user namespace guards them" + end
        ],
        1 << 19: [start + "needs CAP_SYS_PTRACE, and CAP_DAC_READ_SEARCH for other users' processes" + end],
    }


LISTEN_AS = textwrap.dedent(
    """
    import socket, sys
    t = socket.socket()
    t.bind(("127.0.0.1", 0))
    t.listen(8)
    print(t.getsockname()[1], flush=True)
    sys.stdin.readline()
    """
)
#: the scan of listening sockets as the collector seeds with them: each port's owner, as JSON
SCAN_OWNERS = "import json; from netspy_tui.collector.ebpf import listeners as L; s = L.scan(True); " \
    "print(json.dumps({int(k['port']): int(v['tgid']) for k, v in zip(s.keys, s.values)}))"  # fmt: skip


def _capabilities(caps: list[str]) -> list[str]:
    """setpriv's prefix that runs a command as root with only ``caps`` (Kubernetes' names) in its bounding set."""
    return ["setpriv", "--bounding-set=-all," + ",".join("+" + c.lower() for c in caps), "--inh-caps=-all", "--"]


@pytest.mark.ebpf
@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0, reason="needs setpriv, as root")
def test_without_the_capabilities_to_read_other_processes_files_the_note_says_so(tmp_path: Path) -> None:
    """The DaemonSet granted BPF, PERFMON and SYS_RESOURCE: the agent could not read the open files of processes
    with capabilities it lacks (CAP_SYS_PTRACE) or of other users (CAP_DAC_READ_SEARCH), so every server that
    listened before it had its inbound connections charged to pid 0, and the note said "no process holds" them.
    Run as the agent runs (``serve --collector=ebpf`` with only those capabilities): the note names the cause.
    With the manifest's capabilities, a root server's socket and another user's are seeded with their pids."""
    import json

    import httpx
    import yaml

    from tests.hardening.conftest import free_port as free_tcp_port
    from tests.hardening.conftest import product_env

    as_another_user = ["setpriv", "--reuid=10001", "--regid=10001", "--clear-groups", "--"]
    servers = [
        subprocess.Popen(
            [*prefix, sys.executable, "-c", LISTEN_AS], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for prefix in ([], as_another_user)
    ]
    try:
        owners = {int(s.stdout.readline()): s.pid for s in servers}  # type: ignore[union-attr]
        env = product_env(tmp_path, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
        port = free_tcp_port()
        agent = subprocess.Popen([*_capabilities(["BPF", "PERFMON", "SYS_RESOURCE"]), sys.executable, "-m",
                                  "netspy_tui", "serve", "--collector=ebpf", "--port", str(port), "--db",
                                  str(tmp_path / "events.db")], env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert agent.stderr is not None
            for line in agent.stderr:
                if "serving the eBPF server API on" in line:
                    break
            else:
                pytest.fail(f"serve exited ({agent.wait()}) before it served")
            notes = httpx.get(f"http://127.0.0.1:{port}/health", timeout=20).json().get("notes", [])
        finally:
            agent.terminate()
            agent.wait(timeout=20)
        said = [n for n in notes if "listened before the collector started" in n]
        assert len(said) == 1 and "could not read the open files of" in said[0], notes
        assert "(needs CAP_SYS_PTRACE, and CAP_DAC_READ_SEARCH for other users' processes)" in said[0]
        assert not [n for n in notes if "no process holds" in n], notes
        manifest = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "agent.yaml"
        daemonset = next(d for d in yaml.safe_load_all(manifest.read_text()) if d and d["kind"] == "DaemonSet")
        caps = daemonset["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"]
        scanned = subprocess.run([*_capabilities(caps), sys.executable, "-c", SCAN_OWNERS], env=env,
                                 capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        seeded = {int(p): pid for p, pid in json.loads(scanned.stdout).items()}
        assert {p: seeded.get(p) for p in owners} == owners
    finally:
        for s in servers:
            s.kill()
            s.wait()
