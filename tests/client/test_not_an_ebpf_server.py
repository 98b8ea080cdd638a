"""``--server`` pointed at a web server that is not an eBPF server, or at one that redirects: the one line says so
and what to do. An audit's: a ``python3 -m http.server`` gave "answered 501 on /api/list-connections: <!DOCTYPE
HTML>. Check the server's log.", and a redirect (http -> https) "sent a body that is not JSON"."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.hardening.conftest import REPO, product_env


class _Handler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        mode = self.server.mode  # type: ignore[attr-defined]
        if mode == "redirect":
            self.send_response(301)
            self.send_header("Location", f"https://collector.example:8443{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        # what python3 -m http.server answers a path it does not have (404) or a POST (501): a web page
        status = 404 if self.command == "GET" else 501
        body = b"<!DOCTYPE HTML>\n<html><head><title>Error response</title></head><body>nope</body></html>\n"
        self.send_response(status)
        self.send_header("Content-Type", "text/html;charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize(
    ("mode", "said", "hint"),
    [
        (
            "web",
            "is not an eBPF server: it answered 501 on /api/list-connections with a web page",
            "Check that --server (or NETSPY_SERVER) points at",
        ),
        ("redirect", "redirects /api/", "to https://collector.example:8443/api/"),
    ],
)
def test_a_server_that_is_not_an_ebpf_server_or_redirects_is_said_so(
    web_server: ThreadingHTTPServer, tmp_path: Path, mode: str, said: str, hint: str
) -> None:
    web_server.mode = mode  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{web_server.server_address[1]}"
    run = subprocess.run([sys.executable, "-m", "netspy_tui", "--server", url, "--tool", "list_connections"],
                         capture_output=True, text=True, timeout=60, cwd=REPO, env=product_env(tmp_path))  # fmt: skip
    assert run.returncode == 1 and run.stdout == "", run
    assert len(run.stderr.splitlines()) == 1 and "Traceback" not in run.stderr, run.stderr
    assert said in run.stderr and hint in run.stderr, run.stderr
    assert "not JSON" not in run.stderr and "<!DOCTYPE" not in run.stderr
