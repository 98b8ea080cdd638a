"""A connect forwarded in progress gets its outcome at the aggregator: the agent (``serve --forward``) sends it
again, the same event with its outcome, once the connect ends; the aggregator puts it in place of the one it
holds, moves its count from ``in_progress`` (counted once) and gives it to readers that listed it in progress
(``/api/events``' ``resolved_after`` and ``updates``, as ``serve`` answers them). Against real servers on
127.0.0.1: ``serve --aggregate``; the forwarder over a store fed ring records as the eBPF collector feeds it;
and (root) a real eBPF agent whose connect waits on a full accept backlog past the forwarding's settle time."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from bench import synth
from netspy_tui.collector.base import Batch
from netspy_tui.collector.ebpf import programs as P
from netspy_tui.fleet import store as fleet_store
from netspy_tui.fleet.source import FleetSource
from netspy_tui.fleet.store import FleetStore
from netspy_tui.models import EventQuery, Scope
from netspy_tui.serve import BackgroundServer, create_app
from netspy_tui.serve.aggregate import AGENT_PATHS, INGEST_PATH, AggregatorApi, IngestLimits
from netspy_tui.serve.forward import RESOLVED_KEY, SETTLE_SECONDS, Forwarder
from netspy_tui.store import EventStore
from netspy_tui.telemetry.client import HttpSource
from netspy_tui.telemetry.embedded import forwarding_problem
from tests.factories import connection_json
from tests.fake_aggregator import FakeAggregator
from tests.hardening.conftest import Child, free_port, spawn, wait_until  # noqa: F401 (fixture)
from tests.hardening.test_security import served_url
from tests.tui.test_resolved_outcomes import connect, outcome

INGEST_TOKEN = "fleet-ingest-secret"
READ_TOKEN = "fleet-read-secret"
READER = {"Authorization": f"Bearer {READ_TOKEN}"}
AGENT = {"Authorization": f"Bearer {INGEST_TOKEN}"}
NODE = "node-r"
NS = 1_000_000_000


def aggregator(spawn: Callable[..., Child], port: int, db: Path) -> tuple[Child, str]:  # noqa: F811
    child = spawn("serve", "--aggregate", "--port", str(port), "--db", str(db), "--token", READ_TOKEN,
                  "--ingest-token", INGEST_TOKEN)  # fmt: skip
    return child, served_url(child, "the aggregator API")


def ingest(url: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    r = httpx.post(url + INGEST_PATH, json={"events": events}, headers=AGENT, timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json())


def get(url: str, path: str, **params: Any) -> httpx.Response:
    return httpx.get(url + path, params=params, headers=READER, timeout=10)


def outcomes(url: str, **params: Any) -> dict[str, int]:
    """The aggregator's exact counts by outcome (its rollups) of the last 10 minutes."""
    body = get(url, "/api/window-stats", type="connection", duration_seconds=600, **params).json()
    return {c["key"]: c["count"] for c in body["outcomes"]}


def listed(url: str, **params: Any) -> dict[str, tuple[str, int]]:
    """Event id -> (outcome, return code) of the aggregator's /api/events."""
    body = get(url, "/api/events", type="connection", limit=100, **params).json()
    return {e["id"]: (e.get("outcome"), e.get("return_code")) for e in body["events"]}


