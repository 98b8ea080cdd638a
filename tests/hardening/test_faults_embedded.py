"""The embedded collector and store under loss: ring-buffer overflow and a disk that fills up.

Behaviour (decided by telemetry/embedded.py and store/sqlite.py, documented here): when the store
cannot write (disk full, file gone read-only) collection goes on; the events of a batch that could
not be written are dropped and counted as lost, never raised into the collector thread. The loss
is visible everywhere the source is described — ``server_status`` ("not kept: N"), the dashboard header
("lost N events"), ``/health`` of ``serve`` (503 while a write failed in the last minute) — and
writing resumes by itself as soon as there is space again. Nothing falls back to memory: a store
that silently stopped being durable would be worse than an honest count of what was lost.

Covered elsewhere: a closed store counted, not raised (tests/store/test_embedded.py), disk full at the
store level (tests/store/test_store.py::test_disk_full_raises_to_the_caller_and_the_store_keeps_working),
a failing sink counted by the replay collector (tests/collector/test_replay.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from netspy_tui.collector.base import Collector, Sink
from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.models import ConnectionEvent, Scope, utcnow
from netspy_tui.serve import create_app
from netspy_tui.store.sqlite import EventStore
from netspy_tui.telemetry.embedded import EmbeddedSource
from netspy_tui.tui.app import NetspyApp
from tests.hardening.conftest import DEMO, Cli, assert_one_line_error, wait_until
from tests.tui.scenes import wait_for

SIZE = (160, 45)


class SteadyCollector(Collector):
    """Hands ``batch`` fresh connection events to the sink every ``period`` seconds, on its own thread.

    ``overflow`` records are reported lost per batch, as the eBPF collector counts ring-buffer
    records the kernel could not queue (``stats.lost``).
    """

    name = "steady"
    label = "steady test collector"

    def __init__(self, batch: int = 20, period: float = 0.02, overflow: int = 0) -> None:
        super().__init__()
        self.batch, self.period, self.overflow = batch, period, overflow
        self._stop.set()
        self._thread: threading.Thread | None = None
        self._n = 0

    def start(self, sink: Sink) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(sink,), daemon=True)
        self._thread.start()

    def _run(self, sink: Sink) -> None:
        while not self._stop.wait(self.period):
            events = []
            for _ in range(self.batch):
                self._n += 1
                events.append(
                    ConnectionEvent.model_construct(
                        id=f"{self._n:016x}",
                        pid=4000 + self._n % 5,
                        command="steady",
                        timestamp=self._n,
                        time=utcnow(),
                        destination_ip="10.0.0.1",
                        destination_port=443,
                        destination="10.0.0.1:443",
                        address_family=2,
                        protocol="TCP",
                        socket_type="STREAM",
                        return_code=0,
                        raw_ipv4=0,
                        raw_ipv6=[0] * 16,
                        raw_protocol=6,
                        raw_socktype=1,
                        source=self.name,
                        outcome="ok",
                    )
                )
            sink(events)
            self.stats.events += len(events)
            self.stats.lost += self.overflow

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def header(app: NetspyApp) -> str:
    return app.dashboard.status.build().plain


async def test_ring_buffer_overflow_is_counted_and_shown() -> None:
    collector = SteadyCollector(batch=10, period=0.05, overflow=3)
    source = EmbeddedSource(collector, EventStore(), reason="test collector")
    await source.start()
    try:
        async with open_gateway(source) as gateway:
            info = await source.info()
            assert info.healthy  # loss before the store is reported, not treated as a failure
            deadline = asyncio.get_running_loop().time() + 10
            while (status := await gateway.status()).source.events_lost == 0:  # the collector's first batch
                assert asyncio.get_running_loop().time() < deadline, "no batch in 10 s"
                await asyncio.sleep(0.01)
            lost, seen = status.source.events_lost, status.source.events_seen
            assert lost > 0 and abs(lost - 3 * seen // 10) <= 3  # 3 per batch of 10 (read while it runs)
            assert f"not kept: {lost:,}" in status.text
            assert "raw events lost (kernel ring buffer full)" in status.text
            app = NetspyApp(gateway, interval=0.1)
            async with app.run_test(size=SIZE) as pilot:
                shown = "raw events lost (kernel ring buffer full)"
                await wait_for(pilot, lambda: shown in header(app), "lost events in the header")
                assert int(header(app).split(shown)[0].split()[-1].replace(",", "")) >= lost
                await wait_for(pilot, lambda: f"lost {shown} events" not in header(app), "the count keeps up")
    finally:
        await source.aclose()


@contextlib.contextmanager
def tiny_filesystem(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path) -> None:
    """Take every free byte of the filesystem, as another program would."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
        try:
            while True:
                os.write(fd, b"\0" * 512)
        except OSError:
            pass
    finally:
        os.close(fd)


