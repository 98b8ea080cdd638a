"""Which workload a process belongs to, from its cgroup: a container (Docker, containerd/CRI,
CRI-O, Podman), a Kubernetes pod (UID and QoS class from the kubepods path), a systemd unit or
slice, or the host — on a plain Linux host, no cluster needed.

:func:`classify_cgroup` is pure (a cgroup path in, a :class:`Workload` out) and knows the path
conventions of each runtime, with either cgroup driver (systemd ``…-<id>.scope`` units or cgroupfs
``/<runtime>/<id>`` directories). :class:`WorkloadResolver` reads a process's cgroup from
``/proc/PID/cgroup`` (or a cgroup id, as eBPF's ``bpf_get_current_cgroup_id`` reports it, by the
inode of its directory under the cgroup2 mount), caches both bounded, and keeps the last known
workload of a cgroup or process that has gone. :func:`kernel_cgroups` is what the eBPF collector
saw: each process's cgroup id when it connected, its path resolved when first seen, so a process
that has exited (its ``/proc`` entry gone before anyone read it) still has a workload.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Workload",
    "WorkloadResolver",
    "HOST",
    "CgroupIndex",
    "KernelCgroups",
    "classify_cgroup",
    "cgroup2_mount",
    "kernel_cgroups",
    "k8s_identity",
]

_HEX64 = r"[0-9a-f]{64}"
#: systemd-driver container scopes: <prefix>-<id>.scope
_SCOPE = re.compile(rf"^(docker|cri-containerd|crio|libpod|containerd)-({_HEX64})\.scope$")
_SCOPE_RUNTIME = {
    "docker": "docker",
    "cri-containerd": "containerd",
    "containerd": "containerd",
    "crio": "cri-o",
    "libpod": "podman",
}
#: cgroupfs-driver container directories: /docker/<id>, /libpod_parent/libpod-<id>, a bare id
_BARE = re.compile(rf"^(?:(?:libpod|crio|docker|cri-containerd)-)?({_HEX64})$")
_POD_SLICE = re.compile(r"^kubepods(?:-(besteffort|burstable))?-pod([0-9a-f_]{32,36})\.slice$")
_POD_DIR = re.compile(r"^pod([0-9a-f-]{32,36})$")
_UNIT = re.compile(r"^[^/]+\.(service|scope|slice|socket|mount|swap|timer|device|target)$")


@dataclass(frozen=True)
class Workload:
    """A process's workload. ``kind``: ``container``, ``pod`` (a container of a Kubernetes pod),
    ``systemd`` (a unit; slices only when nothing narrower matched), ``host`` or ``cgroup`` (a
    path no convention matched; ``name`` is the path)."""

    kind: str
    name: str  # what a column shows: "docker 3f2a…", "pod 7c1e…/3f2a…", "nginx.service", "host"
    runtime: str | None = None  # docker, containerd, cri-o, podman
    container_id: str | None = None  # full 64-hex id
    pod_uid: str | None = None  # with dashes, as Kubernetes writes it
    qos: str | None = None  # guaranteed, burstable, besteffort
    unit: str | None = None  # the systemd unit (or slice) the process runs in
    cgroup: str = "/"  # the cgroup v2 path it came from

    def as_dict(self) -> dict[str, str]:
        """The fields that are set, for structured tool results."""
        out = {"kind": self.kind, "name": self.name, "cgroup": self.cgroup}
        for key in ("runtime", "container_id", "pod_uid", "qos", "unit"):
            value = getattr(self, key)
            if value:
                out[key] = value
        return out


HOST = Workload(kind="host", name="host", cgroup="/")


def _pod_uid(text: str) -> str:
    uid = text.replace("_", "-")
    if "-" not in uid and len(uid) == 32:
        uid = f"{uid[:8]}-{uid[8:12]}-{uid[12:16]}-{uid[16:20]}-{uid[20:]}"
    return uid


def classify_cgroup(path: str) -> Workload:
    """The workload of a cgroup v2 path (``/proc/PID/cgroup``'s ``0::`` line)."""
    path = "/" + path.strip().strip("/")
    parts = [p for p in path.split("/") if p]
    if not parts or parts in (["init.scope"],):
        return Workload(kind="host", name="host", unit=parts[0] if parts else None, cgroup=path)

    runtime = container = pod = qos = None
    unit = None
    for i, part in enumerate(parts):
        if m := _POD_SLICE.match(part):
            qos = m.group(1) or "guaranteed"
            pod = _pod_uid(m.group(2))
        elif part == "kubepods" or part == "kubepods.slice":
            qos = qos or "guaranteed"
        elif part in ("besteffort", "burstable") and i > 0 and parts[i - 1] == "kubepods":
            qos = part
        elif m := _POD_DIR.match(part):
            pod = _pod_uid(m.group(1))
        elif m := _SCOPE.match(part):
            runtime, container = _SCOPE_RUNTIME[m.group(1)], m.group(2)
        elif m := _BARE.match(part):
            container = m.group(1)
            parent = parts[i - 1] if i > 0 else ""
            if part.startswith("libpod-") or parent.startswith("libpod") or parent == "machine.slice":
                runtime = "podman"
            elif part.startswith("crio-"):
                runtime = "cri-o"
            elif parent == "docker" or part.startswith("docker-"):
                runtime = "docker"
            elif part.startswith("cri-containerd-"):
                runtime = "containerd"
        elif _UNIT.match(part) and container is None:
            unit = part

    if pod is not None:
        name = f"pod {pod[:8]}" + (f"/{container[:12]}" if container else "")
        return Workload(kind="pod", name=name, runtime=runtime, container_id=container, pod_uid=pod, qos=qos,
                        cgroup=path)  # fmt: skip
    if container is not None:
        name = f"{runtime or 'container'} {container[:12]}"
        return Workload(kind="container", name=name, runtime=runtime, container_id=container, cgroup=path)
    if unit is not None:
        return Workload(kind="systemd", name=unit, unit=unit, cgroup=path)
    return Workload(kind="cgroup", name=path, cgroup=path)


def cgroup2_mount(mountinfo: str = "/proc/self/mountinfo") -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup`` on most hosts,
    ``/sys/fs/cgroup/unified`` on hybrid ones), from the mount table; None without one."""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if sep and right.split()[:1] == ["cgroup2"] and len(fields) >= 5:
            return Path(fields[4].replace("\\040", " "))
    return None


def _cgroup_of(pid: int) -> str | None:
    """The cgroup v2 path of a process (its ``0::`` line; on a hybrid host whose processes sit at
    the v2 root, the v1 ``name=systemd`` path, which carries the same unit and scope names)."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as fh:
            lines = fh.read(65536).splitlines()
    except OSError:
        return None
    v2 = systemd = None
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif controllers == "name=systemd":
            systemd = path
    if v2 not in (None, "/"):
        return v2
    return systemd if systemd is not None else v2


