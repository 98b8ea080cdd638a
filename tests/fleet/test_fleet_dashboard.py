"""The dashboard pointed at a real aggregator (``serve --aggregate``'s API on 127.0.0.1, fed through its
ingest endpoint): the Node column, per-node totals in the header, grouping by node (``g``), the filter and a
node heading's focus (enter: a known node narrows the tool calls, so the figures are that node's own), and
the node in what the AI is told."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from pydantic import SecretStr

from netspy_tui.ai.prompts import DATA_CLOSE, DATA_OPEN
from netspy_tui.ai.settings import AISettings
from netspy_tui.fleet.source import FleetSource
from netspy_tui.fleet.store import FleetStore
from netspy_tui.mcp_tools.ai_bridge import dashboard_hooks, explanation_context
from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.models import Scope
from netspy_tui.serve import BackgroundServer, create_app
from netspy_tui.serve.aggregate import INGEST_PATH, AggregatorApi, IngestLimits
from netspy_tui.telemetry.client import HttpSource
from netspy_tui.tui.app import NetspyApp
from netspy_tui.tui.widgets.processes import GROUP_PREFIX, NODE_ROW
from tests.factories import connection_json, drop_json
from tests.fake_openai import FakeOpenAI
from tests.tui.conftest import wait_for
from tests.tui.screen_text import screen_text

INGEST = "agents-secret"
#: node -> (command, pid, connections): curl runs on two nodes
LOAD = {"node-a": [("curl", 101, 6)], "node-b": [("nginx", 201, 4), ("curl", 202, 2)], "node-c": [("redis", 301, 3)]}


def events_of(node: str) -> list[dict[str, Any]]:
    out = []
    for command, pid, n in LOAD[node]:
        for i in range(n):
            event = connection_json(pid=pid, command=command, port=1000 + i, ago=5)
            event.update(id=f"{node}-{command}-{i}", k8s_node_name=node)
            out.append(event)
    return out


@asynccontextmanager
async def aggregator() -> AsyncIterator[str]:
    fleet = FleetStore(None)
    app = create_app(FleetSource(fleet), api=AggregatorApi.factory(fleet, IngestLimits(INGEST)),
                     own_auth_paths=[INGEST_PATH])  # fmt: skip
    server = BackgroundServer(app, host="127.0.0.1", port=0).start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            for node in LOAD:
                r = await client.post(INGEST_PATH, json={"events": events_of(node)},
                                      headers={"Authorization": f"Bearer {INGEST}"})  # fmt: skip
                assert r.status_code == 200 and r.json()["success"], r.text
        yield server.url
    finally:
        server.stop()
        fleet.close()


async def test_the_dashboard_on_an_aggregator_shows_nodes_groups_by_node_and_focuses_one() -> None:
    async with aggregator() as url:
        source = HttpSource(url, retries=0)
        async with open_gateway(source) as gw:
            app = NetspyApp(gw, interval=3600, window=60)
            async with app.run_test(size=(160, 45)) as pilot:
                d = app.dashboard
                procs = d.processes
                await wait_for(pilot, lambda: set(procs.stats) == {"curl", "nginx", "redis"}, "the processes")
                await wait_for(pilot, lambda: d.connections.row_count == 15, "every node's connections")
                assert d.connections.shows_node and procs.shows_nodes
                assert procs.get_cell("curl", "nodes").plain == "node-a, node-b"  # one row, its nodes
                assert procs.get_cell("curl", "attempts").plain == "8"
                await pilot.pause()
                text = screen_text(app)
                assert "nodes node-a 6 · node-b 6 · node-c 3" in text  # per-node totals, the aggregator's own

                await pilot.press("g")  # by workload (none known here), then by node
                await wait_for(pilot, lambda: procs.group_by == "workload", "grouped by workload")
                await pilot.press("g")
                await wait_for(pilot, lambda: procs.group_by == "node" and procs.row_count == 7, "grouped by node")
                await pilot.pause()
                assert "by node (g)" in screen_text(app)
                keys = procs._order
                # per node, as list_processes --group-by node counts: curl under each of its nodes, with that
                # node's own figures (it was one row under "node-a, node-b" with both nodes' sum)
                on = {f"{command}@{node}": f"{command}{NODE_ROW}{node}" for node, rows in LOAD.items()
                      for command, _, _ in rows}  # fmt: skip
                assert keys == [GROUP_PREFIX + "node-a", on["curl@node-a"],
                                GROUP_PREFIX + "node-b", on["nginx@node-b"], on["curl@node-b"],
                                GROUP_PREFIX + "node-c", on["redis@node-c"]]  # fmt: skip
                totals = {k.removeprefix(GROUP_PREFIX): procs.get_cell(k, "attempts").plain for k in keys
                          if k.startswith(GROUP_PREFIX)}  # fmt: skip
                assert totals == {"node-a": "6", "node-b": "6", "node-c": "3"}
                assert [procs.get_cell(on[k], "attempts").plain for k in ("curl@node-a", "curl@node-b")] == ["6", "2"]
                assert procs.get_cell(on["curl@node-b"], "pids").plain == "202"
                tool = await gw.call("list_processes", {"group_by": "node", "duration": 60})
                assert tool.data is not None and {g["key"]: str(g["attempts"]) for g in tool.data["groups"]} == totals
                procs.focus()
                procs.move_cursor(row=keys.index(on["curl@node-b"]), animate=False)
                await pilot.pause()
                assert d.selected_process() == ("curl", None) and d.selected_nodes() == ["node-b"]

                procs.focus()
                procs.move_cursor(row=keys.index(GROUP_PREFIX + "node-c"), animate=False)
                await pilot.press("enter")  # a node's heading: its rows, through the filter
                await wait_for(pilot, lambda: d.filter_text == "node-c", "the node filter")
                await wait_for(pilot, lambda: d.connections.row_count == 3, "node-c's connections only")
                assert {e.k8s_node_name for e in d.connections.events.values()} == {"node-c"}
                await wait_for(pilot, lambda: set(procs.stats) == {"redis"}, "node-c's process only")
                assert d.filter_subject == Scope(node="node-c")  # a known node: the tools are asked about it
                await wait_for(pilot, lambda: d.latest is not None and d.latest.config.subject.node == "node-c"
                               and d.latest.patterns is not None, "a poll narrowed to node-c")  # fmt: skip
                assert d.latest is not None and d.latest.patterns is not None
                assert d.latest.patterns.stats.total == 3  # the aggregator's figure for node-c alone
                assert "filter “node-c”" in screen_text(app)

                d.connections.focus()
                await pilot.pause()
                assert d.selected_process()[0] == "redis" and d.selected_nodes() == ["node-c"]
                await pilot.press("escape", "escape")
                await wait_for(pilot, lambda: d.filter_text == "", "the filter cleared")
                await pilot.press("g")  # node -> ungrouped
                await wait_for(pilot, lambda: procs.group_by is None, "ungrouped")
                procs.focus()
                procs.move_cursor(row=procs.get_row_index("curl"), animate=False)
                await pilot.pause()
                assert d.selected_nodes() == ["node-a", "node-b"]

            context = await explanation_context(gw, Scope(command="curl"))  # what the AI is told names the nodes
            assert context["nodes"] == ["node-a", "node-b"]
        await source.aclose()


async def test_a_node_whose_events_arrive_seconds_behind_another_s_still_shows_them() -> None:
    """Agents post every few seconds, not in step: node-y's batch, stamped 8 s ago, lands after the dashboard has
    node-x's newest. Those rows still appear; and node-y's events numbered as node-x's (two agents replaying one
    recording) are rows of their own, not taken for node-x's."""
    fleet = FleetStore(None)
    app = create_app(FleetSource(fleet), api=AggregatorApi.factory(fleet, IngestLimits(INGEST)),
                     own_auth_paths=[INGEST_PATH])  # fmt: skip
    server = BackgroundServer(app, host="127.0.0.1", port=0).start()

    def batch(node: str, ago: float) -> list[dict[str, Any]]:
        out = []
        for i in range(6):
            event = connection_json(pid=400, command="curl", port=2000 + i, ago=ago)
            event.update(id=f"rec-{i}", k8s_node_name=node)  # (the same ids on both nodes)
            out.append(event)
        return out

    try:
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {INGEST}"}) as client:

            async def post(node: str, ago: float) -> None:
                r = await client.post(INGEST_PATH, json={"events": batch(node, ago)})
                assert r.status_code == 200 and r.json()["success"], r.text

            await post("node-x", 1)
            async with open_gateway(HttpSource(server.url, retries=0)) as gw:
                dash = NetspyApp(gw, interval=0.2, window=300)
                async with dash.run_test(size=(160, 45)) as pilot:
                    table = dash.dashboard.connections
                    await wait_for(pilot, lambda: table.row_count == 6, "node-x's connections")
                    await pilot.pause(0.5)  # (a poll or two more: the dashboard's newest is node-x's)
                    await post("node-y", 8)
                    await wait_for(pilot, lambda: table.row_count == 12, "node-y's late connections too")
    finally:
        server.stop()
        fleet.close()


