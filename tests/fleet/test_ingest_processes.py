"""``serve --aggregate`` reads and checks ingest bodies in processes of their own (``--ingest-processes``,
:mod:`netspy_tui.fleet.prep`): the answers are the same as checking them in the server's process, a checking process
that dies costs no body, and the processes go with the server (Ctrl-C included)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from netspy_tui.fleet.prep import IngestChecker, parse_and_check
from netspy_tui.fleet.store import BadBatch, FleetStore, parse_batch
from netspy_tui.store import jsonblocks as J
from tests.factories import connection_json, drop_json
from tests.hardening.conftest import REPO, Child, free_port, product_env, spawn  # noqa: F401 (fixtures)
from tests.hardening.test_security import served_url

INGEST_TOKEN = "processes-ingest-secret"
AGENT = {"Authorization": f"Bearer {INGEST_TOKEN}"}


def whole(checked: Any) -> Any:
    """A checked batch with each row's JSON (a checking process sends it in the node's blocks only): what the
    storing process stores either way."""
    if checked is None:
        return None
    by_node = {node: [(e[0], e[1], e[2], row, e[4])
                      for e, row in zip(events, J.with_bodies([e[3] for e in events], checked.blocks[node])
                                        if node in checked.blocks and J.bodiless([e[3] for e in events[:1]])
                                        else [e[3] for e in events], strict=True)]
               for node, events in checked.by_node.items()}  # fmt: skip
    return (by_node, checked.rejected, checked.blocks)


def mixed_body() -> bytes:
    """A batch with good events of two nodes, bad ones of each kind of refusal, one only the model takes (an id
    given as null) and a retried event (the same id twice)."""
    events: list[Any] = [connection_json(pid=10 + i, ago=5, k8s_node_name=f"node-{i % 2}") for i in range(6)]
    events.append(drop_json(pid=9, ago=4, k8s_node_name="node-1"))
    events.append({**connection_json(pid=11, ago=3, k8s_node_name="node-0"), "destination_ip": "not-an-ip"})
    events.append({**connection_json(pid=12, ago=3, k8s_node_name="node-0"), "pid": "12"})
    events.append(connection_json(pid=13, ago=3, k8s_node_name="bad node!"))
    events.append({**connection_json(pid=14, ago=3, k8s_node_name="node-1"), "id": None})
    events.append(events[0])
    events.append("not an event")
    return json.dumps({"events": events}).encode()


def stored(fleet: FleetStore) -> dict[str, list[tuple[Any, ...]]]:
    """Each node's stored rows (time, pid, command, outcome, JSON) and rollup counts."""
    out = {}
    for node, store in sorted(fleet.nodes().items()):
        with store._reader() as conn:
            out[node] = [
                *conn.execute(
                    "SELECT kind, second, pid, command, destination, port, outcome, n FROM rollup "
                    "ORDER BY 1, 2, 3, 4, 5, 6, 7"
                ).fetchall(),  # fmt: skip
                *(tuple(e.model_dump(mode="json").items()) for _, e in store.after(0, 100, 2**62)[0]),
            ]
    return out


def good_body() -> bytes:
    """A batch every event of which is valid (read in one pass, as structs)."""
    events = [connection_json(pid=30 + i, ago=6, k8s_node_name="node-2", outcome="refused") for i in range(3)]
    events.append(drop_json(pid=39, ago=6, k8s_node_name="node-2"))
    return json.dumps({"events": events}).encode()


def test_a_body_checked_and_packed_for_the_way_back_is_stored_as_if_checked_here(tmp_path: Path) -> None:
    here, there = FleetStore(tmp_path / "here"), FleetStore(tmp_path / "there")
    mixed = mixed_body()
    try:
        # (the mixed batch again: an agent's retry, its events already stored)
        for raw, (accepted, duplicates, rejected) in ((mixed, (7, 1, 5)), (good_body(), (4, 0, 0)), (mixed, (0, 8, 5))):
            direct = here.ingest(parse_batch(raw))
            parsed = parse_and_check(raw, 5000, pack=True)
            assert isinstance(parsed.checked, bytes)  # (what a checking process sends back)
            batch = parsed.batch()
            assert batch is not None
            packed = there.store_checked(batch)
            assert (packed.accepted, packed.duplicates, packed.rejected, packed.nodes) == (
                direct.accepted, direct.duplicates, direct.rejected, direct.nodes)  # fmt: skip
            assert (direct.accepted, direct.duplicates, len(direct.rejected)) == (accepted, duplicates, rejected)
        assert parse_and_check(mixed_body(), 5000).wanted == {"node-0": 6, "node-1": 5, "bad node!": 1, "": 1}
        assert stored(here) == stored(there)
        assert len(stored(here)) == 3
    finally:
        here.close()
        there.close()


