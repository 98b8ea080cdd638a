"""Server URLs are checked the way the HTTP client parses them, and a plain URL without importing that client
(issue 17: the dashboard's frame is drawn before httpx loads)."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from netspy_tui import config
from netspy_tui.errors import UsageError

PLAIN = [
    "http://localhost:8080",
    "http://127.0.0.1:8080",
    "https://ebpf.example.com",
    "http://node-1.cluster.local:9000/",
    "https://example.com/netspy/api",
    "http://10.0.0.1",
    "http://1.2.3:80",  # not four numbers: a name to httpx as well
    "http://0.0.0.0:65535",
]
NOT_PLAIN = [
    "http://999.1.1.1:8080",  # four numbers that are no IPv4 address: httpx refuses it
    "http://[::1]:8080",
    "http://user:pw@host:8080",
    "http://host:8080/?x=1",
    "HTTP://host",
    "ftp://host",
    "http://",
    "http:///path",
    "http://host:port",
    "http://-host",
    "http://host./",
    "http://hóst",
    "http://host/%41",
    "http://host/a b",
    "http://localhost:99999",  # httpx keeps any port as given: the check below refuses it
    "http://localhost:0",
]


def _httpx_accepts(value: str) -> bool:
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL:
        return False
    return url.scheme in ("http", "https") and bool(url.host)


@pytest.mark.parametrize("value", PLAIN)
def test_a_plain_url_is_taken_without_httpx_and_httpx_agrees(value):
    assert config._plain_http_url(value)
    assert _httpx_accepts(value)


@pytest.mark.parametrize("value", NOT_PLAIN)
def test_anything_else_is_left_to_httpx(value):
    assert not config._plain_http_url(value)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("http://999.1.1.1:8080", "Invalid IPv4 address"),
        ("ftp://host", "it must start with http:// or https://"),
        ("http://host:port", "Invalid port"),
        ("http://127.0.0.1:99999", "port 99999 is not one: ports are 1-65535"),
        ("http://localhost:0", "port 0 is not one: ports are 1-65535"),
    ],
)
def test_a_bad_url_is_refused_in_httpx_words(value, problem, monkeypatch, tmp_path):
    monkeypatch.setenv("NETSPY_CONFIG", str(tmp_path / "none.toml"))
    with pytest.raises(UsageError) as err:
        config.load_settings({"server": value})
    assert problem in str(err.value) and "invalid setting server" in str(err.value)


def test_the_dashboard_draws_its_frame_before_httpx_loads(tmp_path):
    """Parsing a dashboard's command line, its settings (a server URL) and importing the app load no httpx."""
    code = (
        "import sys; from netspy_tui import cli; "
        "ns = cli.parse_args(['--server', 'http://127.0.0.1:8080']); settings, _ = cli._settings(ns); "
        "import netspy_tui.tui.app; print(settings.server, 'httpx' in sys.modules)"
    )
    env = {"NETSPY_CONFIG": str(tmp_path / "none.toml"), "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["http://127.0.0.1:8080", "False"]


def test_a_port_beyond_65535_is_one_line_and_exit_2_not_a_traceback(tmp_path):
    """httpx takes any port as given; connecting to it raised OverflowError inside a tool (a traceback)."""
    env = {"NETSPY_CONFIG": str(tmp_path / "none.toml"), "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}
    argv = [sys.executable, "-m", "netspy_tui", "--tool", "get_network_summary", "--server", "http://127.0.0.1:99999"]
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and out.stderr.strip().count("\n") == 0, out.stderr
    assert "port 99999 is not one: ports are 1-65535" in out.stderr
