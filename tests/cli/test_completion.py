"""`netspy-tui --completion SHELL`: completion scripts generated from the parser (shtab), run in the shells."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

#: (command line typed so far, completions that must be offered, completions that must not)
CASES = [
    ("netspy-tui se", {"serve"}, set()),
    ("netspy-tui mcp --h", {"--http", "--host", "--help"}, set()),
    ("netspy-tui serve --", {"--port", "--db", "--log-file"}, {"--http", "--server", "--pid"}),
    ("netspy-tui --tool list_c", {"list_connections"}, set()),
    ("netspy-tui --completion ", {"bash", "zsh", "fish"}, set()),
]


def _script(run_cli, shell: str, tmp_path: Path) -> Path:
    out = run_cli("--completion", shell)
    assert out.returncode == 0, out.stderr
    path = tmp_path / f"netspy-tui.{shell}"
    path.write_text(out.stdout)
    return path


def test_bash_completion_completes_commands_flags_and_tools(run_cli, tmp_path: Path):
    script = _script(run_cli, "bash", tmp_path)
    for line, wanted, unwanted in CASES:
        probe = f"""
source {script}
fn=$(complete -p netspy-tui | sed -E 's/.* -F ([^ ]+) .*/\\1/')
line='{line}'
read -ra COMP_WORDS <<< "$line"
[[ "$line" == *' ' ]] && COMP_WORDS+=('')
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 )); COMP_LINE="$line"; COMP_POINT=${{#line}}
"$fn" netspy-tui "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
        done = subprocess.run(
            ["bash", "--norc", "--noprofile", "-c", probe], capture_output=True, text=True, timeout=30
        )
        offered = set(done.stdout.split())
        assert wanted <= offered and not unwanted & offered, (line, offered, done.stderr)


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_completion_completes_commands_flags_and_tools(run_cli, tmp_path: Path):
    script = _script(run_cli, "fish", tmp_path)
    for line, wanted, unwanted in CASES:
        done = subprocess.run(
            ["fish", "--no-config", "-c", f"source {script}; complete -C '{line}'"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        offered = {row.split("\t")[0] for row in done.stdout.splitlines()}
        assert wanted <= offered and not unwanted & offered, (line, offered, done.stderr)


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_completion_is_valid_and_knows_each_command(run_cli, tmp_path: Path):
    script = _script(run_cli, "zsh", tmp_path)
    text = script.read_text()
    assert text.startswith("#compdef netspy-tui")
    check = subprocess.run(["zsh", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    assert '"--http[' in text and '"--completion[' in text and "serve:" in text


def test_an_unknown_shell_is_one_line_exit_2(run_cli):
    out = run_cli("--completion", "powershell")
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "argument --completion: invalid choice: 'powershell'" in out.stderr


def test_the_readmes_install_lines_work_in_a_new_home(cli_env, tmp_path: Path):
    """Each line of the README's block, run by sh in a home where none of the directories exist yet."""
    repo = Path(__file__).resolve().parents[2]
    readme = (repo / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Shell completion", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    home, bin_dir = tmp_path / "home", tmp_path / "bin"
    home.mkdir()
    bin_dir.mkdir()
    shim = bin_dir / "netspy-tui"  # the command as installed: this checkout's
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m netspy_tui "$@"\n')
    shim.chmod(0o755)
    env = {**cli_env, "HOME": str(home), "PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHONPATH": str(repo)}
    for line in lines:
        done = subprocess.run(["sh", "-ec", line], capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, (line, done.stderr)
    written = {
        "bash": home / ".local/share/bash-completion/completions/netspy-tui",
        "zsh": home / ".local/share/zsh/site-functions/_netspy-tui",
        "fish": home / ".config/fish/completions/netspy-tui.fish",
    }
    for shell, path in written.items():
        assert "netspy-tui" in path.read_text(), shell
