"""An agent that sheds events under load (or loses them otherwise) tells the aggregator, so the fleet's figures say
what they lack: the aggregator counts the events it receives, and an agent that kept 26 of 2,000 connects left it
saying "26, counts exact, healthy" (an audit's finding). Against a real aggregator API on 127.0.0.1 and the
forwarder over an agent's store, as ``serve --forward`` runs it; the tool's text read through the CLI."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench import synth
from netspy_tui.fleet.store import FleetStore
from netspy_tui.serve.aggregate import AGENT_LOSSES_PATH, INGEST_PATH
from netspy_tui.serve.forward import Forwarder
from netspy_tui.store import EventStore
from tests.cli.conftest import cli_env, run_cli  # noqa: F401,F811 (fixtures)
from tests.fake_aggregator import FakeAggregator
from tests.fleet.test_fleet_resolutions import INGEST_TOKEN, served_fleet

READ_TOKEN = "fleet-read-secret"
NODE = "node-shed"


@pytest.fixture
def aggregator() -> Iterator[tuple[FleetStore, str]]:
    """``serve --aggregate``'s app as the CLI makes it (a read token, the agents' token on the agents' paths)."""
    with served_fleet(None, token=READ_TOKEN) as served:
        yield served


def shedding_agent(tmp_path: Path, shed: int) -> EventStore:
    """An agent's store holding 40 settled events and ``shed`` more it shed in the same second."""
    store = EventStore(tmp_path / "agent.sqlite3")
    store.write(list(synth.batches(40, 5, seed=3, drop_share=0.0, now_wall_ns=time.time_ns() - 20 * 10**9)))
    store.note_losses(int(time.time()) - 20, {"shed": shed})
    return store


def read(url: str, path: str) -> httpx.Response:
    return httpx.get(url + path, headers={"Authorization": f"Bearer {READ_TOKEN}"}, timeout=10)


def health(url: str) -> dict:
    return read(url, "/health").json()


async def test_the_aggregator_says_what_a_shedding_agent_could_not_forward_once_however_often_it_is_told(
    tmp_path: Path,
    aggregator: tuple[FleetStore, str],
    run_cli,  # noqa: F811
) -> None:
    fleet, url = aggregator
    store = shedding_agent(tmp_path, 3_949)
    forwarder = Forwarder(store, url + INGEST_PATH, token=INGEST_TOKEN, identity={"k8s_node_name": NODE})
    try:
        assert await forwarder.forward_once() == 40
        seen = health(url)
        assert seen["status"] == "degraded" and seen["counts_exact"] is False, seen
        assert seen["recent_losses"] == {"agent_unforwarded": 3_949}
        assert "3,949 events agents could not forward in the last 60 s (node-shed 3,949)" in seen["detail"]
        # told again (nothing new) and then of more in the same second: replaced, not added
        await forwarder.forward_once()
        store.note_losses(int(time.time()) - 20, {"shed": 51})
        await forwarder.forward_once()
        assert forwarder.status.losses_reported == 4_000
        assert health(url)["recent_losses"] == {"agent_unforwarded": 4_000}
        metrics = read(url, "/metrics").text
        assert 'netspy_events_lost_total{cause="agent_unforwarded"} 4000.0' in metrics.splitlines(), metrics
        assert "netspy_source_degraded 1.0" in metrics.splitlines(), metrics
    finally:
        await forwarder._client.aclose()
        store.close()
    out = run_cli("--server", url, "--token", READ_TOKEN, "--tool", "get_network_summary", "--duration", "600")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == (
        "Note: 4,000 events agents saw but could not forward (shed under load or lost on their node: each agent's "
        "own server_status says why) in this window; counts are incomplete."
    ), out.stdout


async def test_an_aggregator_that_does_not_take_loss_figures_still_gets_the_events_and_the_agent_says_so(
    tmp_path: Path,
) -> None:
    """ebpf-server's own aggregator has no such path (404): the events go as before, the agent's status says why its
    losses are not told there, and it does not ask again every round."""
    store = shedding_agent(tmp_path, 10)
    with FakeAggregator() as agg:
        forwarder = Forwarder(store, agg.url + INGEST_PATH, identity={"k8s_node_name": NODE})
        try:
            assert await forwarder.forward_once() == 40
            assert "does not take this node's loss figures" in forwarder.status.losses_note
            assert forwarder.status.losses_reported == 0 and forwarder.status.last_error == ""
            assert len(agg.received()) == 40
        finally:
            await forwarder._client.aclose()
    store.close()


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"{", "the body is not JSON"),
        (b'{"node": "n1"}', 'an agent-losses body is {"node": NAME'),
        (b'{"node": "bad node", "losses": []}', "node must be a node name"),
        (b'{"node": "n1", "losses": [[1, "invented", 3]]}', "loss row 0 is not [second, cause, n]"),
        (b'{"node": "n1", "losses": [[1, "shed", -3]]}', "loss row 0 is not [second, cause, n]"),
        (b'{"node": "n1", "losses": [[1, "agent_unforwarded", 3]]}', "loss row 0 is not [second, cause, n]"),
        (b'{"node": "n1", "losses": [[1, ["shed"], 3]]}', "loss row 0 is not [second, cause, n]"),
    ],
)
def test_a_bad_loss_report_is_refused_in_one_line_and_stores_nothing(
    aggregator: tuple[FleetStore, str], body: bytes, said: str
) -> None:
    fleet, url = aggregator
    agent = {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"}
    r = httpx.post(url + AGENT_LOSSES_PATH, content=body, headers=agent, timeout=10)
    assert r.status_code == 400 and said in r.text and "\n" not in r.text.strip(), r.text
    assert fleet.agent_losses() == {}


def test_only_the_agents_token_may_report_losses(aggregator: tuple[FleetStore, str]) -> None:
    fleet, url = aggregator
    body = {"node": "n1", "losses": [[int(time.time()), "shed", 5]]}
    for token in (READ_TOKEN, "wrong"):
        r = httpx.post(url + AGENT_LOSSES_PATH, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 401, r.text
    r = httpx.post(url + AGENT_LOSSES_PATH, json=body, headers={"Authorization": f"Bearer {INGEST_TOKEN}"}, timeout=10)
    assert r.status_code == 200 and r.json() == {"success": True, "stored": 1}
    assert fleet.agent_losses() == {"n1": 5}
