"""Property-based tests (hypothesis) of the three parsers that read untrusted input.

* the event parser (``models.parse_event`` / ``parse_events``): garbage raises only ValidationError or
  TypeError; valid events survive ``serve``'s ``event_json`` -> JSON bytes -> ``parse_event``;
* the command-bar parser: extends tests/unit/test_commands.py (which checks that any text raises at most
  a one-line UsageError) with round trips of well-formed commands, quoted names included;
* the replay reader (``collector.replay.iter_recording`` / ``check_recording``): any bytes give events
  or the documented one-line ReplayFileError, never anything else.
"""

from __future__ import annotations

import json
import shlex
import string
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from netspy_tui.collector.replay import ReplayFileError, check_recording, iter_recording
from netspy_tui.commands import parse_command
from netspy_tui.errors import UsageError
from netspy_tui.models import ConnectionEvent, PacketDropEvent, contract_drop, parse_event, parse_events
from netspy_tui.serve.app import dumps, event_json
from tests.factories import connection_json, drop_json

pytestmark = pytest.mark.quiet

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- the event parser ---------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
EVENT_KEYS = [
    "type",
    "time",
    "pid",
    "command",
    "timestamp",
    "id",
    "destination",
    "destination_port",
    "return_code",
    "raw_ipv6",
    "drop_reason",
    "kernel_drop_reason",
    "drop_reason_code",
    "outcome",
    "protocol",
]
event_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["connection", "packet_drop", "other", 1, None])},
    optional={k: json_values for k in EVENT_KEYS[1:]},
)


@FAST
@given(st.one_of(json_values, event_like, st.lists(event_like | json_values, max_size=5)))
def test_parse_event_raises_only_validation_error(data: Any) -> None:
    try:
        event = parse_event(data)
    except ValidationError:
        return
    assert isinstance(event, ConnectionEvent | PacketDropEvent)


@FAST
@given(st.one_of(json_values, st.lists(event_like | json_values, max_size=6)))
def test_parse_events_raises_only_validation_or_type_error(items: Any) -> None:
    try:
        events, skipped = parse_events(items)
    except (ValidationError, TypeError):
        return
    assert isinstance(items, list) and len(events) + skipped == len(items)


printable = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)  # JSON cannot carry lone surrogates
zones = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))])
times = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=zones)
ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
common = {
    "id": st.text(string.hexdigits, max_size=16),
    "pid": ints,
    "command": printable,
    "timestamp": ints,
    "time": times,
    "source": st.none() | printable,
    "k8s_node_name": st.none() | printable,
}
connections = st.builds(
    ConnectionEvent,
    **common,
    destination_ip=printable,
    destination_port=ints,
    destination=printable,
    address_family=ints,
    protocol=printable,
    socket_type=printable,
    return_code=ints,
    raw_ipv4=ints,
    raw_ipv6=st.lists(st.integers(0, 255), max_size=16),
    raw_protocol=ints,
    raw_socktype=ints,
    outcome=st.none() | printable,
    protocol_inferred=st.none() | st.booleans(),
    sampled=st.none() | st.booleans(),
)
drops = st.builds(
    PacketDropEvent,
    **common,
    drop_reason_code=ints,
    drop_reason=printable,
    skb_length=ints,
    packet_size_bytes=ints,
    protocol=st.none() | printable,
    destination=st.none() | printable,
)


@FAST
@given(connections | drops)
@example(ConnectionEvent(time=datetime(1, 1, 1, tzinfo=UTC)))  # Go's zero time: four-digit year on the wire
def test_served_events_parse_back_to_the_same_event(event: ConnectionEvent | PacketDropEvent) -> None:
    wire = json.loads(dumps(event_json(event)))
    back = parse_event(wire)
    assert type(back) is type(event)
    expected = event.model_dump()
    got = back.model_dump()
    assert got["time"] == event.time  # the same instant, now in UTC
    assert got["id"] == (event.id or wire["id"]) and len(got["id"]) > 0  # a missing id becomes a stable one
    if isinstance(event, ConnectionEvent) and len(event.raw_ipv6) != 16:
        assert len(got["raw_ipv6"]) == 16  # derived from destination_ip so the object stays valid
        expected["raw_ipv6"] = got["raw_ipv6"]
    if isinstance(event, PacketDropEvent) and not event.drop_reason:
        # an empty reason goes out as the contract category and comes back as it
        expected["drop_reason"] = contract_drop("", event.protocol, event.drop_reason_code)[0]
        got.pop("kernel_drop_reason", None)
    for key in ("time", "id"):
        expected.pop(key), got.pop(key)
    assert got == expected


# --- the command-bar parser -------------------------------------------------------------------------

positive = st.integers(min_value=1, max_value=10**12)
#: within the tools' bounds (a command beyond them is refused as it is parsed, in the flags typed: see below)
pids = st.integers(min_value=1, max_value=4_194_304)
counts = st.integers(min_value=1, max_value=1000)
names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=30)


@FAST
@given(pid=st.integers(min_value=4_194_305, max_value=10**12), n=st.integers(min_value=1001, max_value=10**12))
def test_list_commands_beyond_the_tools_bounds_are_one_line_in_flags(pid: int, n: int) -> None:
    with pytest.raises(UsageError) as refused:
        parse_command(f"list --pid {pid} --max-events {n}")
    said = str(refused.value)
    assert "\n" not in said and "--pid must be <= 4194304" in said and "--max-events must be <= 1000" in said


