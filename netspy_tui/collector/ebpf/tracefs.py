"""tracefs: where it is, mounting it, tracepoint ids, record layouts and symbolic value names.

Everything about a tracepoint is read from ``events/<group>/<name>/{id,format}`` at run time:
field offsets, and the names the kernel prints for enum values (``__print_symbolic``) — the
drop reasons of ``skb/kfree_skb`` and the TCP states of ``sock/inet_sock_set_state``.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from netspy_tui.collector.ebpf import syscalls

log = logging.getLogger(__name__)

CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


class TracefsError(OSError):
    """tracefs is not available; ``hint`` says what to do."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def _has_events(root: str) -> bool:
    return os.path.isdir(os.path.join(root, "events"))


def _tracefs_mounts() -> list[str]:
    """Mount points of tracefs, from /proc/self/mounts (readable by everyone)."""
    try:
        with open("/proc/self/mounts") as f:
            return [line.split()[1] for line in f if len(line.split()) > 2 and line.split()[2] == "tracefs"]
    except OSError:
        return []


def find_tracefs(mount: bool = True) -> str:
    """The tracefs directory, mounting it on /sys/kernel/tracing when allowed and needed."""
    for root in CANDIDATES:
        if _has_events(root):
            return root
    target = CANDIDATES[0]
    mounted = [m for m in _tracefs_mounts() if m in CANDIDATES]
    if mounted:
        raise TracefsError(
            f"cannot read tracefs at {mounted[0]} (permission denied)", "run as root or use --collector procfs"
        )
    if not mount:
        raise TracefsError(f"tracefs is not mounted at {target}", f"mount it: mount -t tracefs nodev {target}")
    if os.geteuid() != 0:
        raise TracefsError(
            f"tracefs is not mounted at {target} and only root can mount it",
            f"run as root, have root run: mount -t tracefs nodev {target}, or use --collector procfs",
        )
    try:
        syscalls.mount_tracefs(target)
    except OSError as exc:
        raise TracefsError(
            f"tracefs is not mounted and mounting it on {target} failed ({exc.strerror})",
            f"mount it yourself: mount -t tracefs nodev {target}, or use --collector procfs",
        ) from exc
    log.info("mounted tracefs on %s", target)
    if not _has_events(target):
        raise TracefsError(
            f"tracefs at {target} has no events directory (kernel without tracepoints?)",
            "use --collector procfs",
        )
    return target


@dataclass(frozen=True)
class Field:
    name: str
    offset: int
    size: int
    signed: bool


_FIELD_RE = re.compile(r"field:(?P<decl>[^;]*);\s*offset:(?P<off>\d+);\s*size:(?P<size>\d+);\s*signed:(?P<signed>\d);")
_SYMBOLIC_RE = re.compile(r"__print_symbolic\(\s*REC->(?P<field>\w+)\s*,(?P<body>.*?)\)\s*(?:,|$)", re.S)
_PAIR_RE = re.compile(r"\{\s*(-?(?:0x[0-9a-fA-F]+|\d+))\s*,\s*\"([^\"]*)\"\s*\}")


@dataclass(frozen=True)
class Tracepoint:
    group: str
    name: str
    id: int
    fields: dict[str, Field]
    print_fmt: str

    def offset(self, field: str, size: int | None = None) -> int:
        """Offset of ``field``; raises KeyError naming the tracepoint when absent or of another size."""
        if field not in self.fields:
            raise KeyError(f"{self.group}/{self.name} has no field {field!r}")
        f = self.fields[field]
        if size is not None and f.size != size:
            raise KeyError(f"{self.group}/{self.name} field {field!r} is {f.size} bytes, expected {size}")
        return f.offset

    def symbols(self, field: str) -> dict[int, str]:
        """The ``{value: name}`` table the kernel prints for ``field`` (``__print_symbolic``)."""
        return parse_symbolic(self.print_fmt, field)


def parse_format(text: str) -> tuple[dict[str, Field], str]:
    fields: dict[str, Field] = {}
    for m in _FIELD_RE.finditer(text):
        decl = m.group("decl").strip()
        name = decl.split()[-1]
        name = name.split("[", 1)[0].lstrip("*")
        fields[name] = Field(name, int(m.group("off")), int(m.group("size")), m.group("signed") == "1")
    fmt = ""
    for line in text.splitlines():
        if line.startswith("print fmt:"):
            fmt = line[len("print fmt:") :].strip()
    return fields, fmt


def parse_symbolic(print_fmt: str, field: str) -> dict[int, str]:
    for m in _SYMBOLIC_RE.finditer(print_fmt):
        if m.group("field") == field:
            return {int(v, 0): name for v, name in _PAIR_RE.findall(m.group("body"))}
    return {}


def exists(root: str, group: str, name: str) -> bool:
    return os.path.isfile(os.path.join(root, "events", group, name, "id"))


def tracepoint(root: str, group: str, name: str) -> Tracepoint:
    base = Path(root, "events", group, name)
    try:
        tp_id = int((base / "id").read_text().strip())
        fields, fmt = parse_format((base / "format").read_text())
    except FileNotFoundError as exc:
        raise TracefsError(
            f"the kernel has no tracepoint {group}/{name}",
            "this kernel lacks a tracepoint netspy needs; use --collector procfs",
        ) from exc
    except PermissionError as exc:
        raise TracefsError(
            f"cannot read tracepoint {group}/{name} in {root} (permission denied)",
            "run as root or use --collector procfs",
        ) from exc
    return Tracepoint(group, name, tp_id, fields, fmt)
