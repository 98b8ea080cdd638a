"""Workloads reach the aggregator: ``serve --forward`` sends each event with its process's workload on the agent's
host (``ConnectionEvent.workload``: the name ``list_processes`` with ``group_by='workload'`` gives there), so the
aggregator's ``group_by='workload'``, ``--workload`` filters and the dashboard's grouping (``g``) have it. A ring
record's is its cgroup id's (the process's cgroup when the event happened: a connect's outcome sent late says the
same); an event stored as JSON gets its pid's when it is this host's (procfs), and keeps its own (a recording's,
whose pids are not this host's processes) otherwise. Against real servers on 127.0.0.1, with cgroups the tests
make under the cgroup2 mount (root)."""

from __future__ import annotations

import errno
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import synth
from netspy_tui.collector.base import Batch
from netspy_tui.collector.ebpf import programs as P
from netspy_tui.fleet.store import FleetStore
from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.names.workload import WorkloadResolver, cgroup2_mount
from netspy_tui.serve import forward as F
from netspy_tui.serve.aggregate import INGEST_PATH
from netspy_tui.serve.app import event_json
from netspy_tui.serve.forward import SETTLE_SECONDS, Forwarder
from netspy_tui.store import EventStore
from netspy_tui.telemetry.client import HttpSource
from netspy_tui.tui.app import NetspyApp
from netspy_tui.tui.widgets.processes import GROUP_PREFIX
from tests.factories import connection, drop
from tests.fleet.test_fleet_resolutions import (  # noqa: F401 (fixture)
    INGEST_TOKEN,
    NODE,
    READ_TOKEN,
    aggregator,
    fleet_server,
)
from tests.hardening.conftest import Child, Cli, cli, free_port, spawn, wait_until  # noqa: F401 (fixtures)
from tests.hardening.test_security import served_url
from tests.tui.conftest import wait_for
from tests.tui.test_resolved_outcomes import connect, outcome

NS = 1_000_000_000


@contextmanager
def made_cgroup() -> Iterator[Path]:
    """A cgroup of its own under the cgroup2 mount (removed at the end, its processes moved back to the root)."""
    mount = cgroup2_mount()
    if os.geteuid() != 0 or mount is None or not os.access(mount, os.W_OK):
        pytest.skip("needs root and a writable cgroup2 mount")
    path = mount / f"netspy-test-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    try:
        yield path
    finally:
        for pid in (path / "cgroup.procs").read_text().split():
            try:
                (mount / "cgroup.procs").write_text(pid)
            except OSError:  # (exited meanwhile)
                pass
        path.rmdir()


def tool(cli: Cli, url: str, *args: str) -> dict[str, Any]:  # noqa: F811
    """A tool's structured result from the aggregator, as the CLI prints it (``--json``)."""
    run = cli("--server", url, "--token", READ_TOKEN, "--timeout", "60", *args, "--json")
    assert run.returncode == 0, run.stderr
    return dict(json.loads(run.stdout)["data"])


def groups(cli: Cli, url: str) -> dict[str, int]:  # noqa: F811
    """The aggregator's connection attempts by workload (``list_processes --group-by workload``) in 10 minutes."""
    body = tool(cli, url, "--tool", "list_processes", "--group-by", "workload", "--duration", "600")
    return {g["key"]: g["attempts"] for g in body["groups"]}


async def dashboard_groups(url: str, workload: str) -> list[str]:
    """The dashboard on the aggregator, grouped by workload (``g``): the rows under ``workload``'s heading."""
    source = HttpSource(url, retries=0)
    async with open_gateway(source) as gw:
        app = NetspyApp(gw, interval=3600, window=600)
        async with app.run_test(size=(160, 45)) as pilot:
            procs = app.dashboard.processes
            await wait_for(pilot, lambda: len(procs.stats) > 0, "the processes")
            await pilot.press("g")
            heading = GROUP_PREFIX + workload
            await wait_for(pilot, lambda: procs.group_by == "workload" and heading in procs._order, "its heading")
            keys = procs._order
            under = keys[keys.index(heading) + 1 :]
            return list(itertools.takewhile(lambda k: not k.startswith(GROUP_PREFIX), under))