def test_an_outcome_sent_after_the_connect_in_progress_takes_its_place_counted_once(
    tmp_path: Path,
    spawn: Callable[..., Child],  # noqa: F811
) -> None:
    agg, url = aggregator(spawn, free_port(), tmp_path / "fleet")
    pending = []
    for i, dport in enumerate((8080, 8081)):
        event = connection_json(pid=4242, command="app", port=dport, ago=20, outcome="in_progress", return_code=-115)
        event.update(id=f"c-{i}", k8s_node_name=NODE)
        pending.append(event)
    first = ingest(url, pending)
    assert (first["events_processed"], first["updated"], first["duplicates"]) == (2, 0, 0)
    assert outcomes(url) == {"in_progress": 2}
    page = get(url, "/api/events", type="connection").json()
    cursor, resolved_cursor = page["cursor"], page["resolved_cursor"]

    # the agent's later batch: c-0 timed out (the same event, its outcome and return code now)
    timed_out = {**pending[0], "outcome": "timeout", "return_code": -errno.ETIMEDOUT}
    answer = ingest(url, [timed_out])
    assert (answer["updated"], answer["duplicates"], answer["events_processed"]) == (1, 0, 1), answer
    assert answer["success"] is True and "given their outcome" in answer["message"]
    assert listed(url) == {"c-0": ("timeout", -110), "c-1": ("in_progress", -115)}
    assert outcomes(url) == {"in_progress": 1, "timeout": 1}
    assert get(url, "/api/connection-summary", duration_seconds=600).json()["count"] == 2  # (counted once)
    assert get(url, "/api/stats").json()["events_by_node"] == {NODE: 2}

    # a reader that listed them in progress is given the outcome since its cursors, as serve gives it
    since = get(url, "/api/events", type="connection", after=cursor, resolved_after=resolved_cursor).json()
    assert since["events"] == [] and [(e["id"], e["outcome"]) for e in since["updates"]] == [("c-0", "timeout")]
    assert since["updates"][0] == {**timed_out, "time": since["updates"][0]["time"], "direction": "outbound"}
    assert since["resolved_cursor"] > resolved_cursor
    other_pod = get(url, "/api/events", type="connection", after=cursor, resolved_after=resolved_cursor,
                    k8s_pod_name="elsewhere").json()  # fmt: skip
    assert "updates" not in other_pod and other_pod["resolved_cursor"] == since["resolved_cursor"]
    again = get(url, "/api/events", type="connection", after=since["cursor"], resolved_after=since["resolved_cursor"])
    assert "updates" not in again.json() and again.json()["resolved_cursor"] == since["resolved_cursor"]

    # replays: the outcome again, or the connect in progress again, are duplicates; nothing moves
    for replay in ([timed_out], [pending[0]], [timed_out, pending[0]]):
        answer = ingest(url, replay)
        assert (answer["updated"], answer["duplicates"], answer["events_processed"]) == (0, len(replay), 0), answer
    assert listed(url)["c-0"] == ("timeout", -110) and outcomes(url) == {"in_progress": 1, "timeout": 1}

    # across a restart of the aggregator (its store kept): c-1, held in progress, still takes its outcome once
    agg.proc.send_signal(signal.SIGKILL)
    agg.proc.wait(10)
    agg, url = aggregator(spawn, free_port(), tmp_path / "fleet")
    done = {**pending[1], "outcome": "ok", "return_code": 0}
    assert ingest(url, [done])["updated"] == 1
    assert ingest(url, [done])["duplicates"] == 1 and ingest(url, [timed_out])["duplicates"] == 1
    assert listed(url) == {"c-0": ("timeout", -110), "c-1": ("ok", 0)}
    assert outcomes(url) == {"timeout": 1, "ok": 1}
    assert get(url, "/api/connection-summary", duration_seconds=600).json()["count"] == 2


def test_events_after_needs_a_type_and_resolved_after_a_connection_cursor(
    tmp_path: Path,
    spawn: Callable[..., Child],  # noqa: F811
) -> None:
    _, url = aggregator(spawn, free_port(), tmp_path / "fleet")
    event = connection_json(pid=7, command="app", port=9000, ago=5, outcome="in_progress", return_code=-115)
    event.update(id="p-1", k8s_node_name=NODE)
    ingest(url, [event])
    no_type = get(url, "/api/events", after=1)
    assert no_type.status_code == 400
    assert no_type.text.strip() == ("after needs type (a cursor is one type's): pass type=connection or "
                                    "type=packet_drop")  # fmt: skip
    for params in ({"type": "connection", "resolved_after": 1}, {"type": "packet_drop", "after": 1,
                                                                  "resolved_after": 1}):  # fmt: skip
        bad = get(url, "/api/events", **params)
        assert bad.status_code == 400 and "resolved_after needs type=connection and after" in bad.text, bad.text
    assert get(url, "/api/events", after=1, type="connection").status_code == 200


