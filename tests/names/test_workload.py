"""Workloads from cgroup paths (pure), and from real cgroup v2 directories the test makes (root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from netspy_tui.names.workload import (
    HOST,
    KernelCgroups,
    WorkloadResolver,
    cgroup2_mount,
    classify_cgroup,
    k8s_identity,
)
from tests.factories import connection_json
from tests.hardening.conftest import Child, free_port, spawn, wait_until  # noqa: F401 (fixture)
from tests.hardening.test_security import served_url

CID = "3f2a" + "0" * 56 + "beef"
UID = "7c1e5b2a-0d3f-4b6e-9a8c-1234567890ab"
UID_ = UID.replace("-", "_")


@pytest.mark.parametrize(
    ("path", "kind", "name", "fields"),
    [
        ("/", "host", "host", {}),
        ("/init.scope", "host", "host", {}),
        (f"/system.slice/docker-{CID}.scope", "container", f"docker {CID[:12]}", {"runtime": "docker"}),
        (f"/docker/{CID}", "container", f"docker {CID[:12]}", {"runtime": "docker"}),
        (f"/machine.slice/libpod-{CID}.scope", "container", f"podman {CID[:12]}", {"runtime": "podman"}),
        (
            f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope/container",
            "container",
            f"podman {CID[:12]}",
            {"runtime": "podman"},
        ),
        (f"/system.slice/crio-{CID}.scope", "container", f"cri-o {CID[:12]}", {"runtime": "cri-o"}),
        (
            f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope",
            "pod",
            f"pod {UID[:8]}/{CID[:12]}",
            {"runtime": "containerd", "pod_uid": UID, "qos": "burstable"},
        ),
        (
            f"/kubepods.slice/kubepods-pod{UID_}.slice/crio-{CID}.scope",
            "pod",
            f"pod {UID[:8]}/{CID[:12]}",
            {"runtime": "cri-o", "pod_uid": UID, "qos": "guaranteed"},
        ),
        (
            f"/kubepods/besteffort/pod{UID}/{CID}",
            "pod",
            f"pod {UID[:8]}/{CID[:12]}",
            {"pod_uid": UID, "qos": "besteffort", "runtime": None},
        ),
        ("/system.slice/nginx.service", "systemd", "nginx.service", {"unit": "nginx.service"}),
        ("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service", "systemd", "foo.service", {}),
        ("/user.slice/user-1000.slice/session-3.scope", "systemd", "session-3.scope", {}),
        ("/some/odd/path", "cgroup", "/some/odd/path", {}),
    ],
)
def test_cgroup_paths_name_their_workload(path: str, kind: str, name: str, fields: dict[str, object]) -> None:
    workload = classify_cgroup(path)
    assert (workload.kind, workload.name) == (kind, name)
    for key, value in fields.items():
        assert getattr(workload, key) == value
    if kind in ("container", "pod"):
        assert workload.container_id == CID
    assert workload.as_dict()["kind"] == kind


def test_the_cgroup2_mount_is_read_from_the_mount_table(tmp_path: Path) -> None:
    table = tmp_path / "mountinfo"
    table.write_text(
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
    )
    assert cgroup2_mount(str(table)) == Path("/sys/fs/cgroup/unified")
    table.write_text("31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n")
    assert cgroup2_mount(str(table)) is None
    assert cgroup2_mount(str(tmp_path / "missing")) is None


def test_kubernetes_identity_comes_from_the_downward_api_environment() -> None:
    env = {"NODE_NAME": "node-1", "POD_NAME": "netspy-abc", "POD_NAMESPACE": "monitoring"}
    assert k8s_identity(env) == {"k8s_node_name": "node-1", "k8s_pod_name": "netspy-abc", "k8s_namespace": "monitoring"}
    assert k8s_identity({}) == {}


def test_serve_fills_the_k8s_fields_from_the_k8s_prefixed_downward_api_names(
    tmp_path: Path,
    spawn: Callable[..., Child],  # noqa: F811
) -> None:
    """The README: NODE_NAME, POD_NAME, POD_NAMESPACE "or the same names with a K8S_ prefix"."""
    recording = tmp_path / "rec.jsonl"
    recording.write_text(json.dumps(connection_json(ago=5)) + "\n")
    token = "k8s-env-test-token-0123456789"
    env = {"NETSPY_TOKEN": token, "K8S_NODE_NAME": "node-k", "K8S_POD_NAME": "agent-k", "K8S_POD_NAMESPACE": "obs"}
    child = spawn("serve", "--replay", str(recording), "--replay-speed", "0", "--port", str(free_port()), env=env)
    url = served_url(child, "the eBPF server API")
    with httpx.Client(base_url=url, timeout=10, headers={"Authorization": f"Bearer {token}"}) as http:
        events = wait_until(lambda: http.get("/api/events").json()["events"], "the replayed event")
    assert [(e["k8s_node_name"], e["k8s_pod_name"], e["k8s_namespace"]) for e in events] == [
        ("node-k", "agent-k", "obs")
    ]
    assert k8s_identity({"K8S_NAMESPACE": "older"}) == {"k8s_namespace": "older"}  # still read


def test_a_process_that_has_gone_keeps_its_last_workload() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        resolver = WorkloadResolver()
        seen = resolver.of_pid(child.pid)
        assert seen is not None
    finally:
        child.kill()
        child.wait()
    assert resolver.of_pid(child.pid, refresh=True) == seen
    assert resolver.of_pid(2**22 + 12345) is None


SCOPES = {
    "docker": (f"docker-{CID}.scope", "container", {"runtime": "docker"}),
    "containerd": (
        f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope",
        "pod",
        {"runtime": "containerd", "pod_uid": UID, "qos": "burstable"},
    ),
    "service": ("demo.service", "systemd", {"unit": "demo.service"}),
    "pod": (f"kubepods.slice/kubepods-pod{UID_}.slice", "pod", {"pod_uid": UID, "qos": "guaranteed"}),
}


@pytest.mark.root
@pytest.mark.parametrize("case", sorted(SCOPES))
def test_a_process_moved_into_a_cgroup_is_named_by_it(case: str) -> None:
    mount = cgroup2_mount()
    if mount is None:
        pytest.skip("no cgroup v2 hierarchy mounted")
    if os.geteuid() != 0:
        pytest.skip("needs root to make cgroups")
    relative, kind, fields = SCOPES[case]
    parent = mount / f"netspy-test-{uuid.uuid4().hex[:8]}"
    directory = parent / relative
    directory.mkdir(parents=True)
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        (directory / "cgroup.procs").write_text(str(child.pid))
        resolver = WorkloadResolver(mount=mount)
        workload = resolver.of_pid(child.pid)
        assert workload is not None and workload.kind == kind, workload
        for key, value in fields.items():
            assert getattr(workload, key) == value
        assert workload.cgroup == "/" + str(directory.relative_to(mount))
        # the same workload from the cgroup id eBPF reports (the directory's inode)
        assert resolver.of_cgroup_id(directory.stat().st_ino) == workload
        assert WorkloadResolver(mount=mount).of_cgroup_id(directory.stat().st_ino) == workload
    finally:
        child.kill()
        child.wait()
        for d in [directory, *directory.relative_to(parent).parents]:
            path = parent / d
            if path != parent:
                path.rmdir()
        parent.rmdir()


def test_host_is_the_default() -> None:
    assert HOST.kind == "host" and classify_cgroup("") == classify_cgroup("/")


async def test_in_a_pod_served_events_and_server_status_carry_the_nodes_identity(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """As ebpf-server does in a pod: the downward API's node/pod/namespace fill the events' k8s_*
    fields (where the event has none) and server_status says where they came from."""
    import httpx

    from netspy_tui.mcp_tools.gateway import open_gateway
    from netspy_tui.serve import create_app
    from netspy_tui.telemetry.memory import MemorySource
    from tests.factories import connection

    monkeypatch.setenv("NODE_NAME", "node-7")
    monkeypatch.setenv("POD_NAME", "netspy-agent-x1")
    monkeypatch.setenv("POD_NAMESPACE", "monitoring")
    source = MemorySource([connection(), connection(pid=99, k8s_pod_name="other-pod")])
    transport = httpx.ASGITransport(app=create_app(source))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        events = (await client.get("/api/events")).json()["events"]
    assert {e["k8s_node_name"] for e in events} == {"node-7"}
    assert {e["k8s_pod_name"] for e in events} == {"netspy-agent-x1", "other-pod"}  # an event's own is kept
    async with open_gateway(source) as gw:
        status = await gw.call("server_status", {})
    assert "Kubernetes (downward API" in status.text and "node node-7" in status.text
    assert status.data["kubernetes"]["k8s_namespace"] == "monitoring"
    monkeypatch.delenv("NODE_NAME")
    monkeypatch.delenv("POD_NAME")
    monkeypatch.delenv("POD_NAMESPACE")
    async with open_gateway(source) as gw:
        assert "Kubernetes" not in (await gw.call("server_status", {})).text


@pytest.mark.root
def test_kernel_cgroups_keep_a_removed_cgroups_path_and_stay_bounded() -> None:
    """An id is resolved when first noted (while the cgroup exists) and keeps its path after the
    cgroup is removed; pids beyond the bound are forgotten oldest first; unknown ids walk at most
    once per rescan interval."""
    mount = cgroup2_mount()
    if mount is None:
        pytest.skip("no cgroup v2 hierarchy mounted")
    if os.geteuid() != 0:
        pytest.skip("needs root to make cgroups")
    gone = next(p for p in range(4_000_000, 1, -1) if not os.path.exists(f"/proc/{p}"))  # no such process
    directory = mount / f"netspy-test-{uuid.uuid4().hex[:8]}.service"
    directory.mkdir()
    try:
        kernel = KernelCgroups(mount, max_pids=2)
        kernel.note([(gone, directory.stat().st_ino), (11, 0)])
    finally:
        directory.rmdir()
    name = "/" + directory.name
    assert kernel.path_of(gone) == name and kernel.cgroup_of(11) is None
    resolver = WorkloadResolver(mount=mount, kernel=kernel)
    assert resolver.of_pid(gone) == classify_cgroup(name)  # no /proc entry: the cgroup the kernel saw
    kernel.note([(20, 1), (21, 1)])
    assert kernel.cgroup_of(gone) is None and kernel.cgroup_of(21) == 1  # bounded: the oldest pid went
    walks = kernel.index.walks
    assert kernel.index.path(2**40) is None and kernel.index.path(2**40 + 1) is None
    assert kernel.index.walks <= walks + 1
