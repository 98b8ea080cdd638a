"""A list's paging hint is in the flags of the command line and the REPL, and following it pages back."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

from netspy_tui.serve import BackgroundServer, create_app
from netspy_tui.store.sqlite import EventStore
from netspy_tui.telemetry.embedded import EmbeddedSource
from tests.factories import connection


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
