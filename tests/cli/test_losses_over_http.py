"""One-shot ``--tool`` commands over ``--server`` of a running ``serve`` whose store shed raw events: the results
say what was shed, as they do over this host's own store (README: "Losses are counted and shown")."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from netspy_tui.collector.base import Batch
from netspy_tui.models import format_time
from netspy_tui.serve import BackgroundServer, create_app
from netspy_tui.store import rollups as R
from netspy_tui.store.sqlite import EventStore
from netspy_tui.telemetry.embedded import EmbeddedSource
from tests.factories import connection
from tests.fake_ebpf_server import FakeEbpfServer


def shed_source() -> EmbeddedSource:
    """curl: 2 connects kept and 40 more of the same second counted but shed; zzprobe: 4 connects counted, none
    kept (a storm's shedding or retention took their raw rows)."""
    store = EventStore(None)
    at = datetime.now(UTC) - timedelta(seconds=5)
    kept = [connection(pid=7, command="curl", ip="93.184.216.34", port=443, time=at) for _ in range(2)]
    shed = [connection(pid=7, command="curl", ip="93.184.216.34", port=443, time=at) for _ in range(40)]
    probes = [connection(pid=9, command="zzprobe", ip="10.0.0.5", port=80, time=at - timedelta(seconds=20))
              for _ in range(4)]  # fmt: skip
    store.add_events(kept)
    store.add_rows([], R.rows_from_events(shed + probes))  # counted, not kept
    store.write([Batch(lost={"shed": 44}, second=int(at.timestamp()))])
    return EmbeddedSource(None, store)


@pytest.fixture
def server_url() -> Iterator[str]:
    source = shed_source()
    try:
        with BackgroundServer(create_app(source)) as srv:
            yield srv.url
    finally:
        asyncio.run(source.aclose())


def test_a_list_over_http_says_how_many_events_of_its_seconds_were_shed(run_cli, server_url):
    out = run_cli("--server", server_url, "--tool", "list_connections", "--max-events", "2")
    assert out.returncode == 0, out.stderr
    assert "2 of 2 connection events" in out.stdout
    assert "Note: 40 more events between" in out.stdout and "were counted but not kept" in out.stdout
    data = json.loads(run_cli("--server", server_url, "--tool", "list_connections", "--json").stdout)
    assert data["data"]["not_kept"] == 40


@pytest.mark.parametrize("tool", ["get_network_summary", "analyze_patterns", "list_processes"])
def test_figures_over_http_carry_the_windows_losses(run_cli, server_url, tool):
    text = run_cli("--server", server_url, "--tool", tool, "--duration", "600")
    assert text.returncode == 0, text.stderr
    assert "Note: 44 raw events shed under load in this window; counts are exact." in text.stdout
    assert "44 raw events shed under load in the last 600 s; counts are exact" in text.stderr  # (one line)
    assert len(text.stderr.splitlines()) == 1
    data = json.loads(run_cli("--server", server_url, "--tool", tool, "--duration", "600", "--json").stdout)["data"]
    assert data["losses"] == {"shed": 44} and data["counts_exact"] is True


def test_over_a_server_without_api_losses_its_last_minute_is_said_not_taken_for_the_window(run_cli):
    """Another server (no ``/api/losses``): what its ``/health`` reports for the last minute is said on stderr as
    the last minute's; a result over another window does not print it as that window's ("in this window")."""
    health = {"status": "degraded", "component": "ebpf-server", "uptime": "1m", "version": "1.0.0",
              "recent_losses": {"shed": 82254}}  # fmt: skip
    with FakeEbpfServer("current", health=health) as srv:
        out = run_cli("--server", srv.url, "--tool", "get_network_summary", "--duration", "5")
        data = json.loads(run_cli("--server", srv.url, "--tool", "get_network_summary", "--json").stdout)["data"]
    assert out.returncode == 0, out.stderr
    assert "82,254 raw events shed under load in the last minute; counts are exact" in out.stderr
    assert "in this window" not in out.stdout and "82,254" not in out.stdout
    assert data["losses"] == {}


def test_an_empty_list_says_the_counts_have_events_it_no_longer_keeps(run_cli, server_url):
    """zzprobe's 4 connects were counted but none of their events is left: the list says so, not "none found"."""
    since = format_time(datetime.now(UTC) - timedelta(minutes=5))
    out = run_cli("--server", server_url, "--tool", "list_connections", "--process", "zzprobe", "--since", since)
    assert out.returncode == 0, out.stderr
    assert "No connection events found for Process 'zzprobe'." in out.stdout
    assert "Note: 4 connection attempts counted between " in out.stdout
    assert "but their events were not kept (shed under load, or removed by the store's row limit or retention); " \
           "summary and analyze have the exact counts." in out.stdout  # fmt: skip
    later = format_time(datetime.now(UTC) - timedelta(seconds=15))  # (after zzprobe's connects: none counted since)
    none = run_cli("--server", server_url, "--tool", "list_connections", "--process", "zzprobe", "--since", later)
    assert none.stdout.strip() == "No connection events found for Process 'zzprobe'."


def test_without_since_the_empty_lists_note_names_the_week_it_counted_by_dates(run_cli, server_url):
    """No --since: the longest window a tool counts (7 days), named with its dates, not two equal times of day."""
    out = run_cli("--server", server_url, "--tool", "list_connections", "--process", "zzprobe")
    assert out.returncode == 0, out.stderr
    found = re.search(r"counted between (\S+ \S+) and (\S+ \S+) UTC", out.stdout)
    assert found, out.stdout
    start, end = (datetime.strptime(x, "%Y-%m-%d %H:%M").replace(tzinfo=UTC) for x in found.groups())
    assert end - start == timedelta(days=7) and abs(datetime.now(UTC) - end) < timedelta(minutes=2)


def test_connect_latency_over_http_says_what_shed_events_mean_for_it(run_cli, server_url):
    """Latency is measured on the raw events kept: a shed one is a connect missing from its figures, so its note
    does not call the counts exact (the other tools' counts are kept apart from the raw events; latency's are not),
    and agrees with its ``counts_exact``."""
    out = run_cli("--server", server_url, "--tool", "get_connect_latency", "--duration", "600")
    assert out.returncode == 0, out.stderr
    assert "Note: 44 raw events shed under load in this window; latency is measured on the raw events kept, so " \
           "these figures leave those connects out: the counts are short and the percentiles are of the rest." \
           in out.stdout  # fmt: skip
    assert "counts are exact" not in out.stdout
    data = json.loads(run_cli("--server", server_url, "--tool", "get_connect_latency", "--duration", "600",
                              "--json").stdout)["data"]  # fmt: skip
    assert data["losses"] == {"shed": 44} and data["counts_exact"] is False
