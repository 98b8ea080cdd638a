"""serve --forward never shows its credentials: the URL's password is masked in /health, server_status and the log,
a token the aggregator's answer echoes (as written or JSON-escaped) is masked in ``last_error`` too, and every
token a server takes (flag or variable) is visible ASCII on one line, refused at start otherwise."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from netspy_tui.serve import BackgroundServer
from tests.hardening.conftest import DEMO, Child, Cli, assert_one_line_error, free_port, wait_until
from tests.hardening.test_security import served_url

PASSWORD = "URLPASSWORD99"
#: visible ASCII, with the characters JSON escapes (``"``, ``\\``) and may escape (``/``)
TOKEN = 'FWD/TOK"EN\\SECRET77'


@pytest.fixture
def echoing() -> Iterator[BackgroundServer]:
    """An upstream that refuses every post with 401, repeating the credentials it was sent in its body: as
    written, and as JSON spells them (``\\"``, ``\\\\``, ``\\/``)."""

    async def ingest(request: Request) -> PlainTextResponse:
        sent = request.headers.get("authorization", "")
        slashed = json.dumps(sent).replace("/", "\\/")
        body = f"bad credentials {sent} {json.dumps({'got': sent})} {slashed}"
        return PlainTextResponse(body, status_code=401)

    with BackgroundServer(Starlette(routes=[Route("/api/events/ingest", ingest, methods=["POST"])])) as srv:
        yield srv


def _failing(url: str) -> dict[str, Any]:
    """/health's forwarding once a post failed."""

    def failed() -> dict[str, Any] | None:
        forwarding: dict[str, Any] = httpx.get(url + "/health", timeout=10).json()["forwarding"]
        return forwarding if forwarding["failures"] and forwarding["last_error"] else None

    return dict(wait_until(failed, "a failed post", timeout=30))


def _status(url: str) -> str:
    run = subprocess.run([sys.executable, "-m", "netspy_tui", "--server", url, "--tool", "server_status"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    return run.stdout + run.stderr


def test_the_forward_urls_password_is_masked_in_health_status_and_log(spawn: Callable[..., Child]) -> None:
    upstream = free_port()  # (nothing listens: every post fails, and is logged)
    forward = f"http://bob:{PASSWORD}@127.0.0.1:{upstream}/api/events/ingest"
    shown = f"http://bob:****@127.0.0.1:{upstream}/api/events/ingest"
    child = spawn("serve", "--replay", str(DEMO), "--replay-speed", "0", "--port", str(free_port()),
                  "--forward", forward)  # fmt: skip
    url = served_url(child, "the eBPF server API")
    forwarding = _failing(url)
    assert forwarding["url"] == shown, forwarding
    assert "Basic" not in forwarding["last_error"]
    assert PASSWORD not in httpx.get(url + "/health", timeout=10).text
    status = _status(url)
    assert f"Forwarding to {shown}: " in status and PASSWORD not in status, status
    child.wait_for(f"forwarding to {shown} failed")
    child.stop()
    assert PASSWORD not in "".join(child.err + child.out)


def test_the_forward_urls_password_is_not_in_the_verbose_log_nor_echoed_as_basic_auth(
    spawn: Callable[..., Child], echoing: BackgroundServer
) -> None:
    """At --verbose the HTTP client logs each request's URL: the password was in it, in clear; and an upstream that
    echoes the credentials it got (Basic: base64 of user:password) put them in last_error (an audit's)."""
    forward = echoing.url.replace("http://", f"http://bob:{PASSWORD}@") + "/api/events/ingest"
    child = spawn("serve", "--replay", str(DEMO), "--replay-speed", "0", "--port", str(free_port()),
                  "--forward", forward, "--verbose")  # fmt: skip
    url = served_url(child, "the eBPF server API")
    forwarding = _failing(url)
    basic = base64.b64encode(f"bob:{PASSWORD}".encode()).decode()
    assert forwarding["last_error"].startswith("HTTPStatusError: HTTP 401: bad credentials Basic ****"), forwarding
    child.wait_for("HTTP Request: POST http://bob:****@127.0.0.1:")
    child.stop()
    log = "".join(child.err + child.out)
    assert PASSWORD not in log and basic not in log and basic not in str(forwarding), log


def test_credentials_in_the_url_and_a_forward_token_are_refused_at_start(cli: Cli) -> None:
    """The URL's user:password@ went as Basic auth in place of the Bearer token: every batch 401, its hint naming
    the token that was given (an audit's)."""
    run = cli("serve", "--replay", str(DEMO), "--port", str(free_port()), "--forward",
              f"http://bob:{PASSWORD}@127.0.0.1:9", "--forward-token", "FWDTOKEN1", timeout=30)  # fmt: skip
    line = assert_one_line_error(run, 2)
    assert "the URL holds a user:password@ and --forward-token is given" in line and PASSWORD not in line, line


def test_a_token_the_aggregator_echoes_is_masked_in_last_error(spawn: Callable[..., Child], echoing: BackgroundServer
                                                               ) -> None:  # fmt: skip
    child = spawn("serve", "--replay", str(DEMO), "--replay-speed", "0", "--port", str(free_port()),
                  "--forward", echoing.url + "/api/events/ingest", env={"NETSPY_FORWARD_TOKEN": TOKEN})  # fmt: skip
    url = served_url(child, "the eBPF server API")
    forwarding = _failing(url)
    error = forwarding["last_error"]
    assert error.startswith("HTTPStatusError: HTTP 401: bad credentials Bearer ****"), error
    assert "SECRET77" not in error and error.count("****") == 3, error
    assert "SECRET77" not in httpx.get(url + "/health", timeout=10).text
    status = _status(url)
    assert "HTTP 401: bad credentials Bearer ****" in status and "SECRET77" not in status, status
    child.stop()
    log = "".join(child.err + child.out)
    assert "HTTP 401: bad credentials Bearer ****" in log and "SECRET77" not in log, log


BAD_TOKENS = [
    (["serve", "--forward", "http://127.0.0.1:9/api/events/ingest", "--forward-token", "FWDSECé"], {},
     "--forward-token must be printable ASCII without spaces"),
    (["serve", "--forward", "http://127.0.0.1:9/api/events/ingest"], {"NETSPY_FORWARD_TOKEN": "FWD\x01SEC"},
     "NETSPY_FORWARD_TOKEN must be printable ASCII without spaces"),
    (["serve", "--forward", "http://127.0.0.1:9/api/events/ingest", "--forward-token", ""], {},
     "--forward-token is empty"),
    (["serve", "--aggregate"], {"NETSPY_INGEST_TOKEN": "INGé"}, "NETSPY_INGEST_TOKEN must be printable ASCII"),
    (["serve", "--aggregate", "--ingest-token", "ING SEC"], {}, "--ingest-token must be printable ASCII"),
    (["serve", "--token", "TOKé"], {}, "the token must be printable ASCII without spaces"),
]  # fmt: skip


def test_every_server_token_is_visible_ascii_or_refused_at_start(cli: Cli) -> None:
    for args, env, said in BAD_TOKENS:
        replay = [] if "--aggregate" in args else ["--replay", str(DEMO)]
        run = cli(*args, *replay, "--port", str(free_port()), env=env, timeout=30)
        line = assert_one_line_error(run, 2)
        assert said in line and "SEC" not in line and "é" not in line, (args, line)
