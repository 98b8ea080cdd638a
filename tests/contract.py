"""Validate JSON against the eBPF server contract (shared/contracts/ebpf-server).

The two Swagger 2.0 files are turned into JSON Schema (draft 7) with their ``#/definitions/...``
references intact, so ``jsonschema`` resolves them against the same document. On top of the
published specs this module adds what the contract README states and the specs leave out:

- :data:`EVENT_SCHEMAS`: a hand-written schema per event type (the specs say only "object");
- :data:`REQUIRED`: the fields the server always sends (Go struct fields without ``omitempty``);
  the Swagger files mark nothing required, so without this a missing field would pass;
- every ``query_time`` must be RFC3339;
- :func:`validate_response` also checks each event inside ``events`` / ``events_by_pid`` and the
  arithmetic the server guarantees (``count == len(events)``, ``total_events`` adds up, ...).

Usage::

    validate("ConnectionSummaryResponse", payload)                 # short alias, server spec
    validate("api.ConnectionSummaryResponse", payload, "aggregator")
    validate_response("EventsResponse", payload)                   # + every event
    validate_event(event_dict)

Every failure raises :class:`ContractViolation` (an AssertionError) naming the JSON path.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, Literal

import jsonschema
from jsonschema import Draft7Validator

from netspy_tui.models import OUTCOMES

Spec = Literal["server", "aggregator"]

SPEC_FILES: dict[str, str] = {"server": "server.swagger.json", "aggregator": "aggregator.swagger.json"}

#: RFC3339 date-time: seconds required, optional fraction (up to nanoseconds), zone required.
RFC3339_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$"

#: Where definition names without a package prefix are looked up, first match wins.
_ALIAS_PREFERENCE: dict[str, tuple[str, ...]] = {
    "server": ("internal_api.", "aggregator."),
    "aggregator": ("api.", "internal_aggregator."),
}

#: Fields the server always sends, by short definition name (both specs). The Go structs and
#: maps behind these responses have no ``omitempty`` on them (see the contract README).
REQUIRED: dict[str, tuple[str, ...]] = {
    "HealthResponse": ("status",),
    "ConnectionSummaryResponse": ("count", "pid", "command", "duration_seconds", "query_time"),
    "PacketDropSummaryResponse": ("count", "pid", "command", "duration_seconds", "query_time"),
    "ConnectionListResponse": ("total_events", "total_pids", "events_by_pid", "query_time"),
    "PacketDropListResponse": ("total_events", "total_pids", "events_by_pid", "query_time"),
    "EventsResponse": ("events", "count", "total_count", "query_time", "filters"),
    "ProgramsResponse": ("programs", "total_count", "query_time"),
    "ProgramInfo": ("name", "type", "status"),
    "AggregatedSummaryResponse": ("count", "count_by_node", "duration_seconds", "total_nodes", "query_time"),
    "AggregatedListResponse": (
        "total_events",
        "total_pids",
        "total_nodes",
        "events_by_pid",
        "events_by_node",
        "query_time",
    ),
    "AggregationStatsResponse": ("total_events", "events_by_type", "events_by_node", "connected_agents"),
    "IngestResponse": ("events_processed", "success"),
}

#: Responses the specs do not describe at all, written from the contract README.
EXTRA_DEFINITIONS: dict[str, dict[str, Any]] = {
    # ``GET /``: a JSON service description listing the endpoints.
    "netspy.ServiceInfo": {
        "type": "object",
        "required": ["service", "version", "description", "endpoints"],
        "properties": {
            "service": {"type": "string", "minLength": 1},
            "version": {"type": "string"},
            "description": {"type": "string"},
            "endpoints": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": {"type": "string"},
            },
            "documentation": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
}

_ID = {"type": "string", "pattern": "^[0-9a-f]{16}$"}
_TIME = {"type": "string", "pattern": RFC3339_PATTERN, "format": "date-time"}
_UINT = {"type": "integer", "minimum": 0}
_OPT_STR = {"type": "string"}

_COMMON_PROPERTIES: dict[str, Any] = {
    "id": _ID,
    "pid": {"type": "integer", "minimum": 0, "maximum": 4294967295},
    "command": {"type": "string"},
    "timestamp": _UINT,
    "time": _TIME,
    "k8s_node_name": _OPT_STR,
    "k8s_pod_name": _OPT_STR,
    "k8s_namespace": _OPT_STR,
    # netspy-tui extensions: optional, typed when present.
    "source": {"type": "string"},
}
_COMMON_REQUIRED = ["id", "type", "pid", "command", "timestamp", "time"]

_IPV4_DEST = r"^(\d{1,3}\.){3}\d{1,3}:\d{1,5}$"
_IPV6_DEST = r"^\[[0-9A-Fa-f:.]+(%[^\]]+)?\]:\d{1,5}$"

#: One JSON Schema per event ``type``, from the contract README's event table.
EVENT_SCHEMAS: dict[str, dict[str, Any]] = {
    "connection": {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "connection event",
        "type": "object",
        "required": [
            *_COMMON_REQUIRED,
            "destination_ip",
            "destination_port",
            "destination",
            "address_family",
            "protocol",
            "socket_type",
            "return_code",
            "raw_ipv4",
            "raw_ipv6",
            "raw_protocol",
            "raw_socktype",
        ],
        "properties": {
            **_COMMON_PROPERTIES,
            "type": {"const": "connection"},
            "destination_ip": {"type": "string"},
            "destination_port": {"type": "integer", "minimum": 0, "maximum": 65535},
            "destination": {"type": "string"},
            "address_family": {"type": "integer", "minimum": 0, "maximum": 65535},
            "protocol": {"type": "string", "pattern": r"^(TCP|UDP|Unknown\(\d+\))$"},
            "socket_type": {"type": "string"},
            "return_code": {"type": "integer"},
            "raw_ipv4": {"type": "integer", "minimum": 0, "maximum": 4294967295},
            "raw_ipv6": {
                "type": "array",
                "minItems": 16,
                "maxItems": 16,
                "items": {"type": "integer", "minimum": 0, "maximum": 255},
            },
            "raw_protocol": {"type": "integer"},
            "raw_socktype": {"type": "integer"},
            "outcome": {"type": "string", "enum": list(OUTCOMES)},
            "protocol_inferred": {"type": "boolean"},
            "sampled": {"type": "boolean"},
        },
        # The destination string has the shape of its address family (or is empty when unknown).
        "allOf": [
            {
                "if": {"properties": {"address_family": {"const": 2}}},
                "then": {"properties": {"destination": {"anyOf": [{"const": ""}, {"pattern": _IPV4_DEST}]}}},
            },
            {
                "if": {"properties": {"address_family": {"const": 10}}},
                "then": {"properties": {"destination": {"anyOf": [{"const": ""}, {"pattern": _IPV6_DEST}]}}},
            },
        ],
    },
    "packet_drop": {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "packet_drop event",
        "type": "object",
        "required": [*_COMMON_REQUIRED, "drop_reason_code", "drop_reason", "skb_length", "packet_size_bytes"],
        "properties": {
            **_COMMON_PROPERTIES,
            "type": {"const": "packet_drop"},
            "drop_reason_code": {"type": "integer"},
            "drop_reason": {
                "type": "string",
                "pattern": r"^(SKB_FREE|TCP_DROP|UDP_DROP|ICMP_DROP|NETFILTER_DROP|UNKNOWN\(\d+\))$",
            },
            "skb_length": _UINT,
            "packet_size_bytes": _UINT,
            "protocol": {"type": "string"},
            "destination": {"type": "string"},
        },
    },
}


class ContractViolation(AssertionError):
    """JSON that does not match the eBPF server contract; the message names each bad path."""

    def __init__(self, what: str, errors: list[str]) -> None:
        self.what = what
        self.errors = errors
        shown = "\n  ".join(errors[:10])
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        super().__init__(f"{what} violates the contract:\n  {shown}{more}")


# --- loading and converting the specs ----------------------------------------------------


def contracts_dir() -> Path:
    """The directory holding the two swagger files.

    ``NETSPY_CONTRACTS_DIR`` wins; otherwise a vendored copy in the repository, otherwise the
    team's shared checkout next to it.
    """
    env = os.environ.get("NETSPY_CONTRACTS_DIR")
    repo = Path(__file__).resolve().parents[1]
    candidates = [Path(env)] if env else []
    candidates += [
        repo / "contracts" / "ebpf-server",
        repo / "docs" / "contracts" / "ebpf-server",
        repo.parent / "shared" / "contracts" / "ebpf-server",
    ]
    for candidate in candidates:
        if (candidate / SPEC_FILES["server"]).is_file():
            return candidate
    raise FileNotFoundError(
        "ebpf-server swagger files not found in " + ", ".join(str(c) for c in candidates) + "; set NETSPY_CONTRACTS_DIR"
    )


def _convert(node: Any) -> Any:
    """Swagger 2.0 schema object -> JSON Schema draft 7 (in place semantics, returns a copy).

    Swagger's schema objects are a JSON Schema subset; what differs: ``example`` (annotation
    only, dropped), ``$ref`` siblings (ignored in draft 7, so a ``$ref`` with siblings becomes an
    ``allOf``), ``format: int64/int32`` (harmless, kept), ``x-*`` vendor keys (dropped).
    """
    if isinstance(node, list):
        return [_convert(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _convert(v) for k, v in node.items() if k != "example" and not k.startswith("x-")}
    if "$ref" in out and len(out) > 1:
        ref = out.pop("$ref")
        out.setdefault("allOf", []).append({"$ref": ref})
    return out


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


@cache
def load_spec(spec: Spec = "server") -> dict[str, Any]:
    """The raw swagger document of ``spec``."""
    if spec not in SPEC_FILES:
        raise ValueError(f"spec must be 'server' or 'aggregator', not {spec!r}")
    return json.loads((contracts_dir() / SPEC_FILES[spec]).read_text(encoding="utf-8"))


@cache
def definitions(spec: Spec = "server") -> dict[str, Any]:
    """Every definition of ``spec`` as JSON Schema, with :data:`REQUIRED` and RFC3339 overlays."""
    defs: dict[str, Any] = _convert(copy.deepcopy(load_spec(spec)["definitions"]))
    for name, schema in defs.items():
        required = REQUIRED.get(_short(name))
        if required:
            props = schema.get("properties", {})
            schema["required"] = [field for field in required if field in props]
        for field, prop in schema.get("properties", {}).items():
            if field == "query_time" and prop.get("type") == "string":
                prop["pattern"] = RFC3339_PATTERN
    defs.update(copy.deepcopy(EXTRA_DEFINITIONS))
    return defs


def resolve_name(definition: str, spec: Spec = "server") -> str:
    """Full definition name for ``definition`` (a full name or a short alias) in ``spec``."""
    defs = definitions(spec)
    if definition in defs:
        return definition
    for prefix in (*_ALIAS_PREFERENCE[spec], "netspy."):
        if prefix + definition in defs:
            return prefix + definition
    known = sorted({_short(n) for n in defs})
    raise KeyError(f"no definition {definition!r} in the {spec} spec; known: {', '.join(known)}")


def aliases(spec: Spec = "server") -> dict[str, str]:
    """Short name -> full name, as :func:`resolve_name` maps them."""
    return {_short(n): resolve_name(_short(n), spec) for n in definitions(spec)}


@cache
def _validator(full_name: str, spec: Spec) -> Draft7Validator:
    root = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "definitions": definitions(spec),
        "allOf": [{"$ref": f"#/definitions/{full_name}"}],
    }
    Draft7Validator.check_schema(root)
    return Draft7Validator(root, format_checker=Draft7Validator.FORMAT_CHECKER)


@cache
def _event_validators() -> dict[str, Draft7Validator]:
    out = {}
    for kind, schema in EVENT_SCHEMAS.items():
        Draft7Validator.check_schema(schema)
        out[kind] = Draft7Validator(schema, format_checker=Draft7Validator.FORMAT_CHECKER)
    return out


def response_definition(method: str, path: str, spec: Spec = "server") -> str:
    """The definition a ``200`` of ``METHOD path`` returns according to ``spec``."""
    op = load_spec(spec)["paths"][path][method.lower()]
    ref = op["responses"]["200"]["schema"]["$ref"]
    return ref.removeprefix("#/definitions/")


def operations(spec: Spec = "server") -> list[tuple[str, str]]:
    """Every ``(METHOD, path)`` the spec documents."""
    return [(m.upper(), p) for p, ops in load_spec(spec)["paths"].items() for m in ops]


# --- validation -------------------------------------------------------------------------


def _path(err: jsonschema.ValidationError, prefix: str = "$") -> str:
    out = prefix
    for part in err.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _messages(errors: Iterator[jsonschema.ValidationError], prefix: str = "$") -> list[str]:
    found = sorted(errors, key=lambda e: (list(map(str, e.absolute_path)), e.message))
    out: list[str] = []
    for err in found:
        # For anyOf/oneOf failures, the most specific sub-error reads best.
        best = jsonschema.exceptions.best_match([err]) or err
        out.append(f"{_path(best, prefix)}: {best.message}")
    return out


def validate(definition: str, payload: Any, spec: Spec = "server") -> None:
    """Raise :class:`ContractViolation` unless ``payload`` matches ``definition`` of ``spec``."""
    full = resolve_name(definition, spec)
    errors = _messages(_validator(full, spec).iter_errors(payload))
    if errors:
        raise ContractViolation(f"{full} ({spec})", errors)


def event_errors(obj: Any, prefix: str = "$") -> list[str]:
    """Problems of one event object (empty when it is valid)."""
    if not isinstance(obj, dict):
        return [f"{prefix}: event must be an object, got {type(obj).__name__}"]
    kind = obj.get("type")
    validator = _event_validators().get(kind) if isinstance(kind, str) else None
    if validator is None:
        return [f"{prefix}.type: {kind!r} is not one of {sorted(EVENT_SCHEMAS)}"]
    return _messages(validator.iter_errors(obj), prefix)


def validate_event(obj: Any) -> None:
    """Raise :class:`ContractViolation` unless ``obj`` is a valid event of a known ``type``."""
    errors = event_errors(obj)
    if errors:
        raise ContractViolation(f"{obj.get('type', '?') if isinstance(obj, dict) else '?'} event", errors)


def _consistency(payload: dict[str, Any]) -> list[str]:
    """The arithmetic the server guarantees between fields of one response."""
    errors: list[str] = []
    events = payload.get("events")
    if isinstance(events, list):
        if isinstance(payload.get("count"), int) and payload["count"] != len(events):
            errors.append(f"$.count: {payload['count']} but {len(events)} events")
        total = payload.get("total_count")
        if isinstance(total, int) and total < len(events):
            errors.append(f"$.total_count: {total} is less than the {len(events)} events returned")
    by_pid = payload.get("events_by_pid")
    if isinstance(by_pid, dict):
        n = sum(len(v) for v in by_pid.values() if isinstance(v, list))
        if isinstance(payload.get("total_events"), int) and payload["total_events"] != n:
            errors.append(f"$.total_events: {payload['total_events']} but events_by_pid holds {n}")
        if isinstance(payload.get("total_pids"), int) and payload["total_pids"] != len(by_pid):
            errors.append(f"$.total_pids: {payload['total_pids']} but events_by_pid has {len(by_pid)} keys")
        for key, group in by_pid.items():
            if not key.isdigit():
                errors.append(f"$.events_by_pid: key {key!r} is not a decimal pid")
                continue
            for i, event in enumerate(group if isinstance(group, list) else []):
                if isinstance(event, dict) and event.get("pid") != int(key):
                    errors.append(f"$.events_by_pid.{key}[{i}].pid: {event.get('pid')!r} filed under {key}")
    for field in ("count_by_node", "events_by_node"):
        nodes = payload.get(field)
        if isinstance(nodes, dict) and isinstance(payload.get("total_nodes"), int):
            if payload["total_nodes"] != len(nodes):
                errors.append(f"$.total_nodes: {payload['total_nodes']} but {field} has {len(nodes)} nodes")
    return errors


def validate_response(definition: str, payload: Any, spec: Spec = "server") -> None:
    """:func:`validate`, plus every event in ``events`` / ``events_by_pid`` and the counts."""
    validate(definition, payload, spec)
    errors: list[str] = []
    if isinstance(payload, dict):
        if isinstance(payload.get("events"), list):
            for i, event in enumerate(payload["events"]):
                errors += event_errors(event, f"$.events[{i}]")
        if isinstance(payload.get("events_by_pid"), dict):
            for pid, group in payload["events_by_pid"].items():
                for i, event in enumerate(group):
                    errors += event_errors(event, f"$.events_by_pid.{pid}[{i}]")
        errors += _consistency(payload)
    if errors:
        raise ContractViolation(f"{resolve_name(definition, spec)} ({spec})", errors)
