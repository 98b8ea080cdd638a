"""serve --forward: this node's events reach an aggregator exactly once, through outages and
restarts, with what retention removed before it could be sent counted where losses are shown."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from netspy_tui.serve.forward import CURSOR_KEY, INTERVAL, Forwarder
from netspy_tui.store import EventStore
from netspy_tui.store.sqlite import event_row
from tests.factories import connection, connection_json, drop_json
from tests.fake_aggregator import FakeAggregator
from tests.hardening.conftest import TERMINATED, Child, free_port, spawn  # noqa: F401 (fixture)
from tests.hardening.test_security import served_url

IDENTITY = {"k8s_node_name": "node-a"}


def fill(store: EventStore, n: int, start: int = 0) -> None:
    store.add_events([connection(pid=1000 + i % 5, port=20000 + start + i, ago=30) for i in range(n)])


async def until(predicate: Callable[[], bool], what: str, limit: float = 20.0) -> None:
    for _ in range(int(limit / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what} not reached within {limit} s")


def ports(events: list[dict]) -> list[int]:  # type: ignore[type-arg]
    return [e["destination_port"] for e in events]


async def test_every_event_once_in_order_with_the_nodes_identity(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "spool.db")
    fill(store, 250)
    with FakeAggregator(token="agg-token") as agg:
        fw = Forwarder(store, agg.url + "/api/events/ingest", token="agg-token", batch=100, interval=0.05,
                       identity=IDENTITY)  # fmt: skip
        task = asyncio.create_task(fw.run())
        await until(lambda: len(agg.received()) >= 250, "250 events forwarded")
        fill(store, 50, start=250)
        await until(lambda: len(agg.received()) >= 300, "the next 50")
        fw.stop()
        await task
    got = agg.received()
    assert sorted(ports(got)) == list(range(20000, 20300))  # each once
    assert ports(got) == sorted(ports(got))  # in the store's order
    assert {e["k8s_node_name"] for e in got} == {"node-a"}
    assert fw.status.forwarded == 300 and fw.status.waiting == 0 and fw.status.dropped == 0
    assert agg.batches >= 3  # batches of at most 100
    assert store.get_meta(CURSOR_KEY) == str(fw.cursor)
    store.close()


async def test_one_post_carries_what_settled_meanwhile(tmp_path: Path) -> None:
    # Posts cost the agent CPU: the events that settled since the last post go in one (up to the aggregator's
    # own batch limit, 5,000), not in posts of 1,000.
    store = EventStore(tmp_path / "spool.db")
    fill(store, 2500)
    with FakeAggregator() as agg:
        fw = Forwarder(store, agg.url + "/api/events/ingest", interval=3600, identity=IDENTITY)
        task = asyncio.create_task(fw.run())
        await until(lambda: fw.status.forwarded == 2500, "2,500 events forwarded")
        fw.stop()
        await task
    assert agg.batches == 1 and sorted(ports(agg.received())) == list(range(20000, 22500))
    store.close()


async def test_an_aggregator_that_takes_smaller_batches_gets_them(tmp_path: Path) -> None:
    # An aggregator with a lower limit per batch answers 413: the forwarder halves its batch until it fits,
    # and nothing is lost, repeated or counted as a failed batch.
    store = EventStore(tmp_path / "spool.db")
    fill(store, 1000)
    with FakeAggregator(max_events=300) as agg:
        fw = Forwarder(store, agg.url + "/api/events/ingest", batch=1000, interval=0.05, identity=IDENTITY)
        task = asyncio.create_task(fw.run())
        await until(lambda: fw.status.forwarded == 1000, "1,000 events forwarded")
        fw.stop()
        await task
    assert agg.too_large == 2 and fw.batch == 250 and fw.status.failures == 0  # 1000 -> 500 -> 250
    assert ports(agg.received()) == list(range(20000, 21000))  # each once, in order
    store.close()


async def test_an_outage_is_retried_and_a_restart_resumes_without_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    store = EventStore(path)
    fill(store, 120)
    agg = FakeAggregator().start()
    try:
        agg.down = True
        fw = Forwarder(store, agg.url, batch=50, interval=0.05, max_backoff=0.2, identity=IDENTITY)
        fw.url = agg.url + "/api/events/ingest"
        task = asyncio.create_task(fw.run())
        await until(lambda: fw.status.failures >= 3, "three refused batches, seen by the forwarder")
        assert agg.refused >= 3 and "503" in fw.status.last_error and agg.received() == []
        agg.down = False
        await until(lambda: len(agg.received()) >= 120, "the backlog after the outage")
        fw.stop()
        await task
        # the aggregator restarts (same port) and so does the agent: it resumes from its cursor
        agg.stop()
        fill(store, 30, start=120)
        store.close()
        agg.start()
        store = EventStore(path)
        fw2 = Forwarder(store, agg.url + "/api/events/ingest", batch=50, interval=0.05, identity=IDENTITY)
        assert fw2.cursor == fw.cursor
        task = asyncio.create_task(fw2.run())
        await until(lambda: len(agg.received()) >= 150, "the events stored while both were away")
        fw2.stop()
        await task
    finally:
        agg.stop()
        store.close()
    assert sorted(ports(agg.received())) == list(range(20000, 20150))  # nothing missing, nothing twice


async def test_a_long_interval_does_not_slow_the_retries(tmp_path: Path) -> None:
    """The interval spaces posts; a failed batch is retried after about a second (then backing off) whatever it is."""
    store = EventStore(tmp_path / "spool.db")
    fill(store, 20)
    with FakeAggregator() as agg:
        agg.down = True
        fw = Forwarder(store, agg.url + "/api/events/ingest", interval=3600, identity=IDENTITY)
        task = asyncio.create_task(fw.run())
        await until(lambda: fw.status.failures >= 1, "a refused batch")
        agg.down = False
        await until(lambda: len(agg.received()) >= 20, "the batch retried", limit=10)  # (1-2 s; not 15-30 s)
        fw.stop()
        await task
    store.close()


async def test_what_retention_removed_unsent_is_counted_as_a_loss(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "spool.db", max_rows=100)
    with FakeAggregator() as agg:
        agg.down = True
        fw = Forwarder(store, agg.url + "/api/events/ingest", batch=1000, interval=0.05, max_backoff=0.1,
                       identity=IDENTITY)  # fmt: skip
        fill(store, 300)  # while the aggregator is away, more than the store keeps
        removed = await asyncio.to_thread(store.prune)
        assert removed == 200
        task = asyncio.create_task(fw.run())
        await until(lambda: fw.status.failures >= 1, "a refused batch, seen by the forwarder")
        agg.down = False
        await until(lambda: fw.status.waiting == 0 and len(agg.received()) > 0, "the rest forwarded")
        fw.stop()
        await task
    assert fw.status.dropped == 200 and len(agg.received()) == 100
    assert store.totals.get("forward_dropped") == fw.status.dropped
    store.close()


def test_serve_forward_end_to_end(tmp_path: Path, spawn: Callable[..., Child]) -> None:  # noqa: F811
    rec = tmp_path / "rec.jsonl"
    lines = [connection_json(pid=50 + i % 3, command="curl", port=30000 + i, ago=20) for i in range(40)]
    lines += [drop_json(pid=9, command="nginx", ago=20, reason="NETFILTER_DROP") for _ in range(5)]
    rec.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with FakeAggregator(token="agg-secret-token") as agg:
        port = free_port()
        child = spawn("serve", "--replay", str(rec), "--replay-speed", "0", "--port", str(port), "--verbose",
                      "--forward", agg.url, "--forward-interval", "2.5",
                      env={"NETSPY_FORWARD_TOKEN": "agg-secret-token", "NODE_NAME": "node-e2e"})  # fmt: skip
        url = served_url(child, "the eBPF server API")
        for _ in range(1000):
            if len(agg.received()) >= 45:
                break
            asyncio.run(asyncio.sleep(0.02))
        got = agg.received()
        assert len(got) == 45 and {e["k8s_node_name"] for e in got} == {"node-e2e"}
        assert {e["type"] for e in got} == {"connection", "packet_drop"}
        for _ in range(500):  # the aggregator has them; the agent counts them once it read the answer
            health = httpx.get(url + "/health", timeout=10).json()
            if health["forwarding"]["forwarded"] == 45:
                break
            asyncio.run(asyncio.sleep(0.02))
        assert health["forwarding"]["forwarded"] == 45 and health["forwarding"]["url"].endswith("/api/events/ingest")
        assert health["forwarding"]["interval"] == 2.5
        # what an operator asks of the agent from elsewhere: its forwarding, as its /health says it
        status = subprocess.run([sys.executable, "-m", "netspy_tui", "--server", url, "--tool", "server_status"],
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert status.returncode == 0, status.stderr
        assert f"Forwarding to {agg.url}/api/events/ingest: 45 sent, 0 waiting" in status.stdout, status.stdout
        assert child.stop() == TERMINATED
    # and whether it is up at all, in the exit status too
    down = subprocess.run([sys.executable, "-m", "netspy_tui", "--server", url, "--tool", "server_status"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert down.returncode == 1 and "(unhealthy)" in down.stdout, (down.stdout, down.stderr)
    assert down.stderr.startswith("netspy-tui: the source is unhealthy: ") and down.stderr.count("\n") == 1
    assert "agg-secret-token" not in "".join(child.err)


def test_the_post_interval_is_shown_where_users_set_and_read_it(tmp_path: Path) -> None:
    """The default interval (between posts of less than a full batch) is the one serve --help names, and the one
    /health shows."""
    shown = subprocess.run([sys.executable, "-m", "netspy_tui", "serve", "--help"], capture_output=True, text=True,
                           timeout=60, check=True).stdout  # fmt: skip
    assert f"({INTERVAL:g} s; a full batch goes at once)" in " ".join(shown.split())
    store = EventStore(tmp_path / "spool.db")
    assert Forwarder(store, "http://127.0.0.1:9/api/events/ingest").status.as_dict()["interval"] == INTERVAL
    store.close()


async def test_events_written_while_forwarding_are_sent_even_if_retention_removes_them_first(tmp_path: Path) -> None:
    # The forwarder keeps what the store's writer just wrote (up to 16,000 events) and sends it from there: an
    # aggregator outage shorter than that loses nothing to the store's own limit.
    store = EventStore(tmp_path / "spool.db", max_rows=100)
    with FakeAggregator() as agg:
        fw = Forwarder(store, agg.url + "/api/events/ingest", batch=100, interval=0.05, max_backoff=0.1,
                       identity=IDENTITY)  # fmt: skip
        fill(store, 1, start=-1)
        task = asyncio.create_task(fw.run())
        await until(lambda: fw.status.forwarded == 1, "the forwarder running (a first event sent)")
        agg.down = True
        fill(store, 300)  # while the aggregator is away, more than the store keeps
        assert await asyncio.to_thread(store.prune) == 201
        agg.down = False
        await until(lambda: fw.status.forwarded >= 301, "every event forwarded")
        fw.stop()
        await task
    assert sorted(ports(agg.received())) == list(range(19999, 20300))  # each once
    assert ports(agg.received()) == sorted(ports(agg.received()))  # in the store's order
    assert fw.status.dropped == 0 and not store.totals.get("forward_dropped")
    store.close()


async def test_what_the_writer_did_not_hand_over_is_read_from_the_store_in_order(tmp_path: Path) -> None:
    # Rows the writer does not give the forwarder (kept as blocks here, as ring records are on an eBPF agent)
    # leave a gap in what it holds: those are read back from the store, and the order stays the store's.
    store = EventStore(tmp_path / "spool.db")
    with FakeAggregator() as agg:
        agg.down = True
        fw = Forwarder(store, agg.url + "/api/events/ingest", batch=40, interval=0.05, max_backoff=0.1,
                       identity=IDENTITY)  # fmt: skip
        fill(store, 1, start=-1)
        task = asyncio.create_task(fw.run())
        await until(lambda: fw.status.failures >= 1, "the forwarder running (a refused batch)")
        fill(store, 50)
        blocks = [connection(pid=7, port=20050 + i, ago=30) for i in range(30)]
        store.add_rows([event_row(e)[0] for e in blocks], [])
        fill(store, 50, start=80)
        agg.down = False
        await until(lambda: fw.status.forwarded >= 131, "every event forwarded")
        fw.stop()
        await task
    assert ports(agg.received()) == list(range(19999, 20130))  # each once, in the store's order
    store.close()


async def test_what_the_writer_hands_over_goes_in_batches_and_only_as_far_as_it_settled(tmp_path: Path) -> None:
    # One write of the store is sent in batches of at most `batch`, in order; a write whose events are not all
    # old enough to send (a connect's outcome may still change) goes up to its first such event and no further.
    store = EventStore(tmp_path / "spool.db")
    with FakeAggregator() as agg:
        fw = Forwarder(store, agg.url + "/api/events/ingest", batch=100, interval=0.05, identity=IDENTITY)
        fill(store, 1, start=-1)
        task = asyncio.create_task(fw.run())
        await until(lambda: fw.status.forwarded == 1, "the forwarder running (a first event sent)")
        fill(store, 250)  # one write: batches of 100, 100 and 50
        await until(lambda: fw.status.forwarded == 251, "the write of 250")
        assert agg.batches == 4
        later = [connection(pid=1, port=20300 + i, ago=30 if i < 5 or i > 7 else -3600) for i in range(10)]
        store.add_events(later)  # its 6th to 8th events settle only in an hour: they and what follows them wait
        await until(lambda: fw.status.forwarded == 256, "the settled start of the last write")
        await asyncio.sleep(0.3)  # (several intervals: nothing more goes)
        assert fw.status.forwarded == 256 and fw.status.waiting == 5
        fw.stop()
        await task
    assert ports(agg.received()) == [*range(19999, 20250), *range(20300, 20305)]  # each once, in order
    store.close()


async def test_events_the_aggregator_refuses_are_counted_and_shown_not_forwarded(tmp_path: Path) -> None:
    """An aggregator that takes a batch but refuses some of its events (a 200 whose answer says so, in
    ``serve --aggregate``'s words or only the contract's) does not make them forwarded: they are counted as
    refused, said in the last error with the first reason, and noted as a loss (``/health``, ``server_status``);
    they are not sent again (the aggregator would refuse them again)."""
    for answer in ("netspy", "contract", "list-only"):  # (list-only: a list without its count was taken as none)
        store = EventStore(tmp_path / f"spool-{answer}.db")
        fill(store, 100)
        with FakeAggregator(refuse_ports=frozenset({20007, 20042, 20099}), answer=answer) as agg:
            fw = Forwarder(store, agg.url + "/api/events/ingest", batch=40, interval=0.05, identity=IDENTITY)
            task = asyncio.create_task(fw.run())
            await until(lambda: fw.status.waiting == 0 and fw.status.batches == 3, "three batches answered")  # noqa: B023
            fw.stop()
            await task
        assert len(agg.received()) == 97 and agg.batches == 3, answer  # each batch once, nothing sent again
        assert (fw.status.forwarded, fw.status.rejected, fw.status.failures) == (97, 3, 0), answer
        assert fw.status.last_error.startswith("the aggregator rejected 1 of 20 events"), fw.status.last_error
        if answer in ("netspy", "list-only"):
            assert "(first: event 19: destination_port: refused by the test)" in fw.status.last_error
        assert store.totals.get("forward_rejected") == 3
        store.close()


async def test_a_2xx_that_is_no_ingest_answer_is_a_failed_batch_not_a_forwarded_one(tmp_path: Path) -> None:
    """Any 200 was taken as accepted: a proxy's page ("200 not json") moved the cursor past events nobody stored,
    "healthy", forwarded 254, no error anywhere (an audit's). Such an answer fails the batch (retried, said)."""
    store = EventStore(tmp_path / "spool.db")
    fill(store, 5)
    with FakeAggregator(answer="not-json") as agg:
        fw = Forwarder(store, agg.url + "/api/events/ingest", interval=0.05, max_backoff=0.05, identity=IDENTITY)
        task = asyncio.create_task(fw.run())
        await until(lambda: fw.status.failures >= 2, "two failed batches")
        assert fw.status.forwarded == 0 and fw.status.waiting == 5
        assert "HTTP 200 but not an aggregator's ingest answer: not json" in fw.status.last_error
        agg.answer = "netspy"  # (the aggregator itself back behind the proxy)
        await until(lambda: fw.status.forwarded == 5, "the batch forwarded once answered")
        fw.stop()
        await task
    assert len(agg.received()) == 5
    store.close()


async def test_a_failure_of_any_kind_is_counted_and_retried_never_ends_forwarding(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "spool.db")
    fill(store, 5)
    # (a port httpx cannot even connect to: not an HTTP or OS error; the forwarder must carry on all the same)
    fw = Forwarder(store, "http://127.0.0.1:99999/api/events/ingest", interval=0.05, max_backoff=0.05,
                   identity=IDENTITY)  # fmt: skip
    task = asyncio.create_task(fw.run())
    await until(lambda: fw.status.failures >= 2, "two failed batches")
    assert not task.done() and fw.status.last_error and "\\x0a" not in fw.status.last_error
    fw.stop()
    await task
    store.close()


def test_serve_forward_refuses_what_it_could_never_forward_at_start(tmp_path: Path) -> None:
    """A port no aggregator can listen on, and a node name every aggregator refuses, are said at start (exit 2,
    one line), not found out later one failed batch at a time."""
    rec = tmp_path / "rec.jsonl"
    rec.write_text(json.dumps(connection_json(pid=5, command="curl", port=443, ago=5)) + "\n")
    cases = [
        (["--forward", "http://127.0.0.1:99999"], {}, "is not a port (1-65535)"),
        (["--forward", "http://127.0.0.1:9"], {"NODE_NAME": "my node"}, "'my node' is not a node name"),
        # a host name the HTTP client cannot read: was retried with backoff for ever, one warning a batch
        (["--forward", "http://b\u00e4d\u200d.example/"], {}, "is not a usable aggregator URL"),
        # the URL's password is not echoed by the error
        (["--forward", "http://u:s3cret@127.0.0.1:99999"], {}, "'http://u:****@127.0.0.1:99999' is not a port"),
    ]
    for flags, env, said in cases:
        child = subprocess.run([sys.executable, "-m", "netspy_tui", "serve", "--replay", str(rec), "--port",
                                str(free_port()), *flags], capture_output=True, text=True, timeout=60,
                               env={**os.environ, "NETSPY_CONFIG": str(tmp_path / "none.toml"), **env})  # fmt: skip
        assert child.returncode == 2, (flags, child.stderr)
        assert said in child.stderr and "Traceback" not in child.stderr, child.stderr
        assert "s3cret" not in child.stderr and len(child.stderr.strip().splitlines()) == 1, child.stderr


def test_health_says_degraded_while_every_batch_fails_and_healthy_once_they_go(
    tmp_path: Path,
    spawn: Callable[..., Child],  # noqa: F811
) -> None:
    """An agent whose aggregator refuses every batch (here 503; the shipped manifests' 421 alike) kept answering
    /health "healthy" for minutes while its events piled up in the store: it is "degraded" once the batches have
    failed for 15 post intervals, with the reason in one detail line, and "healthy" again when a batch goes."""
    rec = tmp_path / "rec.jsonl"
    rec.write_text("".join(json.dumps(connection_json(pid=7, command="curl", port=31000 + i, ago=20)) + "\n"
                           for i in range(10)))  # fmt: skip
    with FakeAggregator() as agg:
        agg.down = True
        port = free_port()
        child = spawn("serve", "--replay", str(rec), "--replay-speed", "0", "--port", str(port),
                      "--forward", agg.url, "--forward-interval", "0.2", env={"NODE_NAME": "node-a"})  # fmt: skip
        url = served_url(child, "the eBPF server API")

        def health() -> dict:  # type: ignore[type-arg]
            return httpx.get(url + "/health", timeout=10).json()  # type: ignore[no-any-return]

        for _ in range(1000):  # 15 intervals of 0.2 s: 3 s
            seen = health()
            if seen["status"] != "healthy":
                break
            asyncio.run(asyncio.sleep(0.02))
        assert seen["status"] == "degraded", seen
        assert seen["forwarding"]["failures"] >= 1 and agg.refused >= 1
        detail = seen["detail"]
        assert f"forwarding to {agg.url}/api/events/ingest has failed since it started" in detail, detail
        assert "events waiting in the store" in detail and "HTTP 503" in detail and "\n" not in detail
        status = subprocess.run([sys.executable, "-m", "netspy_tui", "--server", url, "--tool", "server_status"],
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert "(degraded)" in status.stdout, status.stdout
        assert "netspy_source_degraded 1.0" in httpx.get(url + "/metrics", timeout=10).text  # (an alert's gauge)
        agg.down = False  # the aggregator takes them: healthy again, nothing lost
        for _ in range(1500):
            seen = health()
            if seen["status"] == "healthy":
                break
            asyncio.run(asyncio.sleep(0.02))
        assert seen["status"] == "healthy" and "detail" not in seen, seen
        assert len(agg.received()) == 10
        assert child.stop() == TERMINATED


def test_a_stop_while_the_aggregator_never_answers_ends_cleanly_and_says_what_is_sent_later(
    tmp_path: Path,
    spawn: Callable[..., Child],  # noqa: F811
) -> None:
    """SIGTERM while a batch waits on an aggregator that accepted the connection and never answers: serve ends
    within the stop wait, as a stop (no 'unexpected error'), saying the batch goes again at the next start."""
    import socket
    import time

    from netspy_tui.cli import STOP_FORWARDING_WAIT

    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(16)  # accepted by the kernel, never read nor answered
        agg = f"http://127.0.0.1:{mute.getsockname()[1]}/api/events/ingest"
        child = spawn("serve", "--replay", str(Path(__file__).parents[1] / "data" / "demo.jsonl"), "--replay-speed",
                      "0", "--port", str(free_port()), "--forward", agg, "--forward-interval", "0.2")  # fmt: skip
        served_url(child, "the eBPF server API")
        for _ in range(500):  # the first batch is on its way: the connection to the aggregator is made
            with open("/proc/net/tcp") as table:
                port_hex = f":{mute.getsockname()[1]:04X} "
                if any(port_hex in line.split()[2] + " " and line.split()[3] == "01" for line in table.readlines()[1:]):
                    break
            time.sleep(0.02)
        else:
            raise AssertionError("serve never connected to the aggregator")
        started = time.monotonic()
        code = child.stop(timeout=STOP_FORWARDING_WAIT + 10)
        took = time.monotonic() - started
    err = "".join(child.err)
    assert code == TERMINATED, err
    assert took < STOP_FORWARDING_WAIT + 5
    assert "unexpected error" not in err and "Traceback" not in err, err
    assert "still unanswered after 5 s: its events are sent again at the next start" in err, err
