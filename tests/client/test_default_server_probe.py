"""With no --server, ``http://localhost:8080`` is used only when an eBPF server answers there: anything else that
listens on that port (a web app's own ``/health``, Spring Boot's ``{"status": "UP"}``, a file server) is not taken
for one. An audit's: a ``python3 -m http.server 8080`` with a ``health`` file kept the dashboard retrying "the eBPF
server at http://localhost:8080" for ever, and ``:status`` called it healthy, instead of the embedded collector.

Each case runs in a network namespace of its own (root), so port 8080 is the test's whatever this host runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.hardening.conftest import DEMO, REPO, product_env

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                                reason="needs root (a network namespace of its own)")  # fmt: skip

#: in a new network namespace: something on 127.0.0.1:8080 (argv[1]: "serve" a netspy-tui serve of the demo,
#: else the /health body a plain HTTP server gives), then the one-shot with no --server; its output and exit code
CHILD = textwrap.dedent(
    """
    import ctypes, http.server, subprocess, sys, threading, time, urllib.request
    if ctypes.CDLL(None, use_errno=True).unshare(0x40000000) != 0:  # CLONE_NEWNET
        sys.exit(f"unshare: errno {ctypes.get_errno()}")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    what, demo = sys.argv[1], sys.argv[2]
    server = None
    if what == "serve":
        server = subprocess.Popen([sys.executable, "-m", "netspy_tui", "serve", "--replay", demo, "--replay-speed",
                                   "0", "--port", "8080"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        class Health(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = what.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            def log_message(self, *args):
                pass
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 8080), Health)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
    for _ in range(600):  # (serve's start: until it answers)
        try:
            urllib.request.urlopen("http://127.0.0.1:8080/health", timeout=1).read()
            break
        except OSError:
            time.sleep(0.1)
    run = subprocess.run([sys.executable, "-m", "netspy_tui", "--tool", "get_network_summary"],
                         capture_output=True, text=True, timeout=120)
    if server is not None:
        server.terminate()
        server.wait(timeout=30)
    sys.stdout.write(f"{run.returncode}\\n{run.stdout}{run.stderr}")
    """
)


def one_shot_beside(what: str, tmp_path: Path) -> tuple[int, str]:
    child = subprocess.run([sys.executable, "-c", CHILD, what, str(DEMO)], capture_output=True, text=True,
                           timeout=240, cwd=REPO, env=product_env(tmp_path))  # fmt: skip
    assert child.returncode == 0, child.stderr
    code, _, said = child.stdout.partition("\n")
    return int(code), said


@pytest.mark.parametrize(
    "health",
    ['{"status": "UP"}', '{"status": "healthy"}', "OK", '["healthy"]', '{"status": 1, "component": "x"}'],
)
def test_a_health_answer_that_is_not_an_ebpf_servers_is_not_taken_for_one(health: str, tmp_path: Path) -> None:
    code, said = one_shot_beside(health, tmp_path)
    assert code != 0 and "No eBPF server answers at http://localhost:8080" in said, said
    assert "Traceback" not in said


def test_an_ebpf_server_on_the_default_port_is_used(tmp_path: Path) -> None:
    code, said = one_shot_beside("serve", tmp_path)
    # (how many: as far as serve's replay has come when the one-shot asks)
    assert code == 0 and said.startswith("All processes made ") and "outbound connection attempts" in said, said