def k8s_identity(environ: os._Environ[str] | dict[str, str] | None = None) -> dict[str, str]:
    """This process's own node, pod and namespace when it runs in a Kubernetes pod, from the
    downward-API environment (``NODE_NAME``, ``POD_NAME``, ``POD_NAMESPACE`` or the same names with a
    ``K8S_`` prefix, as the README says; ``K8S_NAMESPACE`` too, the field's own name, read before), as the
    contract's ``k8s_*`` fields; empty elsewhere."""
    env = os.environ if environ is None else environ
    pairs = {
        "k8s_node_name": ("K8S_NODE_NAME", "NODE_NAME"),
        "k8s_pod_name": ("K8S_POD_NAME", "POD_NAME"),
        "k8s_namespace": ("K8S_POD_NAMESPACE", "K8S_NAMESPACE", "POD_NAMESPACE"),
    }
    out = {}
    for field, names in pairs.items():
        for name in names:
            if env.get(name):
                out[field] = env[name]
                break
    return out


def host_node() -> str:
    """This host's node name: the downward API's in a pod, else the host name (as ``serve --forward`` sends it,
    ``serve``'s ``/health`` says it and the tools' ``node`` filter takes it)."""
    return k8s_identity().get("k8s_node_name") or socket.gethostname()


#: directories a cgroup walk reads at most (a host has hundreds; a busy Kubernetes node thousands)
_WALK_LIMIT = 200_000


