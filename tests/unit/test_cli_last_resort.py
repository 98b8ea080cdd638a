"""main()'s last resort: whatever escapes a command — a task group's ExceptionGroup, a bug — is one line."""

from __future__ import annotations

from typing import Any

import pytest

from netspy_tui import cli
from netspy_tui.errors import UsageError

pytestmark = pytest.mark.quiet


@pytest.mark.parametrize(
    ("raised", "code", "line"),
    [
        (
            ExceptionGroup("tg", [ExceptionGroup("inner", [UsageError("bad value", "fix it")])]),
            2,
            "netspy-tui: bad value. Fix it.\n",
        ),
        (
            RuntimeError("boom"),
            1,
            "netspy-tui: unexpected error (RuntimeError: boom); run again with --verbose for the details\n",
        ),
        (ExceptionGroup("tg", [KeyError("k")]), 1, "netspy-tui: unexpected error (KeyError: 'k');"),
    ],
)
def test_anything_escaping_a_command_is_one_line(monkeypatch, capsys, tmp_path, raised, code, line):
    monkeypatch.setenv("NETSPY_CONFIG", str(tmp_path / "none.toml"))

    async def run(ns: Any, settings: Any) -> int:
        raise raised

    monkeypatch.setattr(cli, "_run_repl", run)
    assert cli.main(["repl"]) == code
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("\n") == 1 and "Traceback" not in err
