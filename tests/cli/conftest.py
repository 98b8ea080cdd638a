from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli_env(tmp_path) -> dict[str, str]:
    """An environment with no ambient netspy/OpenAI settings and private config/state dirs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NETSPY_", "OPENAI_"))}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    env["NETSPY_CONFIG"] = str(tmp_path / "config" / "none.toml")
    return env


@pytest.fixture
def run_cli(cli_env) -> Run:
    """Run `python -m netspy_tui ARGS` as a user would, with a bounded time."""

    def run(
        *args: str, input: str | None = None, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "netspy_tui", *args],
            input=input,
            capture_output=True,
            text=True,
            env={**cli_env, **(env or {})},
            timeout=timeout,
        )

    return run