class CgroupIndex:
    """cgroup v2 id -> path. An id not known yet is looked for in one walk of the cgroup2 mount (the
    directory whose inode number it is; every directory met is remembered on the way), at most once
    per ``min_rescan`` seconds, so ids of cgroups already removed do not make a walk each. At most
    ``max_entries`` paths (least recently used go first); a cgroup that has gone keeps its last path."""

    def __init__(self, mount: Path | None, *, max_entries: int = 8192, min_rescan: float = 1.0) -> None:
        self.mount = mount
        self.max_entries = max_entries
        self.min_rescan = min_rescan
        self.walks = 0
        self._paths: OrderedDict[int, str] = OrderedDict()
        self._last_walk = -float("inf")
        self._lock = threading.Lock()

    def known(self, cgroup_id: int) -> str | None:
        """The path of ``cgroup_id`` if it was found already (no walk)."""
        with self._lock:
            return self._paths.get(cgroup_id)

    def path(self, cgroup_id: int) -> str | None:
        with self._lock:
            known = self._paths.get(cgroup_id)
            if known is not None:
                self._paths.move_to_end(cgroup_id)
                return known
            now = time.monotonic()
            if self.mount is None or cgroup_id <= 0 or now - self._last_walk < self.min_rescan:
                return None
            self._last_walk = now
        found = self._walk(cgroup_id)
        with self._lock:
            for ino, path in found.items():
                if ino not in self._paths:
                    self._paths[ino] = path
            hit = self._paths.get(cgroup_id)
            if hit is not None:
                self._paths.move_to_end(cgroup_id)
            while len(self._paths) > self.max_entries:
                self._paths.popitem(last=False)
            return hit

    def _walk(self, wanted: int) -> dict[int, str]:
        """inode -> path of the directories under the mount, up to ``max_entries`` of them (the
        wanted one always kept). ``DirEntry.inode`` is the kernfs node id: no stat per directory."""
        assert self.mount is not None
        self.walks += 1
        root = str(self.mount)
        out: dict[int, str] = {}
        try:
            out[os.stat(root).st_ino] = "/"
        except OSError:
            return out
        stack, seen = [root], 0
        while stack and seen < _WALK_LIMIT:
            top = stack.pop()
            try:
                with os.scandir(top) as entries:
                    for entry in entries:
                        if not entry.is_dir(follow_symlinks=False):
                            continue
                        seen += 1
                        stack.append(entry.path)
                        ino = entry.inode()
                        if len(out) < self.max_entries or ino == wanted:
                            out[ino] = "/" + os.path.relpath(entry.path, root)
            except OSError:
                continue
        return out


