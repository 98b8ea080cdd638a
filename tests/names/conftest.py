"""The command-line fixtures (tests/cli/conftest.py) for the names tests that run the CLI."""

from tests.cli.conftest import cli_env, run_cli  # noqa: F401