async def test_the_dashboard_client_gets_the_outcome_of_a_connect_it_listed_in_progress() -> None:
    """What the dashboard over HTTP asks (HttpSource, as its poller asks: after its cursors) brings the outcome."""

    fleet = FleetStore(None)
    app = create_app(FleetSource(fleet), api=AggregatorApi.factory(fleet, IngestLimits(INGEST_TOKEN)),
                     own_auth_paths=[INGEST_PATH])  # fmt: skip
    server = BackgroundServer(app, host="127.0.0.1", port=0).start()
    try:
        event = connection_json(pid=8, command="app", port=9001, ago=5, outcome="in_progress", return_code=-115)
        event.update(id="d-1", k8s_node_name=NODE)
        await asyncio.to_thread(ingest, server.url, [event])
        source = HttpSource(server.url, retries=0)
        try:
            page = await source.query(EventQuery(kind="connection", limit=10, after=0))
            assert [e.effective_outcome for e in page.events] == ["in_progress"]
            assert page.resolved_cursor is not None
            await asyncio.to_thread(ingest, server.url, [{**event, "outcome": "refused", "return_code": -111}])
            later = await source.query(EventQuery(kind="connection", limit=10, after=page.cursor,
                                                  resolved_after=page.resolved_cursor))  # fmt: skip
            assert later.events == [] and [(e.id, e.effective_outcome) for e in later.updates] == [("d-1", "refused")]
        finally:
            await source.aclose()
    finally:
        server.stop()
        fleet.close()


@contextlib.contextmanager
def served_fleet(directory: Path | None, dedupe_window: int = 200_000,
                 token: str | None = None) -> Iterator[tuple[FleetStore, str]]:  # fmt: skip
    """``serve --aggregate``'s API over a fleet store in ``directory`` (None: in memory) remembering
    ``dedupe_window`` ids a node; ``token``: its read token (the agents' paths take the ingest token)."""
    fleet = FleetStore(directory, dedupe_window=dedupe_window)
    app = create_app(FleetSource(fleet), api=AggregatorApi.factory(fleet, IngestLimits(INGEST_TOKEN)), token=token,
                     own_auth_paths=list(AGENT_PATHS))  # fmt: skip
    server = BackgroundServer(app, host="127.0.0.1", port=0).start()
    try:
        yield fleet, server.url
    finally:
        server.stop()
        fleet.close()


def slow_connects(n: int) -> list[dict[str, Any]]:
    """``n`` connects of ``slowapp`` (pids 700, 701, ...) sent in progress, ids ``slow-0``, ``slow-1``, ..."""
    held = []
    for i in range(n):
        event = connection_json(pid=700 + i, command="slowapp", port=4444, ago=30, outcome="in_progress",
                                return_code=-errno.EINPROGRESS)  # fmt: skip
        event.update(id=f"slow-{i}", k8s_node_name=NODE)
        held.append(event)
    return held


