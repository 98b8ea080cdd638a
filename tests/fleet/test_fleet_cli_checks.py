"""What ``serve`` (and ``serve --aggregate``) refuses at start, as a user meets it: one line, exit 2."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.hardening.conftest import Cli, assert_one_line_error, cli  # noqa: F401 (fixtures)


@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "1e999"])
def test_a_forward_interval_that_never_comes_round_is_refused(cli: Cli, value: str) -> None:  # noqa: F811
    run = cli("serve", "--forward", "http://127.0.0.1:9/", f"--forward-interval={value}")
    line = assert_one_line_error(run, 2)
    assert "--forward-interval" in line and ("finite" in line or "greater than 0" in line)


@pytest.mark.parametrize(
    "args",
    [
        ("--forward-token", "t"),
        ("--forward-interval", "3"),
        ("--aggregate", "--forward-token", "t"),
        ("--aggregate", "--forward-interval", "3"),
    ],
)
def test_forwarding_flags_without_forward_are_refused(cli: Cli, args: tuple[str, ...]) -> None:  # noqa: F811
    line = assert_one_line_error(cli("serve", *args), 2)
    assert f"{args[-2]} applies to serve --forward only" in line


@pytest.mark.parametrize(
    ("var", "args"),
    [
        ("NETSPY_TOKEN", ("serve", "--aggregate", "--host", "0.0.0.0", "--ingest-token", "I")),
        ("NETSPY_TOKEN", ("serve", "--replay", "tests/data/demo.jsonl", "--host", "0.0.0.0")),
        ("NETSPY_TOKEN", ("serve", "--replay", "tests/data/demo.jsonl")),
        ("NETSPY_INGEST_TOKEN", ("serve", "--aggregate")),
        ("NETSPY_FORWARD_TOKEN", ("serve", "--replay", "tests/data/demo.jsonl", "--forward", "http://127.0.0.1:9")),
    ],
)
@pytest.mark.parametrize("empty", ["", "  "])
def test_a_token_variable_set_but_empty_is_refused_at_start(
    cli: Cli,  # noqa: F811
    var: str,
    args: tuple[str, ...],
    empty: str,
) -> None:
    """An unfilled Secret (aggregator.yaml's tokens) must not serve reads unauthenticated with a warning."""
    line = assert_one_line_error(cli(*args, "--port", "1", env={var: empty}, timeout=20), 2)
    assert f"{var} is set but empty" in line


def _aggregate_db(cli: Cli, db: str) -> str:  # noqa: F811
    return assert_one_line_error(cli("serve", "--aggregate", "--port", "1", "--db", db, timeout=30), 2)


def test_an_aggregator_store_it_could_not_write_is_refused_at_start(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    """Each of these served (healthy) and answered every ingest 503, or ended in 'unexpected error', rc 1."""
    assert "/proc/x cannot be made or written: No such file or directory" in _aggregate_db(cli, "/proc/x")
    (tmp_path / "afile").write_text("")
    assert f"{tmp_path / 'afile'} is not a directory" in _aggregate_db(cli, str(tmp_path / "afile" / "sub"))
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)  # (root: a parent others can write is refused, as for every store root makes)
    line = _aggregate_db(cli, str(shared / "fleet"))
    assert f"{shared} is writable by other users" in line and "--db" in line


@pytest.mark.root  # (mounts a read-only tmpfs)
def test_an_aggregator_store_on_a_read_only_filesystem_is_refused_at_start(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    readonly = tmp_path / "ro"
    readonly.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m,mode=0700", "tmpfs", str(readonly)],
                             capture_output=True, check=False)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        for db in (readonly, readonly / "fleet"):
            assert "cannot be made or written: Read-only file system" in _aggregate_db(cli, str(db))
    finally:
        subprocess.run(["umount", str(readonly)], check=True)
