"""A network namespace of a test's own (``ip netns add``, loopback up, perhaps routes), removed at the end."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence

import pytest


@contextlib.contextmanager
def own_namespace(prefix: str, setup: Sequence[Sequence[str]] = (), required: bool = True) -> Iterator[str]:
    """A new network namespace named ``prefix`` and a random tail, its loopback up and each of ``setup`` run in it
    (``ip -n NS`` arguments), deleted at the end. Without iproute2 the test fails (``required``) or is skipped."""
    if shutil.which("ip") is None:
        (pytest.fail if required else pytest.skip)("iproute2 (ip) is needed for the test's network namespace")
    ns = f"{prefix}{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True, timeout=10)
    assert made.returncode == 0, made.stderr
    try:
        for args in (["link", "set", "lo", "up"], *setup):
            done = subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True, timeout=10)
            assert done.returncode == 0, (args, done.stderr)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
