"""`netspy-tui repl` driven through stdin, as a user types."""

from tests.factories import connection_json
from tests.fake_ebpf_server import FakeEbpfServer


def test_repl_runs_seed_commands_and_survives_mistakes(run_cli):
    events = [connection_json(pid=99, command="curl", ago=2), connection_json(pid=98, command="nginx", ago=1)]
    with FakeEbpfServer("current", events=events) as srv:
        script = "\n".join([
            "summary --process curl --duration 120",
            "list --process nginx --max-events 5",
            "summary --pid abc",
            "frobnicate",
            "tools",
            "help",
            "analyze --process curl",
            "quit",
        ]) + "\n"
        out = run_cli("repl", "--server", srv.url, input=script)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "Source: ebpf-server at " + srv.url in text
    assert "Process 'curl' made 1 outbound connection attempt over the last 120 seconds" in text
    assert "nginx" in text and "-> 93.184.216.34:443" in text
    assert "error: --pid expects a whole number, not 'abc'" in text
    assert "error: Unknown command 'frobnicate'" in text
    assert "list_connections" in text and "Commands:" in text
    assert "Top destinations:" in text
    assert text.count("netspy> ") >= 8
    assert "Traceback" not in out.stderr


def test_repl_ends_cleanly_at_end_of_input(run_cli):
    with FakeEbpfServer("current") as srv:
        out = run_cli("repl", "--server", srv.url, input="summary\n")
    assert out.returncode == 0
    assert "made 0 outbound connection attempts" in out.stdout
