"""Telemetry sources: the eBPF server over HTTP, or the embedded collector and store."""