class KernelCgroups:
    """What the eBPF programs said each process's cgroup was when it connected (pid -> cgroup id, the
    last one seen; at most ``max_pids``), with each id's path resolved when first seen, while the
    cgroup most likely still exists. Fed by the collector's reader; read by :class:`WorkloadResolver`
    for a process whose ``/proc`` entry has gone."""

    def __init__(self, mount: Path | None, *, max_pids: int = 65536) -> None:
        self.index = CgroupIndex(mount)
        self.max_pids = max_pids
        self._pids: OrderedDict[int, int] = OrderedDict()
        self._lock = threading.Lock()

    def note(self, pairs: Iterable[tuple[int, int]]) -> None:
        """(pid, cgroup id) pairs (id 0: unknown, ignored)."""
        fresh = set()
        with self._lock:
            for pid, cgroup_id in pairs:
                if pid <= 0 or cgroup_id <= 0:
                    continue
                if self._pids.get(pid) != cgroup_id:
                    fresh.add(cgroup_id)
                self._pids[pid] = cgroup_id
                self._pids.move_to_end(pid)
            while len(self._pids) > self.max_pids:
                self._pids.popitem(last=False)
        for cgroup_id in fresh:
            self.index.path(cgroup_id)

    def cgroup_of(self, pid: int) -> int | None:
        with self._lock:
            return self._pids.get(pid)

    def path_of(self, pid: int) -> str | None:
        """The cgroup path the kernel last saw ``pid`` in, if it was resolved."""
        cgroup_id = self.cgroup_of(pid)
        return self.index.path(cgroup_id) if cgroup_id is not None else None


@functools.cache
def kernel_cgroups() -> KernelCgroups:
    """The process-wide :class:`KernelCgroups` (under this host's cgroup2 mount)."""
    return KernelCgroups(cgroup2_mount())


class WorkloadResolver:
    """pid or cgroup id -> :class:`Workload`, cached (at most ``max_entries`` of each, least
    recently used go first). A process or cgroup that has gone keeps the last workload seen; a
    process that exited before its ``/proc`` entry was read gets the workload of the cgroup the
    kernel saw it connect from (``kernel``, by default what this process's eBPF collector saw)."""

    def __init__(self, *, max_entries: int = 8192, mount: Path | None = None,
                 kernel: KernelCgroups | None = None) -> None:  # fmt: skip
        self.max_entries = max_entries
        self._mount = mount if mount is not None else cgroup2_mount()
        self._kernel = kernel
        self._index = CgroupIndex(self._mount, max_entries=max_entries)
        self._by_path: OrderedDict[str, Workload] = OrderedDict()
        self._by_pid: OrderedDict[int, Workload] = OrderedDict()
        self._by_id: OrderedDict[int, Workload] = OrderedDict()
        self._lock = threading.Lock()

    def of_pid(self, pid: int, *, refresh: bool = False) -> Workload | None:
        """The workload of a running process (read now, or the cached one unless ``refresh``);
        of a process that has gone, the last one seen; None if never seen."""
        with self._lock:
            known = self._by_pid.get(pid)
            if known is not None and not refresh:
                self._by_pid.move_to_end(pid)
                return known
        path = _cgroup_of(pid)
        if path is None:
            if known is not None:
                return known
            path = (self._kernel or kernel_cgroups()).path_of(pid)
            if path is None:
                return None
        workload = self.of_path(path)
        with self._lock:
            self._put(self._by_pid, pid, workload)
        return workload

    def of_path(self, path: str) -> Workload:
        with self._lock:
            known = self._by_path.get(path)
            if known is not None:
                self._by_path.move_to_end(path)
                return known
        workload = classify_cgroup(path)
        with self._lock:
            self._put(self._by_path, path, workload)
        return workload

    def of_cgroup_id(self, cgroup_id: int) -> Workload | None:
        """The workload of a cgroup v2 id (its directory's inode number): the path the collector found for it
        when it saw it (``kernel``: while the cgroup still existed), else looked up under the cgroup2 mount when
        first seen; None if no such cgroup was ever found."""
        with self._lock:
            known = self._by_id.get(cgroup_id)
            if known is not None:
                self._by_id.move_to_end(cgroup_id)
                return known
        path = (self._kernel or kernel_cgroups()).index.known(cgroup_id) or self._index.path(cgroup_id)
        if path is None:
            return None
        workload = self.of_path(path)
        with self._lock:
            self._put(self._by_id, cgroup_id, workload)
        return workload

    def _put(self, table: OrderedDict[Any, Workload], key: object, value: Workload) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > self.max_entries:
            table.popitem(last=False)
