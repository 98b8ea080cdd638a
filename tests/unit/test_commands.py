import pytest
from hypothesis import given
from hypothesis import strategies as st

from netspy_tui.commands import COMMAND_NAMES, complete_word, help_text, parse_command
from netspy_tui.errors import UsageError

pytestmark = pytest.mark.quiet


@pytest.mark.parametrize(
    ("line", "tool", "args"),
    [
        ("summary --pid 1234 --duration 120", "get_network_summary", {"pid": 1234, "duration": 120}),
        ("list --process curl --max-events 20", "list_connections", {"process_name": "curl", "max_events": 20}),
        ("analyze --process nginx", "analyze_patterns", {"process_name": "nginx"}),
        ('insights "curl made 5 connections"', "ai_insights", {"summary_text": "curl made 5 connections"}),
        ("ask --pid 7 why so many refused", "contextual_analysis", {"pid": 7, "query": "why so many refused"}),
        ("drops --max-events=5", "list_packet_drops", {"max_events": 5}),
        ("top --duration 300", "list_processes", {"duration": 300}),
        ("status", "server_status", {}),
        ("LIST", "list_connections", {}),
        ("traffic --process nginx --limit 5", "get_traffic", {"process_name": "nginx", "limit": 5}),
        ("latency --pid 42 --duration 300", "get_connect_latency", {"pid": 42, "duration": 300}),
        ("list --direction inbound", "list_connections", {"direction": "inbound"}),
        ("list --process nginx --direction=all", "list_connections", {"process_name": "nginx", "direction": "all"}),
        ("list --direction outbound --max-events 3", "list_connections", {"direction": "outbound", "max_events": 3}),
    ],
)
def test_seed_commands_map_to_tools(line, tool, args):
    cmd = parse_command(line)
    assert (cmd.action, cmd.tool, cmd.arguments) == ("tool", tool, args)


@pytest.mark.parametrize(("line", "action"), [("help", "help"), ("tools", "tools"), ("quit", "quit"), ("exit", "quit")])
def test_builtin_commands(line, action):
    assert parse_command(line).action == action


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("frobnicate", "Unknown command 'frobnicate'"),
        ("summary --pid abc", "--pid expects a whole number"),
        ("summary --pid -3", "--pid must be a positive number"),
        ("summary --pid 0", "--pid must be a positive number"),
        ("summary --pid", "--pid needs a value"),
        ("summary --max-events 3", "has no option --max-events"),
        ("list curl", "Unexpected argument 'curl'"),
        ("list --direction sideways", "--direction must be one of outbound, inbound, all, not 'sideways'"),
        ("list --direction Inbound", "--direction must be one of outbound, inbound, all"),
        ("list --direction", "--direction needs a value"),
        ("drops --direction inbound", "'drops' has no option --direction"),
        ('insights "unclosed', "Close the quotes"),
        ("insights", "needs text"),
        ("help me", "takes no arguments"),
        ("", "Empty command"),
    ],
)
def test_mistakes_are_one_line_usage_errors(line, fragment):
    with pytest.raises(UsageError) as info:
        parse_command(line)
    message = str(info.value)
    assert fragment in message and "\n" not in message


def test_help_lists_every_command():
    text = help_text()
    assert all(name in text for name in COMMAND_NAMES)


@given(st.text(max_size=200))
def test_parser_never_raises_anything_but_usage_errors(line):
    try:
        parse_command(line)
    except UsageError as exc:
        assert "\n" not in str(exc)


def test_complete_word_offers_commands_then_unused_flags():
    assert complete_word("d") == ["drops", "dropsummary"]
    assert complete_word("list --p") == ["--pid", "--process"]
    assert complete_word("list --pid 3 --p") == ["--process"]  # a flag given already is not offered again
    assert complete_word("status --") == [] and complete_word("frob --p") == [] and complete_word("list cu") == []
    assert complete_word("list --d") == ["--direction"] and complete_word("drops --d") == []
    assert complete_word("list --direction ") == ["outbound", "inbound", "all"]  # its values, then
    assert complete_word("list --direction in") == ["inbound"] and complete_word("drops --direction in") == []


def test_the_help_lists_each_usage_and_stays_narrow():
    from netspy_tui.commands import COMMANDS

    text = help_text()
    lines = text.splitlines()[1:]
    assert "  list [--pid N] [--process NAME] [--max-events N] [--since TIME]   list recent" in lines[1]
    assert lines[2] == "       [--until TIME] [--before TOKEN]"  # a long usage: below, indented
    assert lines[3] == "       [--direction outbound|inbound|all]"
    assert all(line in text for spec in COMMANDS for line in spec.usage.splitlines())
    columns = {line.index(spec.help) for spec in COMMANDS for line in lines if line.endswith("  " + spec.help)}
    assert len(columns) == 1 and columns.pop() < 70  # one column, not pushed right by list's long usage
    list_spec = next(spec for spec in COMMANDS if spec.name == "list")
    assert "\n" not in list_spec.usage_line and list_spec.usage_line.endswith(
        "[--since TIME] [--until TIME] [--before TOKEN] [--direction outbound|inbound|all]"
    )


async def test_the_command_runner_is_what_the_repl_and_the_command_bar_share() -> None:
    from types import SimpleNamespace

    from netspy_tui.commands import CommandResult, CommandRunner

    class Gateway:
        async def call(self, tool, arguments):  # type: ignore[no-untyped-def]
            if tool == "server_status":
                raise RuntimeError("boom\nsecond line")
            return SimpleNamespace(text=f"{tool} {arguments}", is_error=False)

        async def list_tools(self):  # type: ignore[no-untyped-def]
            return [SimpleNamespace(name="list_connections", description="List.\nMore.")]

    runner = CommandRunner(lambda: Gateway())  # type: ignore[arg-type, return-value]
    bad = runner.parse("frobnicate")
    assert isinstance(bad, CommandResult) and bad.is_error and "Unknown command 'frobnicate'" in bad.text
    parsed = runner.parse("summary --pid 7")
    assert not isinstance(parsed, CommandResult)
    assert await runner.run(parsed) == CommandResult("get_network_summary {'pid': 7}")
    status = runner.parse("status")
    assert not isinstance(status, CommandResult)
    assert await runner.run(status) == CommandResult("RuntimeError: boom", is_error=True)
    tools = runner.parse("tools")
    assert not isinstance(tools, CommandResult)
    assert (await runner.run(tools)).text.startswith("list_connections")
    help_ = runner.parse("help")
    assert not isinstance(help_, CommandResult)
    assert (await runner.run(help_)).text == help_text()