def test_a_body_over_the_event_limit_is_not_checked() -> None:
    parsed = parse_and_check(mixed_body(), 5, pack=True)
    assert parsed.count == 13 and parsed.checked is None and parsed.batch() is None


@pytest.mark.parametrize("body", [mixed_body, good_body])
def test_a_checking_process_answers_as_the_server_would_and_a_dead_one_costs_no_body(
    body: Callable[[], bytes],
) -> None:
    raw = body()
    with IngestChecker(1) as checker:
        answer = checker.submit(raw, 5000).result(timeout=60)
        here = parse_and_check(raw, 5000, pack=True)
        assert isinstance(answer.checked, bytes)
        assert (answer.count, answer.wanted, whole(answer.batch())) == (here.count, here.wanted, whole(here.batch()))
        with pytest.raises(BadBatch, match="not valid JSON"):
            checker.submit(b"{nope", 5000).result(timeout=60)
        (worker,) = checking(psutil.Process())
        worker.kill()
        worker.wait(10)
        future = checker.submit(raw, 5000)
        try:
            future.result(timeout=60)
            pytest.fail("a body sent to a dead process came back")  # (the pool sees its process die first)
        except Exception as exc:
            assert type(exc).__name__ == "BrokenProcessPool", exc
        again = checker.broke(raw, 5000, future)  # (checked here, new processes started)
        assert whole(again.batch()) == whole(here.batch()) and checker.restarts == 1
        assert whole(checker.submit(raw, 5000).result(timeout=60).batch()) == whole(here.batch())
        (new,) = checking(psutil.Process())
        assert new.pid != worker.pid
    assert not checking(psutil.Process()), "the checking processes outlived their checker"


def checking(proc: psutil.Process) -> list[psutil.Process]:
    """``proc``'s checking processes (not multiprocessing's resource tracker, which it starts beside them)."""
    found = []
    for child in proc.children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.Error:
            pass
    return found


def aggregator(spawn: Callable[..., Child], db: Path, *more: str) -> tuple[Child, str]:  # noqa: F811
    child = spawn("serve", "--aggregate", "--port", str(free_port()), "--db", str(db), "--ingest-token",
                  INGEST_TOKEN, *more)  # fmt: skip
    return child, served_url(child, "the aggregator API")


