"""``GET /api/traffic``: the extension path, its parameters, and the existing paths left as they were."""

from __future__ import annotations

import httpx

from netspy_tui.serve.app import ENDPOINTS


async def test_traffic_from_a_source_without_byte_counts_is_not_available(client: httpx.AsyncClient) -> None:
    resp = await client.get("/api/traffic", params={"duration_seconds": 30, "pid": 7})
    assert resp.status_code == 200
    body = resp.json()
    assert (body["available"], body["window_seconds"], body["pid"], body["flows"]) == (False, 30, 7, [])
    assert body["query_time"].endswith("Z")


async def test_traffic_parameters_are_checked(client: httpx.AsyncClient) -> None:
    for params, word in (({"limit": 1001}, "limit"), ({"duration_seconds": "x"}, "duration_seconds"),
                         ({"pid": -1}, "pid")):  # fmt: skip
        resp = await client.get("/api/traffic", params=params)
        assert resp.status_code == 400 and word in resp.text, (params, resp.text)
    assert (await client.post("/api/traffic")).status_code == 405


async def test_traffic_is_listed_as_an_extension(client: httpx.AsyncClient) -> None:
    root = (await client.get("/")).json()
    assert "extension" in root["endpoints"]["GET /api/traffic"]
    assert set(ENDPOINTS) - {"GET /api/traffic"} == {
        "GET /health", "GET|POST /api/connection-summary", "GET|POST /api/packet-drop-summary",
        "GET|POST /api/list-connections", "GET|POST /api/list-packet-drops", "GET /api/events", "GET /api/programs",
    }  # fmt: skip
