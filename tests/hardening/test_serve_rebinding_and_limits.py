"""``serve`` and ``mcp --http`` against DNS rebinding and slow or idle clients (issue 11).

Real servers on 127.0.0.1 at a free port: the product's CLI (``serve``, ``mcp --http``) where the
defaults are what is tested, :class:`BackgroundServer` with short limits where only the mechanism is.
The old code answered every ebpf-server path to ``Host: evil.example`` and kept slowloris and idle
sockets open for ever.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from netspy_tui.httplimits import MAX_HEADER_BYTES, REQUEST_TIMEOUT
from netspy_tui.mcp_tools.server import create_server
from netspy_tui.serve import BackgroundServer, create_app, create_mcp_app
from netspy_tui.serve.hosts import HostPolicy
from netspy_tui.telemetry.memory import MemorySource
from tests.factories import connection
from tests.hardening.conftest import DEMO, TERMINATED, Child, Cli, assert_one_line_error, free_port
from tests.hardening.test_security import MCP_HEADERS, MCP_INIT, served_url

#: Every path family the API serves, the MCP route, and one that does not exist.
PATHS = [
    ("GET", "/"),
    ("GET", "/health"),
    ("GET", "/api/connection-summary"),
    ("POST", "/api/connection-summary"),
    ("GET", "/api/packet-drop-summary"),
    ("GET", "/api/list-connections"),
    ("POST", "/api/list-packet-drops"),
    ("GET", "/api/events"),
    ("GET", "/api/programs"),
    ("POST", "/mcp"),
    ("GET", "/no/such/path"),
]
#: Extra slack on top of a timeout before the test calls the connection "not closed".
SLACK = 5.0


def request(http: httpx.Client, method: str, path: str, **headers: str) -> httpx.Response:
    body = MCP_INIT if path == "/mcp" else None
    return http.request(method, path, json=body, headers={**MCP_HEADERS, **headers})


def test_serve_refuses_rebinding_on_every_path_and_answers_its_own_names(spawn: Callable[..., Child]) -> None:
    port = free_port()
    child = spawn(
        "serve", "--replay", str(DEMO), "--replay-speed", "0", "--port", str(port), "--allow-host", "dash.example"
    )
    url = served_url(child, "the eBPF server API")
    with httpx.Client(base_url=url, timeout=10) as http:
        for method, path in PATHS:
            for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", ""):
                refused = request(http, method, path, Host=host)
                assert refused.status_code == 421, (method, path, host, refused.text)
                assert "--allow-host" in refused.text and "connection" not in refused.text
            for origin in ("http://evil.example", f"http://evil.example:{port}", "null", "file://"):
                refused = request(http, method, path, Origin=origin)
                assert refused.status_code == 403, (method, path, origin, refused.text)
            for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", "dash.example:8080"):
                answered = request(http, method, path, Host=host, Origin=f"http://{host}")
                assert answered.status_code not in (403, 421), (method, path, host, answered.text)
        assert http.get("/api/events").json()["events"]  # the data is there for the names it answers
    assert child.stop() == TERMINATED


def test_a_suffix_allows_a_clusters_names_and_nothing_else(spawn: Callable[..., Child], cli: Cli) -> None:
    """``--allow-host '*.SUFFIX'``: every Service name in a cluster's DNS (the manifests' per-pod names of a
    headless Service), not the suffix itself nor a name that only contains it; a suffix anyone's DNS answers
    for (one label) is refused at start, one line."""
    port = free_port()
    child = spawn("serve", "--replay", str(DEMO), "--replay-speed", "0", "--port", str(port),
                  "--allow-host", "*.svc.cluster.local", "--allow-host", "ebpf-aggregator")  # fmt: skip
    url = served_url(child, "the eBPF server API")
    with httpx.Client(base_url=url, timeout=10) as http:
        names = ("ebpf-aggregator", "ebpf-aggregator.netspy.svc.cluster.local", "10-1-2-3.agent.ns.svc.cluster.local.")
        for host in names:
            answered = http.get("/api/events", headers={"Host": f"{host}:{port}"})
            assert answered.status_code == 200 and answered.json()["events"], (host, answered.text)
        for host in ("svc.cluster.local", "a.svc.cluster.local.evil.example", "ebpf-aggregator.evil.example"):
            refused = http.get("/api/events", headers={"Host": f"{host}:{port}"})
            assert refused.status_code == 421, (host, refused.text)
    assert child.stop() == TERMINATED
    for bad in ("*.local", "*.com", "a*.example.com"):
        run = cli("serve", "--allow-host", bad, "--port", str(free_port()))
        line = assert_one_line_error(run, 2)
        assert "--allow-host" in line and bad in line, line


def test_serves_probes_answer_without_the_token_and_nothing_else_does(spawn: Callable[..., Child]) -> None:
    """The manifests' kubelet probes (httpGet, no token): ok without the token, listed at /; every other path still
    401 without it."""
    port = free_port()
    child = spawn("serve", "--replay", str(DEMO), "--replay-speed", "0", "--port", str(port), "--token", "tok-123")
    url = served_url(child, "the eBPF server API")
    with httpx.Client(base_url=url, timeout=10) as http:
        for path in ("/livez", "/readyz"):
            assert (http.get(path).status_code, http.get(path).text) == (200, "ok\n"), path
        for _, path in PATHS:
            assert http.get(path).status_code == 401, path
        listed = http.get("/", headers={"Authorization": "Bearer tok-123"}).json()["endpoints"]
        assert "GET /livez" in listed and "GET /readyz" in listed
    assert child.stop() == TERMINATED


def test_mcp_http_refuses_rebinding_with_the_same_policy(spawn: Callable[..., Child]) -> None:
    port = free_port()
    child = spawn("mcp", "--http", "--replay", str(DEMO), "--port", str(port))
    url = served_url(child, "MCP (streamable HTTP)").removesuffix("/mcp")
    with httpx.Client(base_url=url, timeout=10) as http:
        assert request(http, "POST", "/mcp", Host="evil.example").status_code == 421
        assert request(http, "GET", "/elsewhere", Host="evil.example").status_code == 421
        assert request(http, "POST", "/mcp", Origin="https://evil.example").status_code == 403
        ok = request(http, "POST", "/mcp", Host="localhost")  # the SDK alone wanted a port here
        assert ok.status_code == 200, ok.text
    assert child.stop() == TERMINATED


@pytest.mark.parametrize(
    "bind,host,allowed",
    [
        ("0.0.0.0", "192.0.2.7:8080", True),  # all addresses: any address literal (rebinding needs a name)
        ("0.0.0.0", "[2001:db8::1]:8080", True),
        ("0.0.0.0", "attacker.example", False),
        ("192.0.2.7", "192.0.2.7", True),
        ("192.0.2.7", "192.0.2.8", False),
        ("192.0.2.7", "localhost", False),
        ("::1", "[::1]:80", True),
        ("127.0.0.1", "127.0.0.2", True),
        ("127.0.0.1", "LOCALHOST.", True),
        ("myhost.lan", "myhost.lan:8080", True),
        ("myhost.lan", "other.lan", False),
    ],
)
def test_host_policy(bind: str, host: str, allowed: bool) -> None:
    app = create_app(MemorySource([connection()]), host=bind)
    with BackgroundServer(app) as srv, httpx.Client(base_url=srv.url, timeout=5) as http:
        status = http.get("/api/events", headers={"Host": host}).status_code
    assert (status != 421) is allowed, (bind, host, status)


# --- slow and idle clients ---------------------------------------------------------------------------


def closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> float | None:
    """Seconds until the server closes ``sock`` while we send ``trickle`` a byte every 0.2 s; None if
    it was still open after ``seconds``."""
    start = time.monotonic()
    sock.settimeout(0.2)
    sent = 0
    while time.monotonic() - start < seconds:
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - start
        except TimeoutError:
            pass
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start
        if sent < len(trickle):
            try:
                sock.send(trickle[sent : sent + 1])
            except (ConnectionResetError, BrokenPipeError):
                return time.monotonic() - start
            sent += 1
    return None


SLOW_HEAD = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 500


@pytest.fixture
def short_limits() -> Iterator[BackgroundServer]:
    app = create_app(MemorySource([connection()]))
    with BackgroundServer(app, request_timeout=1.0, max_connections=5) as srv:
        yield srv


def test_slowloris_and_idle_sockets_are_closed_after_the_request_timeout(short_limits: BackgroundServer) -> None:
    with (
        socket.create_connection(("127.0.0.1", short_limits.port)) as slow,
        socket.create_connection(("127.0.0.1", short_limits.port)) as idle,
    ):
        took = closed_within(slow, 1.0 + SLACK, SLOW_HEAD)
        assert took is not None, "a client trickling its headers was never disconnected"
        assert 0.8 < took < 1.0 + SLACK
        assert closed_within(idle, SLACK) is not None, "a client that sent nothing was never disconnected"
    # a slow body is bounded too
    with socket.create_connection(("127.0.0.1", short_limits.port)) as body:
        body.sendall(b"POST /api/list-connections HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{")
        assert closed_within(body, 1.0 + SLACK, b" " * 50) is not None
    with httpx.Client(base_url=short_limits.url, timeout=5) as http:  # and ordinary clients are served
        assert http.get("/health").status_code == 200


def test_an_unfinished_request_head_over_the_limit_is_400(short_limits: BackgroundServer) -> None:
    with socket.create_connection(("127.0.0.1", short_limits.port)) as sock:
        sock.settimeout(5)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (MAX_HEADER_BYTES + 1000))
        assert sock.recv(4096).startswith(b"HTTP/1.1 400 ")


def test_connections_beyond_the_cap_are_answered_503_and_closed(short_limits: BackgroundServer) -> None:
    held = [socket.create_connection(("127.0.0.1", short_limits.port)) for _ in range(5)]
    try:
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", short_limits.port)) as extra:
            extra.settimeout(5)
            answer = extra.recv(4096)
            assert answer.startswith(b"HTTP/1.1 503 "), answer
            assert b"too many connections (the limit is 5)" in answer
            assert extra.recv(4096) == b""
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while True:  # once they are gone, requests are served again
        try:
            with httpx.Client(base_url=short_limits.url, timeout=5) as http:
                if http.get("/health").status_code == 200:
                    break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "still refusing after the held connections closed"
        time.sleep(0.1)


def test_the_mcp_app_has_the_same_limits() -> None:
    app = create_mcp_app(create_server(MemorySource([connection()])))
    with BackgroundServer(app, request_timeout=1.0) as srv, socket.create_connection(("127.0.0.1", srv.port)) as s:
        assert closed_within(s, 1.0 + SLACK, SLOW_HEAD.replace(b"/health", b"/mcp")) is not None


@pytest.mark.slow
def test_serve_disconnects_a_slowloris_client_within_its_stated_timeout(spawn: Callable[..., Child]) -> None:
    port = free_port()
    child = spawn("serve", "--replay", str(DEMO), "--replay-speed", "0", "--port", str(port))
    served_url(child, "the eBPF server API")
    with socket.create_connection(("127.0.0.1", port)) as slow:
        took = closed_within(slow, REQUEST_TIMEOUT + SLACK, SLOW_HEAD)
    assert took is not None, f"still open after {REQUEST_TIMEOUT + SLACK} s"
    assert took > REQUEST_TIMEOUT - 1
    assert child.stop() == TERMINATED


def test_a_request_without_a_host_header_is_told_to_send_one(short_limits: BackgroundServer) -> None:
    """An HTTP/1.0 request may leave ``Host`` out: it was a 421 "does not answer to Host ''; start it with
    --allow-host NAME", which no name could fix. A 400 says what is missing; with a Host it is answered."""
    for head in (b"GET /health HTTP/1.0\r\n\r\n", b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", short_limits.port)) as sock:
            sock.settimeout(5)
            sock.sendall(head)
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        if b"Host:" in head:
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        else:
            assert answer.startswith(b"HTTP/1.1 400 ") and b"no Host header" in answer, answer[:300]
    policy = HostPolicy("127.0.0.1", ["*"])  # (--allow-host '*': any Host, and none)
    assert policy.allows_host_header(None) and policy.allows_host_header("anything.example")
