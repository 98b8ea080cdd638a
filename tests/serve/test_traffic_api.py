"""``GET /api/traffic``: the extension path, its parameters, and the existing paths left as they were."""

from __future__ import annotations

import httpx
import pytest

from netspy_tui.serve.app import ENDPOINTS

pytestmark = pytest.mark.quiet


@pytest.mark.parametrize(("path", "listed"), [("/api/traffic", "flows"), ("/api/connect-latency", "destinations")])
async def test_a_source_without_the_figures_says_they_are_not_available(client: httpx.AsyncClient, path: str,
                                                                        listed: str) -> None:  # fmt: skip
    resp = await client.get(path, params={"duration_seconds": 30, "pid": 7})
    assert resp.status_code == 200
    body = resp.json()
    assert (body["available"], body["window_seconds"], body["pid"], body[listed]) == (False, 30, 7, [])
    assert body["query_time"].endswith("Z")


@pytest.mark.parametrize("path", ["/api/traffic", "/api/connect-latency"])
async def test_parameters_are_checked(client: httpx.AsyncClient, path: str) -> None:
    for params, word in (({"limit": 1001}, "limit"), ({"duration_seconds": "x"}, "duration_seconds"),
                         ({"pid": -1}, "pid")):  # fmt: skip
        resp = await client.get(path, params=params)
        assert resp.status_code == 400 and word in resp.text, (params, resp.text)
    assert (await client.post(path)).status_code == 405


async def test_traffic_is_listed_as_an_extension(client: httpx.AsyncClient) -> None:
    root = (await client.get("/")).json()
    extensions = {
        "GET /api/traffic",
        "GET /api/connect-latency",
        "GET /api/window-stats",
        "GET /api/inbound",
        "GET /api/losses",
        "GET /metrics",
        "GET /livez",
        "GET /readyz",
    }
    assert all("extension" in root["endpoints"][path] for path in extensions)
    assert set(ENDPOINTS) - extensions == {
        "GET /health", "GET|POST /api/connection-summary", "GET|POST /api/packet-drop-summary",
        "GET|POST /api/list-connections", "GET|POST /api/list-packet-drops", "GET /api/events", "GET /api/programs",
    }  # fmt: skip