def test_an_outcome_after_more_events_than_the_dedupe_window_still_takes_the_connects_place(tmp_path: Path) -> None:
    """A busy node sends more events while a connect waits for its outcome (minutes: a timeout) than the aggregator
    remembers ids of; and the aggregator may restart meanwhile (it reloads only the last window's ids). The outcome
    still takes the connect's place: counted once, not in progress and timed out both."""
    window = 100
    busy = []
    for i in range(window + 50):
        event = connection_json(pid=800, command="busy", port=5000 + i, ago=20)
        event.update(id=f"other-{i}", k8s_node_name=NODE)
        busy.append(event)
    held = slow_connects(2)
    with served_fleet(tmp_path / "fleet", window) as (_, url):
        assert ingest(url, held)["events_processed"] == 2
        assert ingest(url, busy)["events_processed"] == window + 50
        timed_out = {**held[0], "outcome": "timeout", "return_code": -errno.ETIMEDOUT}
        answer = ingest(url, [timed_out])
        assert (answer["updated"], answer["events_processed"], answer["duplicates"]) == (1, 1, 0), answer
        assert ingest(url, [timed_out])["duplicates"] == 1
        assert outcomes(url, command="slowapp") == {"timeout": 1, "in_progress": 1}
    with served_fleet(tmp_path / "fleet", window) as (fleet, url):  # (restarted: the other still in progress)
        refused = {**held[1], "outcome": "refused", "return_code": -errno.ECONNREFUSED}
        answer = ingest(url, [refused])
        assert (answer["updated"], answer["duplicates"]) == (1, 0), answer
        assert ingest(url, [refused])["duplicates"] == 1  # (its retry)
        assert outcomes(url, command="slowapp") == {"timeout": 1, "refused": 1}
        assert get(url, "/api/stats").json()["events_by_node"] == {NODE: window + 52}
        assert fleet.pending_forgotten == 0


def test_connects_held_in_progress_beyond_the_cap_are_forgotten_counted_in_health(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fleet_store, "PENDING_PER_NODE", 1)
    held = slow_connects(2)
    busy = [{**connection_json(pid=800, command="busy", port=5000 + i, ago=20), "id": f"o-{i}", "k8s_node_name": NODE}
            for i in range(20)]  # fmt: skip
    with served_fleet(tmp_path / "fleet", 10) as (_, url):
        assert ingest(url, held)["events_processed"] == 2
        assert ingest(url, busy)["events_processed"] == 20
        health = get(url, "/health").json()
        assert health["in_progress_forgotten"] == 1
        first = ingest(url, [{**held[0], "outcome": "timeout", "return_code": -errno.ETIMEDOUT}])
        assert (first["updated"], first["events_processed"]) == (0, 1)  # (forgotten: another event, as counted)
        second = ingest(url, [{**held[1], "outcome": "ok", "return_code": 0}])
        assert (second["updated"], second["events_processed"]) == (1, 1)


# --- the agent: serve --forward -------------------------------------------------------------------


def pending(wall: int, key: int, last_octet: int) -> np.ndarray:
    """A CONNECT record of a non-blocking connect to 10.0.0.<last_octet>:443 at ``wall`` (ns), in progress."""
    return connect(4321, b"slowapp", last_octet, wall, key, result=P.RESULT_PENDING, code=-errno.EINPROGRESS)


def agent_with_a_slow_connect(tmp_path: Path) -> tuple[EventStore, Any, np.ndarray]:
    """An agent's store holding one connect in progress past the settle time (key 0xABC), its codec, the record."""
    store = EventStore(tmp_path / "agent.sqlite3")
    codec = synth.codec()
    slow = pending(time.time_ns() - int((SETTLE_SECONDS + 8) * NS), 0xABC, 1)
    store.write([Batch(records=slow, codec=codec)])
    return store, codec, slow


@pytest.fixture
def fleet_server() -> Iterator[tuple[FleetStore, str]]:
    with served_fleet(None) as served:
        yield served


