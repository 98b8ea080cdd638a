"""A list's paging hint is in the flags of the command line and the REPL, and following it pages back (through
many events of one time too, by the token it names)."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from netspy_tui.serve import BackgroundServer, create_app
from netspy_tui.store.sqlite import EventStore
from netspy_tui.telemetry.embedded import EmbeddedSource
from tests.factories import connection, connection_json
from tests.fake_ebpf_server import FakeEbpfServer


def test_the_list_hint_names_cli_flags_and_until_pages_back(run_cli):
    store = EventStore(None)
    start = datetime.now(UTC) - timedelta(seconds=30)
    store.add_events(
        [
            connection(pid=7, command="pager", ip="10.0.0.1", port=1000 + i, time=start + timedelta(seconds=i))
            for i in range(5)
        ]  # fmt: skip
    )
    source = EmbeddedSource(None, store)
    try:
        with BackgroundServer(create_app(source)) as srv:
            first = run_cli("--server", srv.url, "--tool", "list_connections", "--max-events", "2")
            assert first.returncode == 0, first.stderr
            assert (
                "(3 more, older than those shown: raise --max-events (at most 1,000), narrow with "
                "--pid/--process, or pass --until <time of the oldest event shown> to page back)" in first.stdout
            )
            oldest = (start + timedelta(seconds=3)).isoformat().replace("+00:00", "Z")
            back = run_cli("--server", srv.url, "--tool", "list_connections", "--max-events", "10", "--until", oldest)
            bad = run_cli("--server", srv.url, "--tool", "list_connections", "--until", "yesterday")
            # the REPL (and the dashboard's command bar, which runs the same commands) pages the same way
            repl = run_cli("--server", srv.url, "repl", input=f"list --max-events 2\nlist --until {oldest}\n")
    finally:
        asyncio.run(source.aclose())
    assert back.returncode == 0, back.stderr
    assert re.findall(r"10\.0\.0\.1:(\d+)", back.stdout) == ["1003", "1002", "1001", "1000"]
    assert bad.returncode == 2 and "until" in bad.stderr and "Traceback" not in bad.stderr
    assert repl.returncode == 0, repl.stderr
    assert "or pass --until <time of the oldest event shown> to page back)" in repl.stdout
    assert re.findall(r"10\.0\.0\.1:(\d+)", repl.stdout) == ["1004", "1003", "1003", "1002", "1001", "1000"]


def _sample_recording(path: Path) -> datetime:
    """A recording whose newest 8 connections share one time (a procfs sample's), then 4 older ones; that time."""
    sampled = datetime(2026, 11, 24, 12, 0, 0, 500_000, tzinfo=UTC)
    events = [connection_json(pid=100 + n, ip="10.0.0.1", port=1000 + n, time=sampled, timestamp=7) for n in range(8)]
    events += [connection_json(pid=200 + n, ip="10.0.1.1", port=2000 + n, time=sampled - timedelta(seconds=n + 1))
               for n in range(4)]  # fmt: skip
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return sampled


_PORT = re.compile(r"10\.0\.[01]\.1:(\d+)")
_HINT = re.compile(r"or pass (--\w+) (<time of the oldest event shown>|\S+) to page back\)$")
_SHOWN = re.compile(r"^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d\.\d{3})  pid", re.MULTILINE)


def test_following_the_hint_pages_through_a_sample_of_one_time(run_cli, tmp_path):
    """More connections of one time than --max-events: each page was the same three before, however paged."""
    recording = tmp_path / "sample.jsonl"
    sampled = _sample_recording(recording)
    replay = ("--replay", str(recording), "--replay-speed", "0", "--replay-times", "recorded")
    expected = [str(p) for p in [*range(1000, 1008), *range(2000, 2004)]]
    tokens: list[str] = []
    for start in ((), ("--until", sampled.isoformat().replace("+00:00", "Z"))):
        ports: list[str] = []
        extra: tuple[str, ...] = start
        for _ in range(6):
            out = run_cli(*replay, "--tool", "list_connections", "--max-events", "3", *extra)
            assert out.returncode == 0, out.stderr
            ports += _PORT.findall(out.stdout)
            hint = _HINT.search(out.stdout.strip())
            if hint is None:
                break
            value = hint.group(2)
            if value.startswith("<"):  # (the time of the oldest shown, as a user would write it)
                value = "T".join(_SHOWN.findall(out.stdout)[-1]) + "Z"
            else:
                tokens.append(value)
            extra = (*start, hint.group(1), value)
        assert ports == expected, (start, ports)  # every connection, each once, newest first
    bad = run_cli(*replay, "--tool", "list_connections", "--before", "yesterday")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert "--before must be the `before` an earlier list returned" in bad.stderr
    # the REPL (and the dashboard's command bar) takes the same token and words its hint in the same flags
    repl = run_cli(*replay, "repl", input=f"list --max-events 3\nlist --max-events 3 --before {tokens[0]}\n")
    assert repl.returncode == 0, repl.stderr
    assert _PORT.findall(repl.stdout) == expected[:6]
    assert f"or pass --before {tokens[0]} to page back)" in repl.stdout


def test_a_remote_server_s_hint_does_not_promise_until_inside_one_time(run_cli):
    """A remote eBPF server numbers no events and its until is inclusive (the contract's): from a page all of one
    time, until lists the same page again. The hint says so instead of offering it; --before is refused."""
    sampled = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    served = [connection_json(pid=100 + n, ip="10.0.0.1", port=1000 + n, time=sampled, timestamp=7) for n in range(8)]
    served.append(connection_json(pid=200, ip="10.0.1.1", port=2000, time=sampled - timedelta(seconds=1)))
    with FakeEbpfServer("current", events=served) as srv:
        first = run_cli("--server", srv.url, "--tool", "list_connections", "--max-events", "3")
        token = run_cli("--server", srv.url, "--tool", "list_connections", "--before", "1:2:3")
    assert first.returncode == 0, first.stderr
    assert (
        "(6 more, older than those shown or as old: raise --max-events (at most 1,000) or narrow with "
        "--pid/--process; every event shown has the same time, so --until <that time> would list them again "
        "(this list has no page token to go on inside one time))" in first.stdout
    )
    assert "--before" not in first.stdout
    assert token.returncode == 1 and len(token.stderr.strip().splitlines()) == 1
    assert "gives no page tokens: page back with until." in token.stderr
