"""The contract validator accepts what the contract allows and rejects what it does not."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests import contract
from tests.contract import ContractViolation, validate, validate_event, validate_response
from tests.factories import connection_json, drop_json

pytestmark = pytest.mark.quiet

QT = "2026-11-24T12:00:00Z"


def _summary(**over: Any) -> dict[str, Any]:
    body = {"count": 3, "pid": 1234, "command": "curl", "duration_seconds": 60, "query_time": QT}
    body.update(over)
    return body


def _list(events: list[dict[str, Any]]) -> dict[str, Any]:
    by_pid: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_pid.setdefault(str(e["pid"]), []).append(e)
    return {"total_events": len(events), "total_pids": len(by_pid), "events_by_pid": by_pid, "query_time": QT}


def _events(events: list[dict[str, Any]], **over: Any) -> dict[str, Any]:
    body = {
        "events": events,
        "count": len(events),
        "total_count": len(events),
        "query_time": QT,
        "filters": {"limit": 100},
    }
    body.update(over)
    return body


# --- factories output is valid -----------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        connection_json(),
        connection_json(ip="2606:2800:220:1:248:1893:25c8:1946", port=8443),
        connection_json(ip="::1", port=8080, protocol="UDP"),
        connection_json(ip="", port=0),
        connection_json(return_code=-111, outcome="refused", source="ebpf", sampled=False, protocol_inferred=True),
        connection_json(k8s_node_name="worker-1", k8s_pod_name="web-0", k8s_namespace="default"),
        drop_json(),
        drop_json(reason="UNKNOWN(77)", code=77, size=0),
    ],
    ids=["v4", "v6", "v6-udp", "unix", "extensions", "k8s", "drop", "drop-unknown"],
)
def test_factory_events_are_valid(event: dict[str, Any]) -> None:
    validate_event(event)


def test_factory_events_inside_responses_are_valid() -> None:
    events = [connection_json(pid=1), connection_json(pid=1, ip="::1"), connection_json(pid=2)]
    validate_response("ConnectionListResponse", _list(events))
    validate_response("PacketDropListResponse", _list([drop_json(), drop_json(pid=9)]))
    validate_response("EventsResponse", _events(events + [drop_json()]))
    validate_response("api.EventsResponse", _events(events), spec="aggregator")


def test_v6_raw_bytes_match_the_address() -> None:
    event = connection_json(ip="::1", port=8080)
    assert event["raw_ipv6"] == [0] * 15 + [1]
    assert event["address_family"] == 10
    assert event["destination"] == "[::1]:8080"


# --- broken events are rejected ----------------------------------------------------------


def _broken(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    event = copy.deepcopy(base)
    for key, value in changes.items():
        if value is _DELETE:
            del event[key]
        else:
            event[key] = value
    return event


_DELETE = object()
_V4 = connection_json()
_DROP = drop_json()


@pytest.mark.parametrize(
    ("event", "where"),
    [
        (_broken(_V4, pid="1234"), "$.pid"),
        (_broken(_V4, destination_port=70000), "$.destination_port"),
        (_broken(_V4, time=_DELETE), "'time' is a required property"),
        (_broken(_V4, raw_ipv6=_DELETE), "'raw_ipv6' is a required property"),
        (_broken(_V4, raw_ipv6=[0] * 15), "$.raw_ipv6"),
        (_broken(_V4, raw_ipv6=[0] * 17), "$.raw_ipv6"),
        (_broken(_V4, raw_ipv6=[0] * 15 + [256]), "$.raw_ipv6[15]"),
        (_broken(_V4, raw_ipv6=[0] * 15 + ["1"]), "$.raw_ipv6[15]"),
        (_broken(_V4, id="abc"), "$.id"),
        (_broken(_V4, id="0123456789ABCDEF"), "$.id"),
        (_broken(_V4, time="2026-11-24 12:00:00"), "$.time"),
        (_broken(_V4, time="2026-11-24T12:00:00"), "$.time"),
        (_broken(_V4, time=1764000000), "$.time"),
        (_broken(_V4, address_family="2"), "$.address_family"),
        (_broken(_V4, address_family=10), "$.destination"),
        (_broken(_V4, protocol="tcp"), "$.protocol"),
        (_broken(_V4, k8s_node_name=None), "$.k8s_node_name"),
        (_broken(_V4, k8s_namespace=3), "$.k8s_namespace"),
        (_broken(_V4, outcome="exploded"), "$.outcome"),
        (_broken(_V4, type="Connection"), "$.type"),
        (_broken(_DROP, drop_reason="OOPS"), "$.drop_reason"),
        (_broken(_DROP, skb_length=-1), "$.skb_length"),
        (_broken(_DROP, packet_size_bytes=_DELETE), "'packet_size_bytes' is a required property"),
        (_broken(_DROP, timestamp=1.5), "$.timestamp"),
    ],
)
def test_broken_events_are_rejected(event: dict[str, Any], where: str) -> None:
    with pytest.raises(ContractViolation) as info:
        validate_event(event)
    assert where in str(info.value)


def test_non_object_event_is_rejected() -> None:
    with pytest.raises(ContractViolation, match="must be an object"):
        validate_event(["connection"])


# --- broken responses are rejected -------------------------------------------------------


def test_summary_wrong_type_and_missing_field() -> None:
    validate("ConnectionSummaryResponse", _summary())
    with pytest.raises(ContractViolation, match=r"\$\.count: '3' is not of type 'integer'"):
        validate("ConnectionSummaryResponse", _summary(count="3"))
    missing = _summary()
    del missing["duration_seconds"]
    with pytest.raises(ContractViolation, match="'duration_seconds' is a required property"):
        validate("PacketDropSummaryResponse", missing)
    with pytest.raises(ContractViolation, match=r"\$\.query_time"):
        validate("ConnectionSummaryResponse", _summary(query_time="Tue Nov 24 12:00:00 2026"))


def test_event_inside_response_is_checked() -> None:
    bad = _broken(_V4, raw_ipv6=[0] * 15)
    # The swagger schema alone only knows "array of anything" ...
    validate("EventsResponse", _events([bad]))
    # ... validate_response also checks each event and names where it sits.
    with pytest.raises(ContractViolation, match=r"\$\.events\[0\]\.raw_ipv6"):
        validate_response("EventsResponse", _events([bad]))
    with pytest.raises(ContractViolation, match=r"\$\.events_by_pid\.1234\[0\]\.raw_ipv6"):
        validate_response("ConnectionListResponse", _list([bad]))


def test_inconsistent_counts_are_rejected() -> None:
    events = [connection_json(pid=1), connection_json(pid=2)]
    with pytest.raises(ContractViolation, match=r"\$\.count: 5 but 2 events"):
        validate_response("EventsResponse", _events(events, count=5))
    with pytest.raises(ContractViolation, match="total_count"):
        validate_response("EventsResponse", _events(events, total_count=1))
    wrong = _list(events)
    wrong["total_pids"] = 1
    with pytest.raises(ContractViolation, match="total_pids"):
        validate_response("ConnectionListResponse", wrong)
    misfiled = _list(events)
    misfiled["events_by_pid"]["1"].append(connection_json(pid=7))
    misfiled["total_events"] = 3
    with pytest.raises(ContractViolation, match="filed under 1"):
        validate_response("ConnectionListResponse", misfiled)


def test_filters_and_programs_types() -> None:
    with pytest.raises(ContractViolation, match=r"\$\.filters\.pid"):
        validate("EventsResponse", _events([], filters={"pid": "12"}))
    programs = {"programs": [{"name": "connection", "type": "eBPF", "status": "active", "id": 1}], "total_count": 1}
    programs["query_time"] = QT
    validate("ProgramsResponse", programs)
    with pytest.raises(ContractViolation, match=r"\$\.programs\[0\]\.id"):
        validate("ProgramsResponse", {**programs, "programs": [{**programs["programs"][0], "id": "1"}]})


def test_aggregator_definitions_and_aliases() -> None:
    assert contract.resolve_name("ConnectionSummaryResponse", "server") == "internal_api.ConnectionSummaryResponse"
    assert contract.resolve_name("ConnectionSummaryResponse", "aggregator") == "api.ConnectionSummaryResponse"
    assert contract.resolve_name("AggregationStatsResponse", "aggregator") == (
        "internal_aggregator.AggregationStatsResponse"
    )
    agg = {**_summary(), "count_by_node": {"worker-1": 2, "worker-2": 1}, "total_nodes": 2}
    validate_response("AggregatedSummaryResponse", agg, spec="aggregator")
    with pytest.raises(ContractViolation, match=r"\$\.count_by_node\.worker-1"):
        validate("AggregatedSummaryResponse", {**agg, "count_by_node": {"worker-1": "2"}}, spec="aggregator")
    with pytest.raises(ContractViolation, match="total_nodes"):
        validate_response("AggregatedSummaryResponse", {**agg, "total_nodes": 5}, spec="aggregator")
    with pytest.raises(KeyError, match="no definition"):
        validate("NoSuchResponse", {})


def test_every_documented_200_has_a_definition() -> None:
    for spec in ("server", "aggregator"):
        for method, path in contract.operations(spec):
            name = contract.response_definition(method, path, spec)
            assert name in contract.definitions(spec), (spec, method, path, name)


def test_service_info_schema() -> None:
    validate("ServiceInfo", {"service": "x", "version": "1", "description": "d", "endpoints": {"GET /health": "h"}})
    with pytest.raises(ContractViolation, match="endpoints"):
        validate("ServiceInfo", {"service": "x", "version": "1", "description": "d", "endpoints": {}})