def checkers(child: Child) -> list[psutil.Process]:
    """The aggregator's checking processes (its children running multiprocessing's spawn), once started."""
    proc = psutil.Process(child.proc.pid)
    deadline = time.monotonic() + 30
    while True:
        found = checking(proc)
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_the_aggregator_keeps_every_body_when_its_checking_process_is_killed(
    tmp_path: Path,
    spawn: Callable[..., Child],  # noqa: F811
) -> None:
    child, url = aggregator(spawn, tmp_path / "fleet", "--ingest-processes", "1")
    (worker,) = checkers(child)
    first = [connection_json(pid=20 + i, ago=5, k8s_node_name="node-a") for i in range(5)]
    answer = httpx.post(url + "/api/events/ingest", json={"events": first}, headers=AGENT, timeout=30).json()
    assert answer["events_processed"] == 5
    assert httpx.get(url + "/health", timeout=10).json()["ingest_check_restarts"] == 0
    worker.kill()
    worker.wait(10)
    for round_ in range(3):  # (the one in flight when it died, and those after it: each answered, none lost)
        events = [connection_json(pid=40 + 10 * round_ + i, ago=4, k8s_node_name="node-b") for i in range(4)]
        answer = httpx.post(url + "/api/events/ingest", json={"events": events}, headers=AGENT, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["events_processed"] == 4
    health = httpx.get(url + "/health", timeout=10).json()
    assert health["ingest_check_restarts"] == 1 and health["ingest_check_processes"] == 1
    assert health["stats"]["events_by_node"] == {"node-a": 5, "node-b": 12}
    bad = httpx.post(url + "/api/events/ingest", content=b"{nope", headers=AGENT, timeout=30)
    assert bad.status_code == 400 and "not valid JSON" in bad.text
    (new,) = checkers(child)
    assert new.pid != worker.pid
    assert any("a checking process died" in line for line in child.err)
    assert child.stop() == 128 + signal.SIGTERM  # (serve's exit after SIGTERM, its cleanup done)
    assert not checking(psutil.Process()) and not new.is_running() or new.status() == psutil.STATUS_ZOMBIE


def test_no_checking_process_with_ingest_processes_0(tmp_path: Path, spawn: Callable[..., Child]) -> None:  # noqa: F811
    child, url = aggregator(spawn, tmp_path / "fleet", "--ingest-processes", "0")
    events = [connection_json(pid=7, ago=5, k8s_node_name="node-a"), drop_json(pid=8, ago=5, k8s_node_name="node-a")]
    answer = httpx.post(url + "/api/events/ingest", json={"events": events}, headers=AGENT, timeout=30).json()
    assert answer["events_processed"] == 2
    assert not checking(psutil.Process(child.proc.pid))
    assert "ingest_check_restarts" not in httpx.get(url + "/health", timeout=10).json()


def test_ingest_processes_is_an_aggregator_flag(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "netspy_tui", "serve", "--ingest-processes", "1"], cwd=REPO,
                          env=product_env(tmp_path), capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert "--ingest-processes applies to serve --aggregate only" in done.stderr
    assert "Traceback" not in done.stderr


def test_ctrl_c_stops_the_aggregator_and_its_checking_processes_quietly(tmp_path: Path) -> None:
    """A terminal's Ctrl-C goes to the whole process group: the checking processes ignore it (no traceback of
    theirs), the server stops and takes them with it."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "netspy_tui", "serve", "--aggregate", "--port", str(port), "--db",
         str(tmp_path / "fleet"), "--ingest-token", INGEST_TOKEN, "--ingest-processes", "1"],
        cwd=REPO, env=product_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # (as a terminal starts it)
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        workers: list[psutil.Process] = []
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    workers = checking(psutil.Process(proc.pid))
                    if workers:
                        break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        assert workers, "the aggregator did not start with its checking process"
        events = [connection_json(pid=7, ago=5, k8s_node_name="node-a")]
        assert httpx.post(url + "/api/events/ingest", json={"events": events}, headers=AGENT,
                          timeout=30).json()["events_processed"] == 1  # fmt: skip
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, "a checking process outlived the aggregator"


def test_processes_that_die_before_answering_anything_are_not_started_again() -> None:
    """Processes that cannot start (here: killed before their first answer) would die again: the checker gives up
    on them after the first break and the server checks every body itself."""
    raw = good_body()
    with IngestChecker(1) as checker:
        started = checking(psutil.Process())
        assert started and not checker._answered  # (their imports take far longer than this)
        for process in started:
            process.kill()
        first = checker.submit(raw, 5000)
        with pytest.raises(Exception) as broken:
            first.result(timeout=60)
        assert type(broken.value).__name__ == "BrokenProcessPool"
        assert whole(checker.broke(raw, 5000, first).batch()) == whole(parse_and_check(raw, 5000).batch())
        assert checker.given_up and checker.restarts == 0
        assert not checking(psutil.Process())
        later = checker.submit(raw, 5000)
        with pytest.raises(Exception) as again:  # (answered at once: the server checks it)
            later.result(timeout=1)
        assert type(again.value).__name__ == "BrokenProcessPool"
        assert whole(checker.broke(raw, 5000, later).batch()) == whole(parse_and_check(raw, 5000).batch())
        assert checker.given_up and checker.restarts == 0 and not checking(psutil.Process())


def test_bodies_in_flight_when_a_checking_process_dies_start_new_processes_once() -> None:
    """Every body a dead process held comes back broken; the first starts new processes, the others (of the same
    dead processes) do not stop those again."""
    from bench import fleet

    raw = fleet.make_bodies("node-x", 5000, 7)[0]  # (a batch that takes the process a while)
    with IngestChecker(1) as checker:
        checker.submit(raw, 5000).result(timeout=60)
        held = [checker.submit(raw, 5000) for _ in range(12)]  # (~0.5 s of work: the kill comes long before)
        (worker,) = checking(psutil.Process())
        worker.kill()
        broken = []
        for future in held:
            try:
                future.result(timeout=60)
            except Exception as exc:  # noqa: BLE001 (the broken ones: each checked here instead)
                assert type(exc).__name__ == "BrokenProcessPool", exc
                broken.append(future)
        assert broken, "the killed process answered every body"
        expected = whole(parse_and_check(raw, 5000).batch())
        for future in broken:
            assert whole(checker.broke(raw, 5000, future).batch()) == expected
        assert checker.restarts == 1 and not checker.given_up
        (new,) = checking(psutil.Process())
        assert new.pid != worker.pid
        assert whole(checker.submit(raw, 5000).result(timeout=60).batch()) == expected


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({}, None),  # (no cgroup limit known: the CPUs of this machine)
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 1.5),  # (a container limited to 1.5 CPUs: one process does it all)
        ({"cpu.max": "400000 100000\n"}, 4.0),
        ({"cpu.max": "200000 100000\n"}, 2.0),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # (cgroup v1)
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1.0),
    ],
)
def test_the_default_processes_follow_the_cpus_a_container_may_use(
    tmp_path: Path, files: dict[str, str], quota: float | None
) -> None:
    from netspy_tui.fleet.prep import cpu_quota, default_workers

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cpu_quota(tmp_path) == quota
    usable = len(os.sched_getaffinity(0)) if quota is None else min(len(os.sched_getaffinity(0)), int(quota))
    assert default_workers(tmp_path) == max(0, min(2, usable - 1))  # (a core for the storing process, at most 2)
    if quota is not None and quota < 2:
        assert default_workers(tmp_path) == 0
