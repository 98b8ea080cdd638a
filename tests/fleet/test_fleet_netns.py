"""Three hosts made of network namespaces: each runs an agent (``serve --forward`` with the embedded
procfs collector, which sees only its own namespace's sockets) and its own traffic, made here; one
aggregator in a fourth namespace takes them all. Each node's traffic shows up on that node only,
the aggregator's per-node counts equal each agent's own, and the fleet's total is their sum."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.collector.test_kernel_truth import in_netns
from tests.hardening.conftest import REPO, product_env

pytestmark = [pytest.mark.root, pytest.mark.slow]

INGEST_TOKEN = "netns-ingest-secret"
AGG_PORT = 8080  # in the hub's own namespace: nothing else listens there
AGENT_PORT = 8081
#: node -> connections its own client process (comm fleet-<x>) holds open
NODES = {"node-a": 6, "node-b": 4, "node-c": 2}

CLIENT = """
import ctypes, socket, sys
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)  # PR_SET_NAME: the comm the agents report
server = socket.socket(); server.bind(("127.0.0.1", 9000)); server.listen(64)
held = [socket.create_connection(("127.0.0.1", 9000)) for _ in range(int(sys.argv[2]))]
print("ready", flush=True)
sys.stdin.read()  # hold them open until the test is done
"""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@contextlib.contextmanager
def lab() -> Iterator[dict[str, str]]:
    """A hub namespace and one namespace per node, each linked to the hub by a veth pair: node ->
    (its namespace, the hub's address on its link)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to make network namespaces")
    token = secrets.token_hex(3)
    net = 100 + secrets.randbelow(150)
    hub = f"flt-{token}-hub"
    made: list[str] = []
    links: dict[str, str] = {}
    try:
        try:
            _ip("netns", "add", hub)
            made.append(hub)
            _ip("-n", hub, "link", "set", "lo", "up")
            for i, node in enumerate(NODES, start=1):
                ns = f"flt-{token}-{node[-1]}"
                _ip("netns", "add", ns)
                made.append(ns)
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("link", "add", f"fv{token}{i}h", "netns", hub, "type", "veth", "peer", "name", f"fv{token}{i}n",
                    "netns", ns)  # fmt: skip
                _ip("-n", hub, "addr", "add", f"10.{net}.{i}.1/24", "dev", f"fv{token}{i}h")
                _ip("-n", ns, "addr", "add", f"10.{net}.{i}.2/24", "dev", f"fv{token}{i}n")
                _ip("-n", hub, "link", "set", f"fv{token}{i}h", "up")
                _ip("-n", ns, "link", "set", f"fv{token}{i}n", "up")
                links[node] = ns
                links[f"{node}-hub"] = f"10.{net}.{i}.1"
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"cannot make network namespaces here: {exc}")
        links["hub"] = hub
        yield links
    finally:
        for name in reversed(made):  # deleting a namespace deletes its veth ends
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


class InNetns:
    """A ``python -m netspy_tui`` (or ``-c`` program) child in a namespace, its stderr in a file."""

    def __init__(self, ns: str, args: list[str], log: Path, env: dict[str, str], stdin: bool = False) -> None:
        self.log = log
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, *args], cwd=REPO, env=env,
                                     stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=log.open("w"), text=True)  # fmt: skip

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)


def wait(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            value = condition()
            if value:
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def get(ns: str, url: str, **params: Any) -> dict[str, Any]:
    """GET a JSON answer from inside namespace ``ns`` (its loopback is its own)."""
    headers = {"Authorization": f"Bearer {INGEST_TOKEN}"} if "/api/events/ingest" in url else {}
    result = in_netns(ns, lambda: httpx.get(url, params=params, headers=headers, timeout=10).json())
    assert isinstance(result, dict)
    return result


def test_three_namespaces_three_agents_one_aggregator(tmp_path: Path) -> None:
    children: list[InNetns] = []
    try:
        with lab() as links:
            hub = links["hub"]
            env = product_env(tmp_path)
            agg = InNetns(hub, ["-m", "netspy_tui", "serve", "--aggregate", "--host", "0.0.0.0", "--port",
                                str(AGG_PORT), "--ingest-token", INGEST_TOKEN], tmp_path / "agg.log", env)  # fmt: skip
            children.append(agg)
            agg_url = f"http://127.0.0.1:{AGG_PORT}"
            wait(lambda: get(hub, agg_url + "/health")["component"] == "aggregator", "the aggregator")
            for node in NODES:
                agent_env = {**env, "NODE_NAME": node, "NETSPY_FORWARD_TOKEN": INGEST_TOKEN}
                forward = f"http://{links[node + '-hub']}:{AGG_PORT}"
                children.append(InNetns(links[node], ["-m", "netspy_tui", "serve", "--collector", "procfs", "--port",
                                                      str(AGENT_PORT), "--forward", forward],
                                        tmp_path / f"{node}.log", agent_env))  # fmt: skip
            for node, n in NODES.items():  # each namespace's own traffic, once its agent answers
                wait(lambda ns=links[node]: get(ns, f"http://127.0.0.1:{AGENT_PORT}/health"), f"{node}'s agent")
                client = InNetns(links[node], ["-c", CLIENT, f"fleet-{node[-1]}", str(n)], tmp_path / f"c{node}.log",
                                 env, stdin=True)  # fmt: skip
                children.append(client)
                assert client.proc.stdout is not None and client.proc.stdout.readline().strip() == "ready"

            def own(node: str) -> int:
                url = f"http://127.0.0.1:{AGENT_PORT}/api/connection-summary"
                return int(get(links[node], url, command=f"fleet-{node[-1]}", duration_seconds=3600)["count"])

            def at_aggregator(command: str) -> dict[str, int]:
                url = agg_url + "/api/connection-summary"
                return dict(get(hub, url, command=command, duration_seconds=3600)["count_by_node"])

            def forwarded(node: str) -> dict[str, int] | None:
                """The aggregator's per-node counts of ``node``'s client, once its node's equals the agent's own."""
                by_node = at_aggregator(f"fleet-{node[-1]}")
                return by_node if by_node.get(node) == own(node) else None

            total = 0
            for node, n in NODES.items():
                wait(lambda node=node, n=n: own(node) == n, f"{node}'s agent counting its {n} connections")
                by_node = wait(lambda node=node: forwarded(node), f"the aggregator's count on {node}")
                for other in NODES:  # each namespace's traffic on its own node only
                    assert by_node.get(other, 0) == (n if other == node else 0), (node, other, by_node)
                total += own(node)
            fleet = get(hub, agg_url + "/api/connection-summary", duration_seconds=3600)
            clients = sum(fleet["count_by_node"][node] for node in NODES)
            assert clients >= total == sum(NODES.values())  # (the agents' own forwarding connections count too)
            assert fleet["count"] == sum(fleet["count_by_node"].values())
            stats = get(hub, agg_url + "/api/stats")
            assert set(stats["events_by_node"]) == set(NODES) and stats["connected_agents"] == 3
    finally:
        for child in reversed(children):
            child.stop()
    logs = "".join(p.read_text() for p in tmp_path.glob("*.log"))
    assert "Traceback" not in logs and INGEST_TOKEN not in logs
