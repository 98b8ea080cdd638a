"""``--replay`` and ``--record`` as a user runs them: with a server, a full disk, a cut line, typos, empty files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.factories import connection_json
from tests.fake_ebpf_server import FakeEbpfServer
from tests.hardening.conftest import DEMO, Cli, assert_one_line_error


@pytest.fixture
def server():
    with FakeEbpfServer("current", events=[connection_json(pid=7, command="curl", ago=2)]) as srv:
        yield srv


def test_replay_and_record_are_never_silently_dropped_for_a_server(cli: Cli, server, tmp_path: Path) -> None:
    recording = tmp_path / "srv.jsonl"
    refused = cli.many(
        [
            ["--server", server.url, "--record", str(recording), "--tool", "get_network_summary"],
            ["--server", server.url, "--replay", str(tmp_path / "garbage.jsonl"), "--tool", "get_network_summary"],
        ]
    )
    assert "--record does not apply with --server" in assert_one_line_error(refused[0], 2)
    assert "--replay does not apply with --server" in assert_one_line_error(refused[1], 2)
    assert not recording.exists()
    # a flag beats the environment: --replay over NETSPY_SERVER, --server over NETSPY_REPLAY
    replayed = cli("--replay", str(DEMO), "--tool", "server_status", env={"NETSPY_SERVER": server.url})
    assert replayed.returncode == 0, replayed.stderr
    assert f"Source: replay of {DEMO}" in replayed.stdout
    served = cli("--server", server.url, "--tool", "server_status", env={"NETSPY_REPLAY": str(tmp_path / "none")})
    assert served.returncode == 0, served.stderr
    assert "Source: ebpf-server at" in served.stdout
    # both from the environment: neither beats the other
    both = cli("--tool", "server_status", env={"NETSPY_SERVER": server.url, "NETSPY_REPLAY": str(DEMO)})
    assert "replay (env NETSPY_REPLAY) does not apply with server (env NETSPY_SERVER)" in assert_one_line_error(both, 2)
