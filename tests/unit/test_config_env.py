"""Settings from the environment and the config file as a user writes them (an audit's): a blank variable counts
as unset (it exported into a directory named " ", and an error blamed "default"); the documented upper-case name
wins over another case whatever their order; ``~`` in a path is the home directory (``record = "~/rec.jsonl"``
made ``./~/``); a NUL in a path is a setting's one-line error, not "unexpected error"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from netspy_tui import config
from netspy_tui.errors import UsageError


def _load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, file_text: str = "", **env: str) -> config.Settings:
    for key in list(os.environ):
        if key.upper().startswith(("NETSPY_", "OPENAI_")):
            monkeypatch.delenv(key)
    path = tmp_path / "config.toml"
    path.write_text(file_text)
    path.chmod(0o600)
    monkeypatch.setenv("NETSPY_CONFIG", str(path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return config.load_settings({})[0]


def test_a_blank_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = _load(monkeypatch, tmp_path, NETSPY_EXPORT_DIR=" ", NETSPY_TIMEOUT=" ", NETSPY_DB="\t")
    assert settings.export_dir is None and settings.timeout == config.Settings().timeout and settings.db is None


def test_the_documented_name_wins_over_another_case_in_either_order(tmp_path: Path) -> None:
    code = "from netspy_tui import config; print(config.load_settings({})[0].model)"
    for order in (("NETSPY_MODEL", "netspy_model"), ("netspy_model", "NETSPY_MODEL")):
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("NETSPY_", "OPENAI_"))}
        env["NETSPY_CONFIG"] = str(tmp_path / "none.toml")
        ordered = {order[0]: "upper" if order[0].isupper() else "lower", order[1]: "upper" if order[1].isupper()
                   else "lower"}  # fmt: skip
        out = subprocess.run([sys.executable, "-c", code], env={**env, **ordered}, capture_output=True, text=True,
                             check=True)  # fmt: skip
        assert out.stdout.strip() == "upper", order


def test_a_home_path_is_expanded_and_a_nul_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = _load(monkeypatch, tmp_path, 'record = "~/rec.jsonl"\nexport_dir = "~/exports"\n')
    home = tmp_path / "home"
    assert settings.record == home / "rec.jsonl" and settings.export_dir == home / "exports"
    with pytest.raises(UsageError) as refused:
        _load(monkeypatch, tmp_path, 'db = "/tmp/a\\u0000b"\n')
    assert "invalid setting db: must not hold a NUL character (file " in str(refused.value)
