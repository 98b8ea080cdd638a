import pytest
from pydantic import ValidationError

from netspy_tui.models import (
    ConnectionEvent,
    EventsResponse,
    ListResponse,
    PacketDropEvent,
    describe_validation_error,
    errno_name,
    outcome_for_return_code,
    parse_event,
    parse_events,
    parse_time,
)
from tests.factories import connection_json, drop_json

pytestmark = pytest.mark.quiet


def test_connection_event_parses_contract_json_v4_and_v6():
    e = parse_event(connection_json(ip="10.1.2.3", port=5432))
    assert isinstance(e, ConnectionEvent)
    assert e.destination == "10.1.2.3:5432" and e.address_family == 2
    v6 = parse_event(connection_json(ip="::1", port=8080))
    assert v6.destination == "[::1]:8080" and v6.raw_ipv6[-1] == 1 and len(v6.raw_ipv6) == 16


def test_unknown_fields_are_kept_and_k8s_fields_parse():
    e = parse_event(connection_json(k8s_pod_name="web-1", k8s_namespace="prod", brand_new_field=7))
    assert e.k8s_pod_name == "web-1"
    assert e.model_extra == {"brand_new_field": 7}


def test_wrong_type_names_the_field():
    bad = connection_json()
    bad["pid"] = "not-a-pid"
    with pytest.raises(ValidationError) as info:
        parse_event(bad)
    assert describe_validation_error(info.value).startswith("connection.pid")


def test_unknown_event_types_are_skipped_not_fatal():
    events, skipped = parse_events([connection_json(), {"type": "dns_query", "pid": 1}, drop_json()])
    assert [type(e) for e in events] == [ConnectionEvent, PacketDropEvent]
    assert skipped == 1


def test_events_by_pid_keyed_by_pid_strings():
    resp = ListResponse.model_validate(
        {
            "total_events": 2,
            "total_pids": 1,
            "events_by_pid": {"1234": [connection_json(), connection_json()]},
            "query_time": "2026-11-24T12:00:00Z",
        }
    )
    assert len(resp.events_by_pid["1234"]) == 2


def test_events_response_with_both_kinds():
    resp = EventsResponse.model_validate({"events": [connection_json(), drop_json()], "count": 2, "total_count": 9})
    assert resp.total_count == 9 and resp.events[1].type == "packet_drop"


@pytest.mark.parametrize(
    ("rc", "outcome", "name"),
    [
        (0, "ok", "0"),
        (-111, "refused", "ECONNREFUSED"),
        (-115, "in_progress", "EINPROGRESS"),
        (-101, "unreachable", "ENETUNREACH"),
        (-110, "timeout", "ETIMEDOUT"),
        (-9999, "failed", "-9999"),
    ],
)
def test_outcomes_from_return_codes(rc, outcome, name):
    assert outcome_for_return_code(rc) == outcome
    assert errno_name(rc) == name


def test_effective_outcome_is_unknown_for_unreported_zero():
    # The original server always sends 0, which proves nothing.
    assert parse_event(connection_json(return_code=0)).effective_outcome == "unknown"
    assert parse_event(connection_json(return_code=0, outcome="ok")).effective_outcome == "ok"
    assert parse_event(connection_json(return_code=-111)).effective_outcome == "refused"


def test_parse_time_accepts_rfc3339_and_rejects_garbage():
    assert parse_time("2026-11-24T12:00:00Z").tzinfo is not None
    assert parse_time("2026-11-24T12:00:00").utcoffset().total_seconds() == 0
    with pytest.raises(ValueError, match="RFC3339"):
        parse_time("yesterday")