async def test_the_header_keeps_no_figure_the_aggregator_gave_at_start(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Opened on an aggregator no agent has posted to yet, the header's notes must not keep saying so ("with 0
    nodes") once nodes post: the live nodes line says it."""
    from netspy_tui import cli
    from netspy_tui.config import load_settings

    monkeypatch.setenv("NETSPY_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setattr(cli.gc, "freeze", lambda: None)  # (the dashboard's process freezes its heap; not pytest's)
    fleet = FleetStore(None)
    app = create_app(FleetSource(fleet), api=AggregatorApi.factory(fleet, IngestLimits(INGEST)),
                     own_auth_paths=[INGEST_PATH])  # fmt: skip
    server = BackgroundServer(app, host="127.0.0.1", port=0).start()
    try:
        settings = load_settings({"server": server.url, "dns": False})[0]
        async with cli._connect_dashboard(settings, "the data source")(lambda what: None) as (gw, note):
            async with httpx.AsyncClient(base_url=server.url) as client:
                for node in ("node-a", "node-b"):
                    r = await client.post(INGEST_PATH, json={"events": events_of(node)},
                                          headers={"Authorization": f"Bearer {INGEST}"})  # fmt: skip
                    assert r.status_code == 200, r.text
            dash = NetspyApp(gw, interval=0.2, window=60, source_note=note)
            async with dash.run_test(size=(160, 45)) as pilot:
                await wait_for(pilot, lambda: "nodes node-a 6 · node-b 6" in screen_text(dash), "the nodes line")
                assert "0 nodes" not in screen_text(dash)
    finally:
        server.stop()
        fleet.close()


async def test_an_agents_backlog_after_an_outage_shows_in_the_tables_by_time_each_row_once() -> None:
    """An agent whose aggregator was down drains its spool when it returns: events minutes older than the
    dashboard's newest. The aggregator's cursor (what was stored since the last poll, whatever its time) brings
    them into the connection and drop tables, in their place by time, each once however many polls follow; one
    older than the window is counted by the aggregator but not shown."""
    fleet = FleetStore(None)
    app = create_app(FleetSource(fleet), api=AggregatorApi.factory(fleet, IngestLimits(INGEST)),
                     own_auth_paths=[INGEST_PATH])  # fmt: skip
    server = BackgroundServer(app, host="127.0.0.1", port=0).start()

    def conn(node: str, i: int, ago: float) -> dict[str, Any]:
        event = connection_json(pid=500 + i, command=f"{node}-app", port=3000 + i, ago=ago)
        event.update(id=f"{node}-c{i}", k8s_node_name=node)
        return event

    def drop(node: str, i: int, ago: float) -> dict[str, Any]:
        event = drop_json(pid=600 + i, command=f"{node}-srv", ago=ago)
        event.update(id=f"{node}-d{i}", k8s_node_name=node)
        return event

    live = [conn("node-live", i, 1) for i in range(4)] + [drop("node-live", i, 1) for i in range(2)]
    backlog_conns = [conn("node-back", i, ago) for i, ago in enumerate((120, 170, 220, 260, 300))]
    backlog_drops = [drop("node-back", i, ago) for i, ago in enumerate((150, 200, 280))]
    too_old = conn("node-back", 9, 900)  # (older than the dashboard's 10-minute window)
    try:
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {INGEST}"}) as client:

            async def post(events: list[dict[str, Any]]) -> None:
                r = await client.post(INGEST_PATH, json={"events": events})
                assert r.status_code == 200 and r.json()["success"], r.text

            await post(live)
            async with open_gateway(HttpSource(server.url, retries=0)) as gw:
                dash = NetspyApp(gw, interval=0.2, window=600)
                async with dash.run_test(size=(160, 45)) as pilot:
                    d = dash.dashboard
                    await wait_for(pilot, lambda: d.connections.row_count == 4, "the live node's connections")
                    await wait_for(pilot, lambda: d.drops.row_count == 2, "the live node's drops")
                    await post(backlog_conns + backlog_drops + [too_old])  # the agent drains its spool
                    await wait_for(pilot, lambda: d.connections.row_count == 9, "the backlog's connections")
                    await wait_for(pilot, lambda: d.drops.row_count == 5, "the backlog's drops")
                    conns = list(d.connections.events.values())
                    drops = list(d.drops.events.values())
                    assert sorted(e.id for e in conns) == sorted(e["id"] for e in live[:4] + backlog_conns)
                    assert sorted(e.id for e in drops) == sorted(e["id"] for e in live[4:] + backlog_drops)
                    # in their place by time: the backlog (minutes old) before the live rows, oldest first
                    assert [e.time for e in conns] == sorted(e.time for e in conns)
                    assert [e.time for e in drops] == sorted(e.time for e in drops)
                    assert [e.id for e in conns][:5] == [e["id"] for e in reversed(backlog_conns)]
                    assert [e.id for e in drops][:3] == [e["id"] for e in reversed(backlog_drops)]
                    for i in range(3):  # the live node goes on sending: each poll brings its one new row, only it
                        await post([conn("node-live", 10 + i, 0.5)])
                        await wait_for(pilot, lambda i=i: d.connections.row_count == 10 + i, "the next live row")
                        assert d.drops.row_count == 5
                    assert "node-live-c12" in {e.id for e in d.connections.events.values()}
                    assert fleet.stats()["events_by_node"]["node-back"] == 9  # the old one is counted
    finally:
        server.stop()
        fleet.close()


async def test_traffic_on_an_aggregator_says_it_is_not_aggregated_and_where_it_is() -> None:
    """Agents count bytes; the aggregator does not aggregate them. The Traffic view and get_traffic said "not
    counted by this source (needs the eBPF collector on Linux 6.3 or later…)", which sent the operator to their
    kernels: they say the aggregator does not aggregate it, and to ask the node's agent."""
    import asyncio
    import subprocess
    import sys

    async with aggregator() as url:
        for tool in ("get_traffic", "get_connect_latency"):
            run = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "netspy_tui", "--server", url,
                                          "--tool", tool], capture_output=True, text=True, timeout=60)  # fmt: skip
            assert run.returncode == 0, run.stderr
            assert "the aggregator does not aggregate traffic or connect latency" in run.stdout, run.stdout
            assert "ask the node's agent" in run.stdout and "6.3" not in run.stdout and "eBPF" not in run.stdout
        source = HttpSource(url, retries=0)
        async with open_gateway(source) as gw:
            app = NetspyApp(gw, interval=3600, window=60)
            async with app.run_test(size=(160, 45)) as pilot:
                d = app.dashboard
                await pilot.press("t")
                await wait_for(pilot, lambda: d.latest is not None and d.latest.traffic is not None, "the traffic")
                await pilot.pause()
                text = " ".join(screen_text(app).split())
                assert "not counted here: the aggregator does not aggregate traffic" in text, text
                assert "Linux 6.3" not in text
        await source.aclose()


