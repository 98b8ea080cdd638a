"""The Kubernetes manifests in deploy/kubernetes are valid resources (checked offline against the
Kubernetes JSON schemas kubernetes-validate bundles, strict: no unknown fields), ask for what eBPF
needs and nothing more (the aggregator: nothing at all), and run flags this netspy-tui accepts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from netspy_tui import __version__
from netspy_tui.cli import parse_args

pytestmark = pytest.mark.quiet

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((REPO / "deploy" / "kubernetes").glob("*.yaml"))
#: the oldest Kubernetes release still supported upstream when this was written, and the newest bundled
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


def documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


def test_there_are_manifests() -> None:
    kinds = {doc["kind"] for _, doc in documents()}
    assert {"DaemonSet", "ServiceAccount", "Service", "Deployment", "PersistentVolumeClaim"} <= kinds
    assert "Secret" not in kinds  # the operator makes them (the files say how): no token ships in the repository


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("name", "doc"), documents(), ids=[n for n, _ in documents()])
def test_each_resource_is_valid_offline(name: str, doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)  # raises ValidationError with the field


def _agent() -> dict[str, Any]:
    return next(doc for _, doc in documents() if doc["kind"] == "DaemonSet")


def test_the_agent_has_the_capabilities_ebpf_needs_and_nothing_more() -> None:
    pod = _agent()["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    sc = container["securityContext"]
    # (SYS_PTRACE and DAC_READ_SEARCH: the open files of the host's processes, which own the sockets listening
    # before the agent started: tests/collector/test_listeners.py runs the scan with exactly this set)
    assert sc["capabilities"] == {
        "drop": ["ALL"],
        "add": ["BPF", "PERFMON", "SYS_RESOURCE", "SYS_PTRACE", "DAC_READ_SEARCH"],
    }
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert pod["automountServiceAccountToken"] is False and not pod.get("hostNetwork")
    for volume in pod["volumes"]:
        if "hostPath" in volume and volume["name"] != "state":
            mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
            assert mount["readOnly"] is True, volume["name"]


def test_the_agent_runs_flags_this_version_accepts_with_its_secrets_from_a_secret() -> None:
    (container,) = _agent()["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"netspy-tui:{__version__}"
    ns = parse_args(container["args"])
    assert ns.run == "serve" and ns.forward.endswith("/api/events/ingest") and ns.db is not None
    env = {e["name"]: e for e in container["env"]}
    for name in ("NETSPY_TOKEN", "NETSPY_FORWARD_TOKEN"):
        assert "secretKeyRef" in env[name]["valueFrom"] and "value" not in env[name]
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_the_dockerfile_builds_this_project() -> None:
    text = (REPO / "deploy" / "Dockerfile").read_text()
    assert "pip install --no-cache-dir ." in text and 'ENTRYPOINT ["netspy-tui"]' in text
    assert f"netspy-tui:{__version__}" in text
    # its default command serves no one else: beyond loopback only with the address and a token given (an audit's:
    # it served every process's connections on 0.0.0.0 without a token, with only a warning)
    cmd = next(line for line in text.splitlines() if line.startswith("CMD "))
    assert cmd == 'CMD ["serve"]', cmd


def test_the_check_catches_a_misspelt_field() -> None:
    import copy

    bad = copy.deepcopy(_agent())
    bad["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSIONS[0], strict=True)


def _of_kind(kind: str, component: str = "aggregator") -> dict[str, Any]:
    return next(
        doc
        for _, doc in documents()
        if doc["kind"] == kind and doc["metadata"]["labels"].get("app.kubernetes.io/component") == component
    )


def test_the_aggregator_runs_flags_this_version_accepts_with_its_tokens_from_its_secret() -> None:
    pod = _of_kind("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"netspy-tui:{__version__}"
    ns = parse_args(container["args"])
    assert ns.run == "serve" and ns.aggregate and ns.db is not None and ns.host == "0.0.0.0"
    env = {e["name"]: e for e in container["env"]}
    told = (REPO / "deploy" / "kubernetes" / "aggregator.yaml").read_text()
    for name, key in (("NETSPY_TOKEN", "api-token"), ("NETSPY_INGEST_TOKEN", "ingest-token")):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        # the Secret the comments tell the operator to create, with this key; not optional: no token, no pod
        assert ref == {"name": "netspy-tui-aggregator", "key": key} and "value" not in env[name]
        assert f"--from-literal={key}=" in told and "create secret generic netspy-tui-aggregator" in told
    claim = _of_kind("PersistentVolumeClaim")["metadata"]["name"]
    store = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)
    assert store["persistentVolumeClaim"]["claimName"] == claim
    mount = next(m for m in container["volumeMounts"] if m["name"] == store["name"])
    assert str(ns.db).startswith(mount["mountPath"] + "/")


def test_the_aggregator_needs_no_privileges() -> None:
    pod = _of_kind("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    sc = container["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert pod["automountServiceAccountToken"] is False and not pod.get("hostPID") and not pod.get("hostNetwork")


def test_the_agents_forward_to_the_aggregators_service() -> None:
    (agent,) = _agent()["spec"]["template"]["spec"]["containers"]
    forward = parse_args(agent["args"]).forward
    service = _of_kind("Service")
    (port,) = service["spec"]["ports"]
    assert forward == f"http://{service['metadata']['name']}:{port['port']}/api/events/ingest"
    assert service["spec"]["selector"] == _of_kind("Deployment")["spec"]["selector"]["matchLabels"]


def _scrape_jobs() -> list[dict[str, Any]]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "scrape_configs:" in b]
    return list(yaml.safe_load(block)["scrape_configs"])


@pytest.mark.parametrize("kind", ["DaemonSet", "Deployment"])
def test_prometheus_is_told_to_send_the_token_not_to_scrape_by_annotation(kind: str) -> None:
    """/metrics is behind NETSPY_TOKEN like every path: an annotation-driven scrape sends no token and
    reads 401, so the pods carry none, and the README's scrape job for the pod sends the pod's own
    api-token from the file the Secret is mounted as."""
    workload = next(doc for _, doc in documents() if doc["kind"] == kind)
    template = workload["spec"]["template"]
    annotations = template["metadata"].get("annotations", {})
    assert not [a for a in annotations if a.startswith("prometheus.io/")], annotations
    (container,) = template["spec"]["containers"]
    ref = next(e for e in container["env"] if e["name"] == "NETSPY_TOKEN")["valueFrom"]["secretKeyRef"]
    labels = template["metadata"]["labels"]
    port = next(p for p in container["ports"] if p["containerPort"] == parse_args(container["args"]).port)

    def keeps(job: dict[str, Any]) -> bool:
        meta = {"__meta_kubernetes_pod_label_" + re.sub(r"[^A-Za-z0-9_]", "_", k): v for k, v in labels.items()} | {
            "__meta_kubernetes_pod_container_port_name": port["name"]
        }
        rules = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
        return bool(rules) and all(
            re.fullmatch(r["regex"], ";".join(meta.get(s, "") for s in r["source_labels"])) for r in rules
        )

    (job,) = [job for job in _scrape_jobs() if keeps(job)]
    assert job["authorization"] == {"credentials_file": f"/etc/prometheus/secrets/{ref['name']}/{ref['key']}"}
    told = (REPO / "deploy" / "kubernetes" / "agent.yaml").read_text()
    (namespace,) = re.findall(r"kubectl create namespace (\S+)", told)
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": [namespace]}}]


def _expanded_args(container: dict[str, Any], namespace: str) -> list[str]:
    """The container's args as the kubelet runs them: ``$(VAR)`` replaced by the container's env (the downward
    API's namespace as ``namespace``); a reference to a variable the env does not define is left as written, as
    Kubernetes leaves it."""
    fields = {"metadata.namespace": namespace, "spec.nodeName": "node-a", "metadata.name": "pod-a"}
    env: dict[str, str] = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "fieldRef" in e.get("valueFrom", {}):
            env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), a) for a in container["args"]]


def _dns_names(service: dict[str, Any], namespace: str) -> list[str]:
    name = service["metadata"]["name"]
    return [name, f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]


@pytest.mark.parametrize("component", ["aggregator", "agent"])
def test_each_service_is_answered_by_every_name_it_is_reached_by(component: str) -> None:
    """Bound to 0.0.0.0, a server answers only IP literals and localhost unless --allow-host names more (DNS
    rebinding): every DNS name of the component's Service, in the namespace the files tell the operator to use,
    must pass the Host check its pod runs with (the policy built as the server builds it), or every request by
    that name (an agent's forwarded batch, a dashboard's) is refused 421 while the pods look healthy."""
    from netspy_tui.serve.hosts import HostPolicy

    told = (REPO / "deploy" / "kubernetes" / "agent.yaml").read_text()
    (namespace,) = re.findall(r"kubectl create namespace (\S+)", told)
    workload = _of_kind("Deployment" if component == "aggregator" else "DaemonSet", component)
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    args = _expanded_args(container, namespace)
    assert not [a for a in args if "$(" in a], args  # every variable the args use is in the env
    ns = parse_args(args)
    policy = HostPolicy(ns.host or "127.0.0.1", ns.allow_host or [])
    service = _of_kind("Service", component)
    names = _dns_names(service, namespace)
    if component == "agent":  # a headless Service: each pod by its address's name too
        names.append(f"10-244-1-7.{names[-1]}")
    for name in names:
        assert policy.allows_host_header(f"{name}:8080"), name
    assert policy.allows_host_header("10.244.1.7:8080")  # the kubelet's probes, Prometheus: the pod's address
    # still DNS-rebinding protection: a name the cluster's resolver does not answer for is refused
    for foreign in ("attacker.example", f"{service['metadata']['name']}.attacker.example", "svc.cluster.local"):
        assert not policy.allows_host_header(f"{foreign}:8080"), foreign


def test_the_agents_forward_to_a_name_the_aggregator_answers() -> None:
    from urllib.parse import urlsplit

    from netspy_tui.serve.hosts import HostPolicy

    (agent,) = _agent()["spec"]["template"]["spec"]["containers"]
    (aggregator,) = _of_kind("Deployment")["spec"]["template"]["spec"]["containers"]
    forward = urlsplit(parse_args(_expanded_args(agent, "netspy")).forward)
    ns = parse_args(_expanded_args(aggregator, "netspy"))
    assert HostPolicy(ns.host or "127.0.0.1", ns.allow_host or []).allows_host_header(forward.netloc)


@pytest.mark.parametrize("kind", ["DaemonSet", "Deployment"])
def test_the_probes_ask_the_servers_health_without_a_token(kind: str) -> None:
    """A tcpSocket probe kept an aggregator that refused every ingest (disk full) Ready: the probes are httpGet on
    the paths the server answers without the token the kubelet does not send (liveness: it answers; readiness:
    503 while /health would be)."""
    from netspy_tui.serve.app import PROBE_PATHS

    workload = next(doc for _, doc in documents() if doc["kind"] == kind)
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    port = next(p["name"] for p in container["ports"] if p["containerPort"] == parse_args(container["args"]).port)
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
    assert {"/livez", "/readyz"} <= set(PROBE_PATHS)
