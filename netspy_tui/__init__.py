"""netspy-tui: a live terminal dashboard for network-connection telemetry."""

__version__ = "0.1.0"
