"""An ebpf-server-compatible HTTP API over any TelemetrySource (``netspy-tui serve``)."""

from netspy_tui.serve.app import create_app, event_json
from netspy_tui.serve.runner import BackgroundServer, create_mcp_app, serve, serve_async, serve_mcp_http, serve_source

__all__ = [
    "BackgroundServer",
    "create_app",
    "create_mcp_app",
    "event_json",
    "serve",
    "serve_async",
    "serve_mcp_http",
    "serve_source",
]