def forwarding_agent(spawn: Callable[..., Child], tmp_path: Path, url: str, *source: str) -> None:  # noqa: F811
    """``serve SOURCE… --forward URL`` (its store in ``tmp_path``), answering."""
    agent = spawn("serve", *source, "--db", str(tmp_path / "agent.sqlite3"), "--port", str(free_port()),
                  "--forward", url, "--forward-interval", "0.5",
                  env={"NETSPY_FORWARD_TOKEN": INGEST_TOKEN, "NODE_NAME": NODE})  # fmt: skip
    served_url(agent, "the eBPF server API")


@contextmanager
def in_cgroup(cgroup: Path, script: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """``python -c SCRIPT ARGS…`` moved into ``cgroup``, then told to go (a line on its stdin); killed at the end."""
    app = subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           text=True)  # fmt: skip
    try:
        (cgroup / "cgroup.procs").write_text(str(app.pid))
        assert app.stdin is not None and app.stdout is not None
        app.stdin.write("go\n")
        app.stdin.flush()
        yield app
    finally:
        if app.poll() is None:
            app.send_signal(signal.SIGKILL)
        app.wait()


# --- a real eBPF agent (root) ---------------------------------------------------------------------

#: N refused connects (no listener: no accepted end, no inbound event), once told to go
CONNECTOR = textwrap.dedent(
    """
    import ctypes, socket, sys
    ctypes.CDLL(None).prctl(15, b"wl_probe", 0, 0, 0)
    sys.stdin.readline()
    for _ in range(int(sys.argv[2])):
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", int(sys.argv[1])))
        except ConnectionRefusedError:
            pass
        s.close()
    print("done", flush=True)
    sys.stdin.readline()
    """
)


