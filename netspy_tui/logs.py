"""Logging: stderr for the CLI and MCP stdio (stdout is output or protocol), a file for the TUI.

A filter masks every secret we know of (OPENAI_API_KEY, bearer tokens) in every record, so even
``--verbose`` debug logs of third-party libraries cannot leak them.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

_SECRET_ENV = ("OPENAI_API_KEY", "NETSPY_TOKEN")


class SecretMask(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        masked = message
        for secret in self.secrets:
            masked = masked.replace(secret, "****")
        if masked != message:
            record.msg, record.args = masked, None
        return True


def setup_logging(verbose: bool = False, *, log_file: Path | None = None, extra_secrets: list[str] | None = None
                  ) -> None:
    """Configure the root logger once: WARNING (or DEBUG with ``verbose``) to stderr or ``log_file``."""
    secrets = [os.environ.get(name, "") for name in _SECRET_ENV] + list(extra_secrets or [])
    handler: logging.Handler
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretMask(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    # Chatty libraries stay at INFO even with --verbose; their DEBUG output includes request internals.
    for name in ("httpcore", "httpx2", "hpack", "asyncio", "markdown_it"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
