"""Bodies an audit sent that ``serve`` and ``serve --aggregate`` answered with a 500 and a traceback in the log (real
servers on 127.0.0.1): a lone surrogate in a text parameter, JSON nested thousands deep.
Each is now a one-line 4xx, and the server answers on."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from netspy_tui.fleet.source import FleetSource
from netspy_tui.fleet.store import FleetStore
from netspy_tui.serve import BackgroundServer, create_app
from netspy_tui.serve.aggregate import INGEST_PATH, AggregatorApi, IngestLimits
from netspy_tui.telemetry.memory import MemorySource
from tests.factories import connection

INGEST = "agents-secret"


def deep(depth: int, leaf: str = "[]") -> str:
    return '{"a":' * depth + leaf + "}" * depth


@pytest.fixture
def served() -> Iterator[str]:
    with BackgroundServer(create_app(MemorySource([connection(ago=1, command="curl")]))) as srv:
        yield srv.url


@pytest.fixture
def aggregator() -> Iterator[str]:
    fleet = FleetStore(None)
    api = AggregatorApi.factory(fleet, IngestLimits(INGEST), None)
    try:
        with BackgroundServer(create_app(FleetSource(fleet), api=api, own_auth_paths=[INGEST_PATH])) as srv:
            yield srv.url
    finally:
        fleet.close()


def post(url: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(url, content=body, headers={"Content-Type": "application/json", **headers}, timeout=30)


def one_line(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text[:300])
    text = response.text.strip()
    assert "\n" not in text and "Traceback" not in text
    return text


@pytest.mark.parametrize("path", ["/api/list-connections", "/api/list-packet-drops"])
@pytest.mark.parametrize("name", ["command", "process_name"])
def test_a_lone_surrogate_in_a_text_parameter_is_a_400(served: str, path: str, name: str, caplog: Any) -> None:
    with caplog.at_level(logging.WARNING):
        answer = post(served + path, b'{"%s": "\\ud800x"}' % name.encode())
    assert f"{name} must be valid Unicode text" in one_line(answer, 400)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert httpx.get(served + "/api/list-connections?command=curl", timeout=30).status_code == 200


def test_a_body_nested_thousands_deep_is_a_400(served: str) -> None:
    answer = post(served + "/api/connection-summary", deep(100_000).encode())
    assert "nested too deeply" in one_line(answer, 400)


def test_an_ingest_event_nested_thousands_deep_is_refused_not_a_500(aggregator: str) -> None:
    body = '{"events":[' + deep(20_000, "1") + "]}"
    answer = post(aggregator + INGEST_PATH, body.encode(), Authorization=f"Bearer {INGEST}")
    assert answer.status_code == 400, (answer.status_code, answer.text[:300])
    assert "Traceback" not in answer.text
    good = json.dumps({"events": []}).encode()
    assert post(aggregator + INGEST_PATH, good, Authorization=f"Bearer {INGEST}").status_code == 200