@pytest.mark.root
async def test_disk_full_mid_session_counts_loss_keeps_collecting_and_recovers(tmp_path: Path) -> None:
    with tiny_filesystem(tmp_path / "tiny", "8m") as mount:
        collector = SteadyCollector(batch=10, period=0.02)
        store = await asyncio.to_thread(EventStore, mount / "events.db", retention_seconds=None)
        source = EmbeddedSource(collector, store, reason="test collector")
        await source.start()
        try:
            await asyncio.to_thread(wait_until, lambda: store.row_count() >= 100, "first rows stored")
            await asyncio.to_thread(fill, mount / "filler")
            # the raw events are lost, their counts held in memory for the next write (written once there is room)
            unstored = lambda: store.totals.get("unstored", 0)  # noqa: E731
            await asyncio.to_thread(wait_until, lambda: unstored() >= 100, "losses counted")
            info = await source.info()
            assert not info.healthy and info.losses["unstored"] >= 100 and source.store_sink.lost == 0
            full = f"store: cannot write to the event store {mount / 'events.db'}: database or disk is full"
            assert full in info.detail and "are held in memory until the store takes them" in info.detail
            seen = info.events_seen
            stored = await asyncio.to_thread(store.row_count)
            # still collecting, still answering from what was stored
            await asyncio.to_thread(wait_until, lambda: collector.stats.events > seen + 100, "collecting")
            assert collector.running
            transport = httpx.ASGITransport(app=create_app(source))
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
                health = await http.get("/health")
                assert health.status_code == 503 and full in health.json()["detail"]
                events = await http.get("/api/events", params={"limit": 5})
                assert events.status_code == 200 and events.json()["total_count"] == stored
            async with open_gateway(source) as gateway:
                status = await gateway.status()
                assert "(unhealthy)" in status.text and "database or disk is full" in status.text
                app = NetspyApp(gateway, interval=0.1)
                async with app.run_test(size=SIZE) as pilot:
                    await wait_for(pilot, lambda: "not stored (store write failed; their counts kept)" in header(app)
                                   and "unhealthy" in header(app), "header")  # fmt: skip
                    assert app.dashboard.connections.row_count > 0
            # space comes back: writing resumes without a restart, the loss stops growing
            await asyncio.to_thread(os.remove, mount / "filler")
            await asyncio.to_thread(wait_until, lambda: store.row_count() > stored + 100, "writes resume")
            lost = unstored()
            await asyncio.to_thread(wait_until, lambda: store.row_count() > stored + 300, "more writes")
            assert unstored() == lost and "store_error" not in store.totals  # (every count was written)
            assert (await source.info()).healthy
            assert (await source.info()).events_seen == collector.stats.events
        finally:
            await source.aclose()
        # every connect the collector saw is counted in the file: none was lost to the full disk
        with EventStore(mount / "events.db", readonly=True) as kept:
            assert kept.count(Scope("connection", None, None, 3600)) == collector.stats.events


@pytest.mark.root
def test_a_full_disk_at_start_is_one_line(cli: Cli, tmp_path: Path) -> None:
    with tiny_filesystem(tmp_path / "full", "64k") as mount:
        run = cli("serve", "--replay", str(DEMO), "--db", str(mount / "events.db"), "--port", "1")
    line = assert_one_line_error(run, 2)
    assert f"cannot open the event store {mount / 'events.db'}: database or disk is full" in line
    assert line.endswith("Free disk space or choose another store file.")
