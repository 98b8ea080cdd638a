"""A real ``netspy-tui serve --aggregate`` on 127.0.0.1, driven as agents and readers drive it: what it
answers about nodes, what /metrics writes of untrusted names, what ingest refuses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.factories import connection_json, drop_json
from tests.hardening.conftest import Child, free_port, spawn  # noqa: F401 (fixtures)
from tests.hardening.test_security import served_url

INGEST_TOKEN = "review-ingest-secret"
AGENT = {"Authorization": f"Bearer {INGEST_TOKEN}"}


def aggregator(spawn: Callable[..., Child], db: Path, *more: str) -> tuple[Child, str]:  # noqa: F811
    child = spawn("serve", "--aggregate", "--port", str(free_port()), "--db", str(db), "--ingest-token",
                  INGEST_TOKEN, *more)  # fmt: skip
    return child, served_url(child, "the aggregator API")


def ingest(url: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    answer = httpx.post(url + "/api/events/ingest", json={"events": events}, headers=AGENT, timeout=20)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_total_nodes_counts_the_nodes_listed_with_events(tmp_path: Path, spawn: Callable[..., Child]) -> None:  # noqa: F811
    _, url = aggregator(spawn, tmp_path / "fleet")
    events = [connection_json(pid=10 + i, ago=5, k8s_node_name=f"node-{i}") for i in range(4)]
    events.append(drop_json(pid=9, ago=5, k8s_node_name="node-2"))
    assert ingest(url, events)["events_processed"] == 5
    for path, by_node in (("/api/connection-summary", {f"node-{i}": 1 for i in range(4)}),
                          ("/api/packet-drop-summary", {"node-2": 1})):  # fmt: skip
        summary = httpx.get(url + path, params={"duration_seconds": 600}, timeout=10).json()
        # the contract: total_nodes is the "number of nodes with events"; count_by_node lists those nodes
        assert summary["count_by_node"] == by_node, path
        assert summary["total_nodes"] == len(by_node) and summary["count"] == sum(by_node.values()), path


def test_metrics_write_a_process_name_with_escape_sequences_as_visible_text(
    tmp_path: Path,
    spawn: Callable[..., Child],  # noqa: F811
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    _, url = aggregator(spawn, tmp_path / "fleet")
    hostile = "[bold red]x\x1b[2J\x07"
    ingest(url, [connection_json(pid=7, command=hostile, ago=3, k8s_node_name="node-a", outcome="refused"),
                 drop_json(pid=8, command="ok\x9b2J", ago=3, k8s_node_name="node-a")])  # fmt: skip
    body = httpx.get(url + "/metrics", timeout=10).text
    assert not any(ch in body for ch in "\x1b\x07\x9b"), "a control character reached the exposition"
    labels: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            for value in sample.labels.values():
                assert value.isprintable(), (family.name, value)
            if family.name in ("netspy_connects", "netspy_packet_drops"):
                labels[sample.labels["process"]] = sample.value
    assert labels == {"[bold red]x\\x1b[2J\\x07": 1.0, "ok\\x9b2J": 1.0}  # the escapes the tools show


def test_health_says_unhealthy_with_why_while_every_ingest_fails_and_healthy_again_after(
    tmp_path: Path,
    spawn: Callable[..., Child],  # noqa: F811
) -> None:
    base = tmp_path / "volume"
    base.mkdir(mode=0o755)
    _, url = aggregator(spawn, base / "fleet")
    assert httpx.get(url + "/health", timeout=10).json()["status"] == "healthy"
    base.chmod(0o777)  # after the start's check: now anyone could plant links beside a node's new store
    event = connection_json(pid=5, ago=2, k8s_node_name="node-a")
    refused = httpx.post(url + "/api/events/ingest", json={"events": [event]}, headers=AGENT, timeout=20)
    assert refused.status_code == 503 and "writable by other users" in refused.text
    health = httpx.get(url + "/health", timeout=10)
    assert health.status_code == 503 and health.json()["status"] == "unhealthy", health.text
    assert "node-a" in health.json()["detail"] and "writable by other users" in health.json()["detail"]
    assert all(isinstance(v, str) for v in health.json().values())  # the contract's 503: strings only
    assert "netspy_source_up 0.0" in httpx.get(url + "/metrics", timeout=10).text
    base.chmod(0o755)
    assert ingest(url, [event])["events_processed"] == 1  # the agent's retry
    health = httpx.get(url + "/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "healthy" and "detail" not in health.json()
    assert health.json()["store_failures"] == 1
    assert "netspy_source_up 1.0" in httpx.get(url + "/metrics", timeout=10).text


def test_probes_need_no_token_say_nothing_but_ok_and_fail_readiness_while_ingest_fails(
    tmp_path: Path,
    spawn: Callable[..., Child],  # noqa: F811
) -> None:
    """A kubelet probe sends no token: /health (401 without it) could not be probed, so the manifests probed the
    TCP port and an aggregator whose every ingest failed (503) stayed Ready. /livez and /readyz answer without the
    token, with nothing but ok/unhealthy; the Host check still applies; everything else still wants the token."""
    base = tmp_path / "volume"
    base.mkdir(mode=0o755)
    _, url = aggregator(spawn, base / "fleet", "--token", "read-secret")
    for path in ("/livez", "/readyz"):
        answer = httpx.get(url + path, timeout=10)
        assert (answer.status_code, answer.text) == (200, "ok\n"), (path, answer.text)
        assert httpx.get(url + path, headers={"Host": "evil.example"}, timeout=10).status_code == 421
    assert httpx.get(url + "/health", timeout=10).status_code == 401
    assert httpx.get(url + "/livez/x", timeout=10).status_code == 401  # (exactly those paths)
    base.chmod(0o777)  # the store cannot be written from now on (as on a full disk): every ingest is a 503
    event = connection_json(pid=5, ago=2, k8s_node_name="node-a")
    refused = httpx.post(url + "/api/events/ingest", json={"events": [event]}, headers=AGENT, timeout=20)
    assert refused.status_code == 503
    ready = httpx.get(url + "/readyz", timeout=10)
    assert (ready.status_code, ready.text) == (503, "unhealthy\n")  # (why: /health, behind the token)
    assert httpx.get(url + "/livez", timeout=10).status_code == 200  # (a restart would not make the disk room)
    base.chmod(0o755)
    assert ingest(url, [event])["events_processed"] == 1
    assert httpx.get(url + "/readyz", timeout=10).status_code == 200


def test_a_restart_keeps_when_aggregation_started_and_the_counters_count_since_this_start(
    tmp_path: Path,
    spawn: Callable[..., Child],  # noqa: F811
) -> None:
    """/api/stats' aggregation_start went to the restart's time while total_events and events_by_node kept all
    that was stored; /metrics' netspy_events_seen_total ("since it started") was all stored history while
    netspy_connects_total started again from 0. Now: the stored figures keep when aggregation started, and every
    /metrics counter counts since this server started (a counter's reset on restart, as Prometheus expects)."""
    from prometheus_client.parser import text_string_to_metric_families

    def metrics(url: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
            for sample in family.samples:
                if sample.name in ("netspy_events_seen_total", "netspy_connects_total"):
                    out[sample.name] = out.get(sample.name, 0.0) + sample.value
        return out

    db = tmp_path / "fleet"
    child, url = aggregator(spawn, db)
    ingest(url, [connection_json(pid=5, port=100 + i, ago=3, k8s_node_name="node-a") for i in range(4)])
    first = httpx.get(url + "/api/stats", timeout=10).json()
    assert first["total_events"] == 4
    assert metrics(url) == {"netspy_events_seen_total": 4.0, "netspy_connects_total": 4.0}
    child.stop()
    child, url = aggregator(spawn, db)
    again = httpx.get(url + "/api/stats", timeout=10).json()
    assert again["total_events"] == 4 and again["events_by_node"] == {"node-a": 4}
    assert again["aggregation_start"] == first["aggregation_start"], (first, again)  # (not this start's time)
    help_text = httpx.get(url + "/metrics", timeout=10).text
    assert "# HELP netspy_events_seen_total Events seen since this server started" in help_text
    assert metrics(url) == {"netspy_events_seen_total": 0.0}  # (no connects since this start: no series)
    ingest(url, [connection_json(pid=5, port=200 + i, ago=2, k8s_node_name="node-a") for i in range(3)])
    assert metrics(url) == {"netspy_events_seen_total": 3.0, "netspy_connects_total": 3.0}
    assert httpx.get(url + "/api/stats", timeout=10).json()["total_events"] == 7
    child.stop()


def _as_user_10001(work: Callable[[], None]) -> None:
    """``work`` in a forked child that has become uid/gid 10001 (the manifest's runAsUser, runAsGroup and
    fsGroup): this interpreter lives under /root, which that user cannot run, so not as a subprocess."""
    import os
    import traceback

    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 1
        try:
            os.setgroups([10001])
            os.setresgid(10001, 10001, 10001)
            os.setresuid(10001, 10001, 10001)
            work()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the work as user 10001 failed (its traceback is above)"


def _group_writable_volume(prefix: str) -> tuple[Path, Path]:
    """A fresh directory (0755, removed by the caller) holding ``volume``: root:10001, 2775, as a Kubernetes volume's
    root is under the manifest's fsGroup."""
    import os
    import tempfile

    top = Path(tempfile.mkdtemp(prefix=prefix))
    top.chmod(0o755)
    volume = top / "volume"
    volume.mkdir()
    os.chown(volume, 0, 10001)
    volume.chmod(0o2775)
    return top, volume


@pytest.mark.root  # (becomes user 10001 and chowns to it)
def test_the_manifests_volume_under_fs_group_works_as_shipped() -> None:
    """aggregator.yaml runs as 10001 with fsGroup 10001: the volume's root is root:10001, 2775, and kubelet
    makes what is on it group-writable at each mount. The aggregator, as that user, makes its stores'
    directory there (0700), keeps it so, and stores; as root, the same volume is still refused."""
    import os
    import shutil

    from netspy_tui.errors import UsageError
    from netspy_tui.fleet.store import FleetStore

    top, volume = _group_writable_volume("netspy-fsgroup-")
    try:
        store = volume / "fleet"

        rounds = []

        def run() -> None:
            fleet = FleetStore(store)
            result = fleet.ingest([connection_json(pid=5, ago=2, k8s_node_name="node-a", id=f"round-{len(rounds)}")])
            assert (result.accepted, result.rejected) == (1, []), (result, len(rounds))
            assert fleet.health()[0] == "healthy"
            fleet.close()

        for _ in range(2):  # the second: after a remount, kubelet having made the directory group-writable
            _as_user_10001(run)
            rounds.append(1)
            st = store.stat()
            assert st.st_uid == 10001 and st.st_mode & 0o777 == 0o700
            for path in [store, *store.iterdir()]:  # what kubelet's fsGroup change does at each mount
                os.chown(path, -1, 10001)
                path.chmod(path.stat().st_mode | (0o2070 if path.is_dir() else 0o060))
        with pytest.raises(UsageError, match="writable by other users"):  # root: its rules unchanged
            FleetStore(top / "volume" / "as-root")
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.root  # (becomes user 10001 and chowns to it)
def test_only_the_aggregators_stores_take_a_group_writable_parent() -> None:
    """The group rule is the aggregator's (its volume under fsGroup): another store of the same user under the
    same group-writable directory (a dashboard's --db) is refused as before."""
    import shutil

    from netspy_tui import safefs
    from netspy_tui.fleet.store import FleetStore

    top, shared = _group_writable_volume("netspy-group-")
    try:

        def run() -> None:
            FleetStore(shared / "fleet").close()  # the aggregator's: taken
            mine = shared / "mine"
            mine.mkdir(mode=0o700)
            with pytest.raises(safefs.UnsafePath, match="writable by other users"):
                safefs.check_db_path(mine / "history.sqlite3", creating=True)

        _as_user_10001(run)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_an_existing_directory_of_other_things_is_never_re_moded(tmp_path: Path) -> None:
    """``serve --aggregate --db /var/lib`` (or /tmp, or ~) must not make that directory 0700: only a directory
    the aggregator made, or one holding nothing but its node stores, is tightened."""
    from netspy_tui.fleet.store import FleetStore

    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "someone-elses.conf").write_text("x\n")
    shared.chmod(0o755)
    FleetStore(shared).close()
    assert shared.stat().st_mode & 0o7777 == 0o755
    ours = tmp_path / "ours"
    FleetStore(ours).close()  # made here: 0700
    ours.chmod(0o750)  # (loosened since: holds only its stores' files, so tightened again)
    FleetStore(ours).close()
    assert ours.stat().st_mode & 0o777 == 0o700


def test_ingest_refuses_what_the_contract_types_do_not_allow_and_keeps_the_rest(
    tmp_path: Path,
    spawn: Callable[..., Child],  # noqa: F811
) -> None:
    _, url = aggregator(spawn, tmp_path / "fleet")
    good = connection_json(pid=7, ago=2, k8s_node_name="node-a", outcome="refused")
    bad: list[tuple[dict[str, Any], str]] = [
        ({"time": "2099-01-01T00:00:00Z"}, "time: 2099-01-01T00:00:00"),
        ({"pid": -5}, "pid: must be 0 to"),
        ({"pid": True}, "pid: must be an integer, got a boolean"),
        ({"pid": "32"}, "pid: must be an integer, got a string"),
        ({"destination_port": 99999}, "destination_port: must be 0 to 65535"),
        ({"destination_ip": "not-an-ip"}, "destination_ip: not an IP address"),
        ({"outcome": "weird"}, "outcome: must be one of ok, in_progress"),
        ({"time": "1969-12-31T23:59:59Z"}, "time: before 1970"),
        # before the first UTC instant a datetime holds, after the last: a 500, the whole batch lost (an audit's)
        ({"time": "0001-01-01T00:00:00+05:30"}, "time: Value error, must be between 1678-01-01"),
        ({"time": "9999-12-31T23:59:59-05:00"}, "time: Value error, must be between 1678-01-01"),
        # the contract's u32/int32 fields and raw_ipv6's 16 bytes; a time as a number (served back as 1970)
        ({"raw_ipv4": 2**64}, "raw_ipv4: must be 0 to 4294967295, got 18446744073709551616"),
        ({"raw_ipv4": -1}, "raw_ipv4: must be 0 to 4294967295, got -1"),
        ({"return_code": 2**40}, "return_code: must be -2147483648 to 2147483647"),
        ({"raw_ipv6": [300] + [0] * 15}, "raw_ipv6: must be at most 16 bytes, each 0 to 255"),
        ({"socket_family": 2**64}, "socket_family: must be 0 to 65535"),
        ({"time": 5}, "time: must be an RFC3339 string, got an integer"),
    ]
    events = [{**good, **change, "id": f"bad{i}"} for i, (change, _) in enumerate(bad)] + [good]
    answer = ingest(url, events)
    assert answer["events_processed"] == 1 and answer["success"] is False
    reasons = {r["index"]: r["reason"] for r in answer["rejected"]}
    for i, (_, why) in enumerate(bad):
        assert why in reasons.get(i, ""), (i, reasons.get(i))
    # the fast path (every event of the batch of a valid shape) refuses the same
    future = {**good, "id": "future", "time": "2099-01-01T00:00:00.000000Z"}
    answer = ingest(url, [future, {**good, "id": "ipv6", "destination_ip": "2001:db8::1"}])
    assert answer["events_processed"] == 1 and answer["rejected"][0]["index"] == 0
    stats = httpx.get(url + "/api/stats", timeout=10).json()
    assert stats["total_events"] == 2 and not stats["last_event_time"].startswith("2099")
    newest = httpx.get(url + "/api/events", params={"limit": 1}, timeout=10).json()["events"][0]
    assert newest["time"] == good["time"]


def _write_in_a_child_that_dies(work: Callable[[], None]) -> None:
    """``work``, then the process ends without closing anything (as ``kill -9`` ends an aggregator)."""
    import os

    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 1
        try:
            work()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_store_an_older_version_let_hold_an_event_from_2099_opens_and_answers(
    tmp_path: Path,
    spawn: Callable[..., Child],  # noqa: F811
) -> None:
    """Its loader walked from 2099 down to the last hour a minute at a time (days of CPU): /api/window-stats
    never answered, nor the MCP tools that read it."""
    from netspy_tui.models import parse_event
    from netspy_tui.store import EventStore

    directory = tmp_path / "fleet"
    directory.mkdir(mode=0o700)

    def legacy() -> None:
        store = EventStore(directory / "node-legacy.sqlite3")
        store.set_meta("fleet_node", "node-a")
        store.add_events([parse_event(connection_json(pid=3, ago=5, k8s_node_name="node-a")),
                          parse_event({**connection_json(pid=4, k8s_node_name="node-a"),
                                       "time": "2099-01-01T00:00:00Z"})])  # fmt: skip

    _write_in_a_child_that_dies(legacy)
    _, url = aggregator(spawn, directory)
    stats = httpx.get(url + "/api/window-stats", params={"duration_seconds": 600}, timeout=15)
    assert stats.status_code == 200, stats.text
    assert httpx.get(url + "/api/connection-summary", params={"duration_seconds": 600}, timeout=15).json()["count"] == 1


def test_a_store_failure_of_a_node_whose_agent_stopped_trying_ages_out() -> None:
    """A node drained after its store failed: once its agent has not tried for FAILURE_SECONDS the aggregator is
    healthy again (it stayed degraded, then unhealthy with a 503 once the fleet went quiet)."""
    import time

    from netspy_tui.fleet import store as S

    fleet = S.FleetStore(None)
    try:
        fleet._failures["node-gone"] = (time.monotonic() - 10, "disk full")
        assert fleet.health()[0] == "unhealthy" and "node-gone" in fleet.health()[1]
        fleet._failures["node-gone"] = (time.monotonic() - S.FAILURE_SECONDS - 1, "disk full")
        assert fleet.health() == ("healthy", "")
    finally:
        fleet.close()