async def test_the_forwarder_sends_the_outcome_of_a_connect_it_forwarded_in_progress_once_across_restarts(
    tmp_path: Path, fleet_server: tuple[FleetStore, str]
) -> None:
    fleet, url = fleet_server
    store = EventStore(tmp_path / "agent.sqlite3")
    codec = synth.codec()
    old = time.time_ns() - int((SETTLE_SECONDS + 8) * NS)  # (settled: forwarded at once)
    slow, quick = pending(old, 0xABC, 1), pending(old + 1000, 0xDEF, 2)
    store.write([Batch(records=np.concatenate([slow, quick]), codec=codec)])
    store.write([Batch(records=outcome(quick, 0), codec=codec)])  # (quick: resolved before it is forwarded)

    def at_aggregator() -> dict[str, str]:
        _, items = FleetSource(fleet).query_stored(EventQuery(kind="connection", limit=10))
        return {json.loads(body)["destination_ip"]: json.loads(body)["outcome"] for _, _, body in items}

    forwarder = Forwarder(store, url + INGEST_PATH, token=INGEST_TOKEN, identity={"k8s_node_name": NODE})
    try:
        assert await forwarder.forward_once() == 2
        assert at_aggregator() == {"10.0.0.1": "in_progress", "10.0.0.2": "ok"}
        assert await forwarder.resolve_once() == 0  # (quick went with its outcome: not sent again)
        store.write([Batch(records=outcome(slow, errno.ETIMEDOUT), codec=codec)])  # two minutes later
        assert await forwarder.forward_once() == 0
        assert at_aggregator() == {"10.0.0.1": "timeout", "10.0.0.2": "ok"}
        assert forwarder.status.resolved == 1 and forwarder.status.forwarded == 2
        assert forwarder.status.rejected == 0 and forwarder.status.last_error == ""
    finally:
        await forwarder._client.aclose()
    kept = store.get_meta(RESOLVED_KEY)
    assert kept is not None and int(kept) == forwarder.resolved_cursor > 0
    store.close()

    # a restarted agent (its store reopened) sends neither the events nor the outcome again; a newer outcome it does
    store = EventStore(tmp_path / "agent.sqlite3")
    later = pending(time.time_ns() - int((SETTLE_SECONDS + 4) * NS), 0x123, 3)
    store.write([Batch(records=later, codec=codec)])
    again = Forwarder(store, url + INGEST_PATH, token=INGEST_TOKEN, identity={"k8s_node_name": NODE})
    try:
        assert again.resolved_cursor == int(kept)
        assert await again.forward_once() == 1
        assert again.status.resolved == 0
        store.write([Batch(records=outcome(later, errno.ECONNREFUSED), codec=codec)])
        assert await again.forward_once() == 0 and again.status.resolved == 1
    finally:
        await again._client.aclose()
        store.close()
    assert at_aggregator() == {"10.0.0.1": "timeout", "10.0.0.2": "ok", "10.0.0.3": "refused"}
    counted = fleet.nodes()[NODE].stats(Scope("connection", None, None, 600))
    assert {c.key: c.count for c in counted.outcomes} == {"timeout": 1, "ok": 1, "refused": 1}


async def test_an_aggregator_that_does_not_take_outcomes_is_sent_none_and_they_are_counted(tmp_path: Path) -> None:
    """ebpf-server's own aggregator (answers without ``updated``) would store the same id again as a second event."""
    store, codec, slow = agent_with_a_slow_connect(tmp_path)
    with FakeAggregator(answer="contract") as agg:
        forwarder = Forwarder(store, agg.url + INGEST_PATH, identity={"k8s_node_name": NODE})
        try:
            assert await forwarder.forward_once() == 1
            store.write([Batch(records=outcome(slow, errno.ETIMEDOUT), codec=codec)])
            assert await forwarder.forward_once() == 0 and await forwarder.forward_once() == 0
            assert [e["outcome"] for e in agg.received()] == ["in_progress"]  # (no second event)
            assert forwarder.takes_outcomes is False
            assert (forwarder.status.unsent_outcomes, forwarder.status.resolved) == (1, 0)
            assert forwarder.resolved_cursor > 0  # (moved past it: not read again every round)
        finally:
            await forwarder._client.aclose()
    store.close()


