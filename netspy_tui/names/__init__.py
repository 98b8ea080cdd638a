"""Names for what the kernel reports as numbers: destination addresses (reverse DNS and
``/etc/hosts``), ports (the system's services database) and processes' cgroups (container,
systemd unit, Kubernetes pod or the host).

Nothing here blocks a caller on the network: :class:`~netspy_tui.names.resolver.NameResolver`
answers from its cache at once and resolves misses in its own thread, bounded in concurrency and
time. Names are untrusted text (they come off the network or the filesystem): render them as
plain text like every other field.
"""

from netspy_tui.names.resolver import NameResolver, ResolverStats
from netspy_tui.names.services import service_name
from netspy_tui.names.workload import Workload, WorkloadResolver, classify_cgroup

__all__ = [
    "NameResolver",
    "ResolverStats",
    "Workload",
    "WorkloadResolver",
    "classify_cgroup",
    "service_name",
]
