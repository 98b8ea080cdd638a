"""The eBPF collector: tracepoint programs assembled and loaded from pure Python (no compiler,
no BCC, no libbpf). See :mod:`.collector` for the lifecycle and :mod:`.programs` for what the
kernel side does."""

from netspy_tui.collector.ebpf.collector import EbpfCollector

__all__ = ["EbpfCollector"]