@pytest.mark.ebpf
def test_a_real_agents_connects_from_a_cgroup_reach_the_aggregator_with_their_workload(
    tmp_path: Path,
    spawn: Callable[..., Child],  # noqa: F811
    cli: Cli,  # noqa: F811
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (eBPF)")
    port, n = free_port(), 5  # (nothing listens on port: each connect is refused at once)
    with made_cgroup() as cgroup:
        _, url = aggregator(spawn, free_port(), tmp_path / "fleet")
        forwarding_agent(spawn, tmp_path, url, "--collector", "ebpf")
        with in_cgroup(cgroup, CONNECTOR, str(port), str(n)) as app:
            found = WorkloadResolver().of_pid(app.pid)
            assert found is not None
            workload = found.name  # (what list_processes names it on this host: "/netspy-test-…")
            assert workload == "/" + cgroup.name
            assert app.stdout is not None and app.stdout.readline().strip() == "done"

            # (the aggregator's groups are named from its newest 10,000 events in the window: asked as they arrive,
            # before this host's other connects push them out)
            by_workload = wait_until(lambda: (got := groups(cli, url)).get(workload) and got,
                                     f"the connects of {workload} at the aggregator", 60, 0.5)  # fmt: skip
            assert by_workload[workload] == n, by_workload  # (exactly the test's: the agent's own are elsewhere)

            listed = tool(cli, url, "--tool", "list_connections", "--workload", workload)
            events = listed["events"]
            assert len(events) == n and listed["total_count"] == n, listed
            assert {(e["pid"], e["command"], e["destination_port"], e["workload"], e["outcome"]) for e in events} \
                == {(app.pid, "wl_probe", port, workload, "refused")}  # fmt: skip


# --- the forwarder over a store fed ring records as the eBPF collector feeds it ------------------


@pytest.mark.root
async def test_records_carry_their_cgroups_workload_and_an_outcome_sent_late_the_same(
    tmp_path: Path,
    fleet_server: tuple[FleetStore, str],  # noqa: F811
    cli: Cli,  # noqa: F811
) -> None:
    """A connect in progress, a connect and a drop from one cgroup, another process's connect from another; the
    outcome of the connect sent late carries the workload the connect was sent with, though its cgroup is gone by
    then (each id resolved once, while it existed)."""
    _, url = fleet_server
    store = EventStore(tmp_path / "agent.sqlite3")
    codec = synth.codec()
    forwarder = Forwarder(store, url + INGEST_PATH, token=INGEST_TOKEN, identity={"k8s_node_name": NODE},
                          workloads=WorkloadResolver())  # fmt: skip
    old = time.time_ns() - int((SETTLE_SECONDS + 8) * NS)
    slow = connect(4321, b"slowapp", 1, old, 0xABC, result=P.RESULT_PENDING, code=-errno.EINPROGRESS)
    try:
        with made_cgroup() as first, made_cgroup() as second:
            quick = connect(4321, b"slowapp", 2, old + 1000, 0, result=0, code=0)
            other = connect(999, b"otherapp", 3, old + 2000, 0, result=0, code=0)
            dropped = synth.records(1, 0.001, np.random.default_rng(1), drop_share=1.0, now_wall_ns=old + 3000)
            dropped["pid"], dropped["tid"], dropped["comm"] = 4321, 4321, b"slowapp"
            dropped["flags"] &= ~np.uint32(P.F_IRQ)
            recs = np.concatenate([slow, quick, other, dropped])
            ids = [first.stat().st_ino] * 2 + [second.stat().st_ino, first.stat().st_ino]
            recs["cgroup_lo"] = [i & 0xFFFFFFFF for i in ids]
            recs["cgroup_hi"] = [i >> 32 for i in ids]
            store.write([Batch(records=recs, codec=codec)])
            assert await forwarder.forward_once() == 4
        assert not first.exists()  # (gone before the outcome came)
        store.write([Batch(records=outcome(slow, errno.ETIMEDOUT), codec=codec)])
        assert await forwarder.forward_once() == 0 and forwarder.status.resolved == 1
    finally:
        await forwarder._client.aclose()
        store.close()
    workload, elsewhere = "/" + first.name, "/" + second.name

    def ask(*args: str) -> dict[str, Any]:
        run = cli("--server", url, *args, "--json")
        assert run.returncode == 0, run.stderr
        return dict(json.loads(run.stdout)["data"])

    by_workload = ask("--tool", "list_processes", "--group-by", "workload", "--duration", "600")
    assert {g["key"]: g["attempts"] for g in by_workload["groups"]} == {workload: 2, elsewhere: 1}
    listed = ask("--tool", "list_connections", "--workload", workload)["events"]
    assert {(e["destination_ip"], e["outcome"], e["workload"]) for e in listed} == {
        ("10.0.0.1", "timeout", workload), ("10.0.0.2", "ok", workload)}  # fmt: skip
    drops = ask("--tool", "list_packet_drops", "--workload", workload)["events"]
    assert [(e["command"], e["workload"]) for e in drops] == [("slowapp", workload)]
    assert ask("--tool", "list_packet_drops", "--workload", elsewhere)["events"] == []
    # the dashboard on the aggregator, grouped by workload (g): each process under its workload's heading
    assert await dashboard_groups(url, workload) == ["slowapp"]
    assert await dashboard_groups(url, elsewhere) == ["otherapp"]


# --- events stored as JSON ------------------------------------------------------------------------

#: a process that holds one TCP connection open (seen by the procfs sampler), once told to go
HOLDER = textwrap.dedent(
    """
    import socket, sys
    sys.stdin.readline()
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    print("connected", flush=True)
    sys.stdin.readline()
    """
)


@pytest.mark.root
def test_a_procfs_agents_events_carry_their_processes_workload(
    tmp_path: Path,
    spawn: Callable[..., Child],  # noqa: F811
    cli: Cli,  # noqa: F811
) -> None:
    """procfs events are stored as JSON (no cgroup id): the workload is the process's, from its pid."""
    with made_cgroup() as cgroup, socket.socket() as listener:
        _, url = aggregator(spawn, free_port(), tmp_path / "fleet")
        forwarding_agent(spawn, tmp_path, url, "--collector", "procfs")
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        workload = "/" + cgroup.name
        with in_cgroup(cgroup, HOLDER, str(port)) as app:
            assert app.stdout is not None and app.stdout.readline().strip() == "connected"
            accepted = listener.accept()[0]
            wait_until(lambda: groups(cli, url).get(workload), f"the connection of {workload} at the aggregator",
                       60, 0.5)  # fmt: skip
            events = tool(cli, url, "--tool", "list_connections", "--workload", workload)["events"]
            assert events and {(e["pid"], e["destination_port"], e["workload"]) for e in events} == {
                (app.pid, port, workload)}  # fmt: skip
            accepted.close()


def test_a_recordings_events_keep_the_workload_they_were_recorded_with_and_are_given_none(
    tmp_path: Path,
    spawn: Callable[..., Child],  # noqa: F811
    cli: Cli,  # noqa: F811
) -> None:
    """``serve --replay``: the recording's pids are not this host's processes (this test's own pid stands for one):
    an event sends the workload it was recorded with, and one recorded without says none (``unknown``)."""
    recorded = "docker 3f2a9c1b7d4e"
    lines = []
    for i in range(3):
        event = connection(pid=os.getpid(), command="recorded", port=7000 + i, ago=3)
        if i < 2:
            event = event.model_copy(update={"workload": recorded})
        lines.append(json.dumps(event_json(event)))
    lines.append(json.dumps(event_json(drop(pid=os.getpid(), command="recorded", ago=3).model_copy(
        update={"workload": recorded}))))  # fmt: skip
    rec = tmp_path / "recording.jsonl"
    rec.write_text("\n".join(lines) + "\n")
    _, url = aggregator(spawn, free_port(), tmp_path / "fleet")
    forwarding_agent(spawn, tmp_path, url, "--replay", str(rec))
    wait_until(lambda: sum(groups(cli, url).values()) == 3, "the recording at the aggregator", 60, 0.5)
    assert groups(cli, url) == {recorded: 2, "unknown": 1}
    drops = tool(cli, url, "--tool", "list_packet_drops", "--workload", recorded)["events"]
    assert [(e["command"], e["workload"]) for e in drops] == [("recorded", recorded)]
    events = tool(cli, url, "--tool", "list_connections", "--workload", recorded)["events"]
    assert sorted(e["destination_port"] for e in events) == [7000, 7001]


@pytest.mark.root
def test_a_records_workload_is_the_bytes_its_struct_writes_with_it(tmp_path: Path) -> None:
    """Byte for byte, every record shape (the MPTCP connects encoded alone too): the template filled in with the
    workload of the record's cgroup is what encoding its struct with that ``workload`` writes; a cgroup id no
    cgroup has, and 0 (unknown), send none."""
    from tests.serve.test_forward_encoding import _varied_records

    mount = cgroup2_mount()
    assert mount is not None
    resolver = WorkloadResolver()
    with made_cgroup() as cgroup:
        recs = _varied_records()
        ids = np.array([cgroup.stat().st_ino, mount.stat().st_ino, 0, 2**47 - 3], np.uint64)[np.arange(len(recs)) % 4]
        recs["cgroup_lo"], recs["cgroup_hi"] = ids & np.uint64(0xFFFFFFFF), ids >> np.uint64(32)
        names = {int(i): (w.name if (w := resolver.of_cgroup_id(int(i))) else None) for i in ids[:4]}
        assert list(names.values()) == ["/" + cgroup.name, "host", None, None]
        store = EventStore(tmp_path / "spool.db")
        store.write([Batch(records=recs, codec=synth.codec())])

        def structs(codec: Any, recs: np.ndarray, ids: list[str], outcomes: list[str | None]) -> list[Any]:
            made = codec.events(recs, ids, outcomes, connection=F._connection, drop=F._drop, time_of=F._time_text)
            out = []
            for event, cgroup_id in zip(made, P.record_cgroups(recs).tolist(), strict=True):
                if (name := names[cgroup_id]) is not None:
                    if type(event) in F._STRUCTS:
                        event.workload = name
                    else:
                        event = event.model_copy(update={"workload": name})
                out.append(event)
            return out

        identity = {"k8s_node_name": NODE}
        want = F.encode_batch([item for _, item in store.after_stored(0, 1000, 2**62, structs)[0]], identity)
        make = F.RecordJson(identity, F.WorkloadJson(resolver))
        for _ in range(2):  # (the second time from what the first kept)
            got = F.encode_batch([item for _, item in store.after_stored(0, 1000, 2**62, make)[0]], identity)
            assert got == want
        store.close()
    events = json.loads(want)["events"]
    assert sum(e.get("workload") == "/" + cgroup.name for e in events) == 75
    assert sum(e.get("workload") == "host" for e in events) == 75 and sum("workload" in e for e in events) == 150
    assert {e["type"] for e in events if e.get("workload") == "host"} == {"connection", "packet_drop"}