def telemetry_of(request_body: dict[str, Any] | None) -> dict[str, Any]:
    """The telemetry block of a chat request, parsed."""
    assert request_body is not None
    user = next(m["content"] for m in request_body["messages"] if m["role"] == "user")
    data: dict[str, Any] = json.loads(user.split(DATA_OPEN, 1)[1].split(DATA_CLOSE, 1)[0])
    return data


@asynccontextmanager
async def payments_on_two_nodes() -> AsyncIterator[tuple[NetspyApp, Any, FakeOpenAI]]:
    """A dashboard with the AI (FakeOpenAI) on a real aggregator where `payments` runs on two nodes: every connect
    refused on node-a (pid 500), every one fine on node-b (pid 600), 20 each; yields it once both nodes' rows show."""
    fleet = FleetStore(None)
    app = create_app(FleetSource(fleet), api=AggregatorApi.factory(fleet, IngestLimits(INGEST)),
                     own_auth_paths=[INGEST_PATH])  # fmt: skip
    server = BackgroundServer(app, host="127.0.0.1", port=0).start()
    try:
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {INGEST}"}) as client:
            for node, pid, code in (("node-a", 500, -111), ("node-b", 600, 0)):
                events = []
                for i in range(20):
                    event = connection_json(pid=pid, command="payments", port=3000 + i, ago=5, return_code=code)
                    event.update(id=f"{node}-{i}", k8s_node_name=node, outcome="refused" if code else "ok")
                    events.append(event)
                r = await client.post(INGEST_PATH, json={"events": events})
                assert r.status_code == 200 and r.json()["success"], r.text
        with FakeOpenAI() as fake:
            fake.text("node-a refuses payments.")
            settings = AISettings(api_key=SecretStr("sk-test"), base_url=fake.base_url, model="m", timeout=5.0,
                                  max_retries=0)  # fmt: skip
            source = HttpSource(server.url, retries=0)
            async with open_gateway(source) as gw:
                dash = NetspyApp(gw, interval=3600, window=60, ai=dashboard_hooks(settings))
                async with dash.run_test(size=(160, 45)) as pilot:
                    await wait_for(pilot, lambda: dash.dashboard.connections.row_count == 40, "both nodes' rows")
                    yield dash, pilot, fake
            await source.aclose()
    finally:
        server.stop()
        fleet.close()


