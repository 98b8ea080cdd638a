"""A server that writes its local time with an offset (the Go server formats ``time`` in its host's zone:
``…T23:36:19.84+05:30``) is read in UTC: every time shown is labelled and sorted as UTC. An audit's: the client kept
the offset, and printed 23:36:19 "UTC" for an event of 18:06:19 UTC, beside other rows in UTC."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from tests.factories import connection_json
from tests.fake_ebpf_server import FakeEbpfServer
from tests.hardening.conftest import REPO, product_env

KOLKATA = timezone(timedelta(hours=5, minutes=30))


def test_event_times_with_an_offset_are_shown_in_utc(tmp_path: Path) -> None:
    when = (datetime.now(UTC) - timedelta(seconds=20)).replace(microsecond=250_000)
    zoned = connection_json(pid=4242, command="zoned", port=8443, time=when)
    zoned["time"] = when.astimezone(KOLKATA).isoformat(timespec="microseconds")  # e.g. …T23:36:19.250000+05:30
    assert zoned["time"].endswith("+05:30")
    with FakeEbpfServer("current", events=[zoned]) as srv:
        runs = [
            subprocess.run(
                [sys.executable, "-m", "netspy_tui", "--server", srv.url, "--tool", tool],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=REPO,
                env=product_env(tmp_path),
            )  # fmt: skip
            for tool in ("list_connections", "analyze_patterns")
        ]
    listed, patterns = runs
    assert listed.returncode == 0, listed.stderr
    assert f"{when:%H:%M:%S}.250  pid 4242" in listed.stdout, listed.stdout
    assert f"{when.astimezone(KOLKATA):%H:%M:%S}" not in listed.stdout
    assert patterns.returncode == 0, patterns.stderr
    assert f"First seen {when:%Y-%m-%d %H:%M:%S} UTC" in patterns.stdout, patterns.stdout