async def test_an_outcome_sent_after_an_agent_restart_is_retried_when_the_first_answer_is_a_misroute(
    tmp_path: Path,
) -> None:
    """A restarted agent does not know yet whether the aggregator takes outcomes: a 421 (a proxy's Host check, not
    right yet) or 404 to that first post says nothing about it; the outcome waits, and goes once it is accepted."""
    store, codec, slow = agent_with_a_slow_connect(tmp_path)
    with FakeAggregator(answer="updates") as agg:
        first = Forwarder(store, agg.url + INGEST_PATH, identity={"k8s_node_name": NODE})
        try:
            assert await first.forward_once() == 1
        finally:
            await first._client.aclose()
        store.write([Batch(records=outcome(slow, errno.ETIMEDOUT), codec=codec)])
        again = Forwarder(store, agg.url + INGEST_PATH, identity={"k8s_node_name": NODE})
        try:
            for status in (421, 404, 400):
                agg.misrouted = status
                with pytest.raises(httpx.HTTPStatusError, match=f"HTTP {status}"):
                    await again.forward_once()
                assert again.takes_outcomes is None and again.status.unsent_outcomes == 0
                assert again.resolved_cursor == 0  # (not moved past the outcome)
            agg.misrouted = 0
            assert await again.forward_once() == 0
            assert again.takes_outcomes is True
            assert (again.status.resolved, again.status.unsent_outcomes) == (1, 0)
            assert [e["outcome"] for e in agg.received()] == ["in_progress", "timeout"]
        finally:
            await again._client.aclose()
    store.close()


async def soon(check: Callable[[], object], seconds: float = 5.0) -> None:
    """Wait (the event loop running) until ``check()`` is true, up to ``seconds``."""
    for _ in range(int(seconds * 100)):
        if check():
            return
        await asyncio.sleep(0.01)


async def test_an_accepted_outcome_post_clears_the_forwarding_error_and_a_refused_one_is_counted(
    tmp_path: Path,
) -> None:
    """An idle node whose only posts after an aggregator outage carry outcomes: once one is accepted the forwarding
    is no longer failing (``/health``' forwarding problem gone); an outcome the aggregator refuses is counted where
    refused events are."""
    store = EventStore(tmp_path / "agent.sqlite3")
    codec = synth.codec()
    old = time.time_ns() - int((SETTLE_SECONDS + 8) * NS)
    slow, other = pending(old, 0xABC, 1), pending(old + 1000, 0xDEF, 2)
    store.write([Batch(records=np.concatenate([slow, other]), codec=codec)])
    with FakeAggregator(answer="updates") as agg:
        forwarder = Forwarder(store, agg.url + INGEST_PATH, identity={"k8s_node_name": NODE}, interval=0.05)
        task = None
        try:
            assert await forwarder.forward_once() == 2
            forwarder.status.last_success = "2000-01-01T00:00:00+00:00"  # (as if its last events went long ago)
            store.write([Batch(records=outcome(slow, errno.ETIMEDOUT), codec=codec)])
            agg.down = True
            task = asyncio.create_task(forwarder.run())
            await soon(lambda: forwarder.status.failures)
            assert "HTTP 503" in forwarder.status.last_error
            assert forwarding_problem(forwarder.status.as_dict(), 1000.0)
            agg.down = False
            await soon(lambda: forwarder.status.resolved)
            assert forwarder.status.resolved == 1 and forwarder.status.last_error == ""
            assert forwarder.status.last_success > "2000-01-01T00:00:00+00:00"
            assert forwarding_problem(forwarder.status.as_dict(), 1000.0) == ""

            agg.refuse_ports = frozenset({443})  # (the other's outcome is refused)
            store.write([Batch(records=outcome(other, errno.ECONNREFUSED), codec=codec)])
            await soon(lambda: forwarder.status.rejected)
            assert forwarder.status.rejected == 1 and forwarder.status.resolved == 1
            assert forwarder.status.last_error.startswith("the aggregator rejected 1 of 1 outcomes")
            assert forwarding_problem(forwarder.status.as_dict(), 1000.0) == ""
        finally:
            forwarder.stop()
            if task is not None:
                await task
            else:
                await forwarder._client.aclose()
    assert [e["outcome"] for e in agg.received()] == ["in_progress", "in_progress", "timeout"]
    await soon(lambda: store.losses().get("forward_rejected"))  # (the store writes its loss counts on its own thread)
    assert store.losses().get("forward_rejected") == 1
    store.close()


# --- a real eBPF agent (root) ---------------------------------------------------------------------