async def assert_node_a_explained(dash: NetspyApp, pilot: Any, fake: FakeOpenAI) -> None:
    """`a` was pressed: the model is told node-a's 20 refused connects (failure ratio 1.0, node-a named), not the
    fleet's 40 at 0.5 with no node, and the pane says the node."""
    pane = dash.dashboard.ai_pane
    await wait_for(pilot, lambda: pane.state == "finished", "the explanation")
    data = telemetry_of(fake.chat_requests[0].body)
    assert data["connections"]["total"] == 20, data
    assert data["connections"]["failure_ratio"] == 1.0
    assert data["process"] == {"pid": None, "command": "payments", "node": "node-a"}
    assert data["nodes"] == ["node-a"] and "node-a" in data["subject"]
    assert "on node 'node-a'" in pane.state_text, pane.state_text


async def test_a_with_a_node_filter_explains_that_node_s_figures_and_names_the_node() -> None:
    """Filtered to node-a, the table shows node-a's 20 refused connects: `a` must tell the model those."""
    async with payments_on_two_nodes() as (dash, pilot, fake):
        d = dash.dashboard
        await pilot.press("slash", *"node-a", "enter")
        await wait_for(pilot, lambda: d.filter_subject == Scope(node="node-a"), "the node filter")
        await wait_for(pilot, lambda: d.connections.row_count == 20, "node-a's rows only")
        d.connections.focus()
        await pilot.pause()
        await pilot.press("a")
        await assert_node_a_explained(dash, pilot, fake)