@FAST
@given(pid=st.none() | pids, process=st.none() | names, n=st.none() | counts, equals=st.booleans())
def test_well_formed_list_commands_round_trip(
    pid: int | None, process: str | None, n: int | None, equals: bool
) -> None:
    words = ["list"]
    for flag, value in (("--pid", pid), ("--process", process), ("--max-events", n)):
        if value is not None:
            quoted = shlex.quote(str(value))
            words += [f"{flag}={quoted}"] if equals else [flag, quoted]
    cmd = parse_command(" ".join(words))
    expected = {k: v for k, v in {"pid": pid, "process_name": process, "max_events": n}.items() if v is not None}
    assert (cmd.action, cmd.tool, cmd.arguments) == ("tool", "list_connections", expected)


@FAST
@given(text=names, pid=st.none() | pids)
def test_free_text_of_ask_and_insights_is_kept(text: str, pid: int | None) -> None:
    words = shlex.split(shlex.quote(text))
    line = "ask " + (f"--pid {pid} " if pid else "") + shlex.quote(text)
    if words and words[0].startswith("--"):
        return  # text that looks like a flag is read as one: quoting cannot change that
    try:
        cmd = parse_command(line)
    except UsageError as exc:  # e.g. text that is only whitespace
        assert "\n" not in str(exc) and not text.strip()
        return
    assert cmd.arguments["query"] == text and cmd.arguments.get("pid") == pid


@FAST
@given(
    st.sampled_from(["summary", "list", "drops", "top", "ask", "insights", "status"]),
    st.lists(
        st.text(max_size=12)
        | st.sampled_from(
            [
                "--pid",
                "--process",
                "--duration",
                "--max-events",
                "--limit",
                "--since",
                "=",
                "--pid=",
                "''",
                '"',
                "-1",
                "0",
                "1e3",
            ]
        ),
        max_size=6,
    ),
)
def test_any_arguments_to_a_real_command_give_a_tool_call_or_one_line(name: str, words: list[str]) -> None:
    try:
        cmd = parse_command(" ".join([name, *words]))
    except UsageError as exc:
        assert "\n" not in str(exc)
        return
    assert cmd.action == "tool" and all(v > 0 for v in cmd.arguments.values() if isinstance(v, int))


# --- the replay reader -------------------------------------------------------------------------------

good_lines = st.sampled_from([json.dumps(connection_json()), json.dumps(drop_json()), "", "   "])
junk_lines = st.binary(max_size=60).map(lambda b: b.replace(b"\n", b""))
lines = st.lists(
    good_lines.map(str.encode) | junk_lines | json_values.map(lambda v: json.dumps(v).encode()), max_size=6
)


def _read(data: bytes) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rec.jsonl"
        path.write_bytes(data)
        try:
            summary = check_recording(path)
        except ReplayFileError as exc:
            message = str(exc)
            assert "\n" not in message and message.startswith(f"{path}:")
            assert len(message) < 600
            return -1
        assert summary.events == sum(1 for _ in iter_recording(path))
        return summary.events


@FAST
@given(st.binary(max_size=300))
def test_replay_reader_on_arbitrary_bytes(data: bytes) -> None:
    _read(data)


@FAST
@given(lines, st.sampled_from([b"\n", b"\r\n"]), st.booleans())
def test_replay_reader_on_mixed_good_and_bad_lines(parts: list[bytes], newline: bytes, final_newline: bool) -> None:
    data = newline.join(parts) + (newline if final_newline else b"")
    count = _read(data)
    good = [p for p in parts if p.strip()]
    if count >= 0:  # (a last line without its line end that is not JSON was cut as it was written: skipped)
        cut = not final_newline and bool(parts) and bool(parts[-1].strip())
        assert count == len(good) or (cut and count == len(good) - 1)


def test_replay_reader_edge_files(tmp_path: Path) -> None:
    event = json.dumps(connection_json()).encode()
    cases = {
        "empty": (b"", 0),
        "blank lines": (b"\n\n  \n", 0),
        "bom": (b"\xef\xbb\xbf" + event + b"\n", 1),  # a UTF-8 byte-order mark is accepted
        "crlf": (event + b"\r\n" + event + b"\r\n", 2),
        "nul": (event + b"\n\x00\x00\x00\n", -1),
        "huge junk line": (b"x" * 20_000_000 + b"\n", -1),
        "huge valid line": (json.dumps({**connection_json(), "note": "n" * 5_000_000}).encode() + b"\n", 1),
        "truncated tail": (event + b"\n" + event[: len(event) // 2], 1),  # a cut last line is skipped
        "cut in a character": (event + b"\n" + '{"command": "caf\u00e9'.encode()[:-1], 1),
        "truncated middle": (event + b"\n" + event[: len(event) // 2] + b"\n" + event, -1),
    }
    for name, (data, expected) in cases.items():
        assert _read(data) == expected, name


def test_replay_reader_on_deeply_nested_json(tmp_path: Path) -> None:
    assert _read(b"[" * 100_000 + b"\n") == -1


def test_replay_reader_on_a_5000_digit_number(tmp_path: Path) -> None:
    line = b'{"type": "connection", "time": "2026-01-01T00:00:00Z", "pid": ' + b"9" * 5000 + b"}\n"
    assert _read(line) == -1