#: a non-blocking connect to a listener whose accept backlog is full: its SYNs are dropped and retried
CONNECTOR = textwrap.dedent(
    """
    import ctypes, socket, sys
    ctypes.CDLL(None).prctl(15, b"fwd_inprog", 0, 0, 0)
    s = socket.socket()
    s.setblocking(False)
    print(s.connect_ex(("127.0.0.1", int(sys.argv[1]))), flush=True)
    sys.stdin.readline()  # (held open until the test is done)
    """
)


@pytest.mark.ebpf
def test_a_real_agents_connect_that_outlasts_the_settle_time_ends_with_its_outcome_at_the_aggregator(
    tmp_path: Path,
    spawn: Callable[..., Child],  # noqa: F811
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (eBPF)")
    _, url = aggregator(spawn, free_port(), tmp_path / "fleet")
    agent = spawn("serve", "--collector", "ebpf", "--db", str(tmp_path / "agent.sqlite3"), "--port",
                  str(free_port()), "--forward", url, "--forward-interval", "0.5",
                  env={"NETSPY_FORWARD_TOKEN": INGEST_TOKEN, "NODE_NAME": NODE})  # fmt: skip
    agent_url = served_url(agent, "the eBPF server API")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))  # (the backlog is full: the next SYNs are dropped)
    assert select.select([listener], [], [], 10)[0]  # (once it is in the accept queue: the listener is readable)
    app = subprocess.Popen([sys.executable, "-c", CONNECTOR, str(port)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert app.stdout is not None
        assert int(app.stdout.readline()) == errno.EINPROGRESS

        def fleet_outcomes() -> dict[str, int]:
            return outcomes(url, pid=app.pid)

        # forwarded in progress (it is older than the settle time and its SYNs go unanswered)
        wait_until(lambda: fleet_outcomes() == {"in_progress": 1}, "the connect in progress at the aggregator", 30)
        accepted = listener.accept()[0]  # room in the backlog: the next SYN retry completes the handshake
        try:
            try:  # (the SYN retries come at most 16 s apart here: see tests/collector/test_kernel_truth.py)
                wait_until(lambda: fleet_outcomes() == {"ok": 1}, "the connect's outcome at the aggregator", 30)
            except AssertionError:
                # The kernel skips tcp_state's run for a state change whose softirq interrupted another tcp_state
                # run on its CPU (a recursion miss: rare, under load): the agent then resolves the connect when its
                # socket is freed (established if its SYN was acknowledged). Once the handshake is done (the
                # connection is in the accept queue: closed before, the connect would rightly end aborted), the
                # connector exits, freeing it.
                assert select.select([listener], [], [], 30)[0], "the connector's handshake never completed"
                assert app.stdin is not None
                app.stdin.write("\n")
                app.stdin.flush()
                app.wait(10)
                wait_until(lambda: fleet_outcomes() == {"ok": 1}, "the connect's outcome at the aggregator", 30)
        except AssertionError as exc:  # (what each side holds, and the agent's losses: to tell where it stopped)
            seen = httpx.get(agent_url + "/api/events", params={"type": "connection", "pid": app.pid}).json()
            health = httpx.get(agent_url + "/health").json()
            raise AssertionError(
                f"{exc}: the aggregator counts {fleet_outcomes()}, the agent holds "
                f"{[e['outcome'] for e in seen['events']]}, its /health: {health}"
            ) from None
        agent_view = httpx.get(agent_url + "/api/events", params={"type": "connection", "pid": app.pid}).json()
        fleet_view = get(url, "/api/events", type="connection", pid=app.pid).json()
        assert [e["outcome"] for e in agent_view["events"]] == ["ok"]
        assert [(e["id"], e["outcome"]) for e in fleet_view["events"]] == [
            (e["id"], e["outcome"]) for e in agent_view["events"]
        ]
        health = httpx.get(agent_url + "/health").json()
        assert health["forwarding"]["resolved"] >= 1, health["forwarding"]
        accepted.close()
    finally:
        if app.poll() is None:
            app.send_signal(signal.SIGKILL)
            app.wait()
        filler.close()
        listener.close()