async def test_a_on_a_process_row_grouped_by_node_explains_that_node_s_figures() -> None:
    """Grouped by node, `payments` has a row under node-a (20 refused) and one under node-b (20 fine): `a` on
    node-a's row explains node-a's figures (the old code told the model both nodes' 40 at 0.5, no node)."""
    async with payments_on_two_nodes() as (dash, pilot, fake):
        procs = dash.dashboard.processes
        await wait_for(pilot, lambda: "payments" in procs.stats, "the process")
        procs.focus()
        await pilot.press("g", "g")  # by workload (none known here), then by node
        row = f"payments{NODE_ROW}node-a"
        await wait_for(pilot, lambda: procs.group_by == "node" and row in procs._order, "grouped by node")
        procs.move_cursor(row=procs.get_row_index(row), animate=False)
        await pilot.pause()
        assert procs.selected_node() == "node-a" and procs.selected_process() == "payments"
        await pilot.press("a")
        await assert_node_a_explained(dash, pilot, fake)


async def test_a_connect_listed_in_progress_shows_the_outcome_its_agent_sent_later() -> None:
    """An agent forwards a connect whose SYN goes unanswered in progress, then its outcome: the dashboard on the
    aggregator puts the outcome in the row it listed (``resolved_after``: the aggregator's ``updates``)."""
    fleet = FleetStore(None)
    app = create_app(FleetSource(fleet), api=AggregatorApi.factory(fleet, IngestLimits(INGEST)),
                     own_auth_paths=[INGEST_PATH])  # fmt: skip
    server = BackgroundServer(app, host="127.0.0.1", port=0).start()
    slow = connection_json(pid=700, command="slowapp", port=4444, ago=3, outcome="in_progress", return_code=-115)
    slow.update(id="node-s-slow", k8s_node_name="node-s")
    try:
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {INGEST}"}) as client:

            async def post(events: list[dict[str, Any]]) -> None:
                r = await client.post(INGEST_PATH, json={"events": events})
                assert r.status_code == 200 and r.json()["success"], r.text

            await post([slow])
            async with open_gateway(HttpSource(server.url, retries=0)) as gw:
                dash = NetspyApp(gw, interval=0.2, window=300)
                async with dash.run_test(size=(160, 45)) as pilot:
                    d = dash.dashboard

                    def outcome() -> str | None:
                        held = [e for e in d.connections.events.values() if e.id == "node-s-slow"]
                        return held[0].effective_outcome if held else None

                    await wait_for(pilot, lambda: outcome() == "in_progress", "the connect in progress")
                    await pilot.pause(0.5)  # (polls after it: it is held, not asked for again)
                    await post([{**slow, "outcome": "timeout", "return_code": -110}])
                    await wait_for(pilot, lambda: outcome() == "timeout", "its outcome in the row it had")
                    await wait_for(pilot, lambda: "timeout" in screen_text(dash), "the outcome on screen")
                    assert d.connections.row_count == 1
    finally:
        server.stop()
        fleet.close()
