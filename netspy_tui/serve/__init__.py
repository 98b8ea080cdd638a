"""An ebpf-server-compatible HTTP API over any TelemetrySource (``netspy-tui serve``)."""

from netspy_tui.serve.app import create_app, event_json
from netspy_tui.serve.runner import BackgroundServer, serve, serve_async, serve_source

__all__ = ["BackgroundServer", "create_app", "event_json", "serve", "serve_async", "serve_source"]
