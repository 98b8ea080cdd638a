"""The connection limits of ``serve`` and ``mcp --http`` (enforced by netspy_tui.serve.connections).

A module of its own, importing nothing, so ``--help`` can quote them without loading the server.
"""

from __future__ import annotations

REQUEST_TIMEOUT = 10.0
KEEP_ALIVE_TIMEOUT = 5
MAX_CONNECTIONS = 100
MAX_HEADER_BYTES = 16 * 1024
#: a request body larger is answered 413 (serve and mcp --http)
MAX_BODY_BYTES = 1 << 20
#: the same for ``serve --aggregate``, whose agents post batches of up to 5,000 events
MAX_INGEST_BODY_BYTES = 16 << 20

LIMITS_HELP = (
    f"Limits (serve, mcp --http): a request (headers and body) must arrive within {REQUEST_TIMEOUT:g} s of "
    f"connecting or of its first byte; idle kept-alive connections close after {KEEP_ALIVE_TIMEOUT} s; "
    f"at most {MAX_CONNECTIONS} connections are open at once (more are answered 503 and closed); "
    f"a request head still unfinished after {MAX_HEADER_BYTES // 1024} KiB is a 400; a body over "
    f"{MAX_BODY_BYTES >> 20} MiB is a 413 ({MAX_INGEST_BODY_BYTES >> 20} MiB with serve --aggregate). Host and "
    "Origin must name the bound address (or localhost when bound to loopback) or an --allow-host name, on every path."
)
