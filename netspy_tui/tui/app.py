"""NetspyApp: the full-screen dashboard. Owns the one poll worker and routes its messages.

Launch with :func:`run_dashboard` (the CLI does). Everything on screen is read through the
:class:`~netspy_tui.mcp_tools.gateway.Gateway` by :class:`~netspy_tui.tui.poller.Poller`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import App, SystemCommand
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from netspy_tui.errors import NetspyError, UsageError, sole_exception, user_error
from netspy_tui.mcp_tools.gateway import Gateway, StartingGateway
from netspy_tui.memory import Trimmer, fix_mmap_threshold
from netspy_tui.models import utcnow
from netspy_tui.textsafe import clean, first_line, markup_literal
from netspy_tui.tui import keys
from netspy_tui.tui.messages import PollFailed, SnapshotReady
from netspy_tui.tui.poller import Poller, backoff
from netspy_tui.tui.screens.dashboard import DashboardScreen
from netspy_tui.tui.widgets.status import Failure

if TYPE_CHECKING:  # the AI layer loads after the first frame (see DashboardScreen.ai)
    from netspy_tui.tui.screens.dashboard import AISource

log = logging.getLogger(__name__)

__all__ = ["Connect", "NetspyApp", "run_dashboard"]

#: ``connect(progress)``: opens the source and the MCP pair (saying what it is starting through
#: ``progress``) and yields the gateway and the source's note for the header; closes them on exit.
Connect = Callable[[Callable[[str], None]], AbstractAsyncContextManager[tuple[Gateway, str]]]


#: allocations between the cyclic collector's young passes once the dashboard runs (Python's default: 700). At 100
#: events/s a pass every 5,000 came several times a refresh, each walking what the refresh still held (new rows,
#: cells, the frame's strips), and every tenth pass all the survivors again: ~7 ms a second of collecting, ~2 now.
YOUNG_THRESHOLD = 30_000


def freeze_heap() -> None:
    """The cyclic collector stops walking what exists now (the modules, the screen, its widgets and styles, the
    first window's rows); reference counting still frees each of them when it goes. With ~230,000 such objects
    each full pass took 0.1-0.2 s, a frame's worth of delay at every few refreshes or keys (profiled: a refresh,
    a focus, a tab switch). The young passes come every YOUNG_THRESHOLD allocations instead of 700: a frame
    allocates thousands of short-lived objects (Textual's strips, seven caches each), and each pass walked the
    live ones among them again (~3 ms a key; fewer passes, fewer objects kept to be walked again by the older
    generation's). Cyclic garbage alive at this moment is never collected: it is
    called once, on the first data."""
    gc.collect(1)  # (the recent garbage first, so little of it is kept for good)
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def _describe(exc: BaseException) -> str:
    if isinstance(exc, NetspyError):
        return str(exc)
    return f"{type(exc).__name__}: {first_line(exc) or 'no details'}"


class NetspyApp(App[int]):
    """Live network-connection dashboard."""

    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "netspy-tui"

    def __init__(
        self,
        gateway: Gateway,
        *,
        interval: float = 1.0,
        window: int = 60,
        source_note: str = "",
        clock: Callable[[], datetime] = utcnow,
        ai: AISource | None = None,
        max_rows: int = 2000,
        export_dir: Path | None = None,
        ai_label: str | None = None,
        freeze_heap: bool = False,
    ) -> None:
        """``freeze_heap``: once the first data is on screen, leave what the process built so far to reference
        counting (:func:`freeze_heap`); for a process that runs one dashboard (the CLI's), not for one that
        opens many (tests)."""
        super().__init__()
        if "TEXTUAL_ANIMATIONS" not in os.environ:
            # A monitor draws what changed, once: no sliding tab underline (~20 frames after each tab switch,
            # half the CPU a switch costs) and no smooth scrolls. TEXTUAL_ANIMATIONS=full brings them back.
            self.animation_level = "none"
        self.gateway = gateway
        self._freeze_heap = freeze_heap
        self.interval = interval
        self.clock = clock
        self.poller = Poller(gateway, clock=clock, window=window, interval=interval, max_rows=max_rows)
        self.dashboard = DashboardScreen(
            gateway,
            self.poller,
            clock=clock,
            window=window,
            source_note=source_note,
            ai=ai,
            export_dir=export_dir,
            ai_label=ai_label,
        )
        self.export_dir = export_dir
        self._trim = Trimmer(60.0)
        fix_mmap_threshold()  # refreshes free big arrays of cells: keep them off the heap
        self.polls = 0
        """Polls that succeeded (for tests and the status line)."""
        self.starting = ""
        """What is still starting (the header says so until the first data); see :meth:`show_starting`."""
        self.painted = asyncio.Event()
        """Set once the first frame is on screen: the :class:`Backend` starts loading after it."""
        self.notice = ""
        """A warning from the start shown as a toast once mounted (see :func:`run_dashboard`)."""

    def set_gateway(self, gateway: Gateway) -> None:
        """Read from another gateway from the next poll on (e.g. one opened after the app started)."""
        self.gateway = gateway
        self.poller.gateway = gateway
        self.dashboard.gateway = gateway
        if self.is_running:
            self.follow_changes()

    def get_default_screen(self) -> Screen[Any]:
        return self.dashboard

    def show_starting(self, what: str) -> None:
        """Say in the header what is still starting ("" once everything is up)."""
        self.starting = what
        self.dashboard.starting = what  # (not composed yet: the status bar starts with it)
        with contextlib.suppress(NoMatches):
            self.dashboard.status.show_starting(what)

    def show_source_note(self, note: str) -> None:
        self.dashboard.source_note = note
        with contextlib.suppress(NoMatches):
            status = self.dashboard.status
            status.source_note = note
            status.redraw()

    def on_mount(self) -> None:
        self.call_after_refresh(self.painted.set)
        if self.notice:
            self.notify(self.notice, title="Log", severity="warning", timeout=30, markup=False)
        if self.gateway is not None:  # else set_gateway() comes later, then poll_loop()
            self.poll_loop()
            self.follow_changes()

    @work(group="changes", exclusive=True, exit_on_error=False)
    async def follow_changes(self) -> None:
        """Push, don't poll: while the server notifies new telemetry, the poll loop fetches only after a change
        (see :meth:`Poller.next_poll`); without notifications, or once they stop, it polls every interval."""
        poller = self.poller
        try:
            async with self.gateway.changes() as changes:
                if changes is None:
                    log.info("the server does not notify changes: polling every %.1fs", self.interval)
                    return
                poller.following = True
                self._show_pushed(True)
                log.info("following the server's change notifications")
                async for _ in changes:
                    poller.changed.set()
                log.warning("the server stopped notifying changes: polling every %.1fs", self.interval)
        except NetspyError as exc:  # the gateway did not start: the poll loop says why
            log.debug("no change notifications: %s", exc)
        except (RuntimeError, OSError) as exc:  # the stream was lost (SubscriptionLost): back to the timer
            log.warning("change notifications stopped (%s): polling every %.1fs", _describe(exc), self.interval)
        finally:
            poller.following = False
            self._show_pushed(False)
            poller.wake.set()

    def _show_pushed(self, pushed: bool) -> None:
        with contextlib.suppress(NoMatches):  # (not composed yet: the status bar starts from the poller)
            status = self.dashboard.status
            status.pushed = pushed
            status.redraw()

    @work(group="poll", exclusive=True, exit_on_error=False)
    async def poll_loop(self) -> None:
        """Fetch, post a frozen snapshot, sleep the rest of the interval; back off while polls fail."""
        failures = 0
        stale_since: datetime | None = None
        while True:
            started = time.monotonic()
            try:
                snapshot = await self.poller.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                stale_since = stale_since or self.clock()
                delay = backoff(self.interval, failures)
                log.warning(
                    "poll failed (attempt %d, retry in %.1fs): %s",
                    failures,
                    delay,
                    _describe(exc),
                    exc_info=not isinstance(exc, NetspyError),
                )
                self.post_message(
                    PollFailed(
                        _describe(exc),
                        stale_since=stale_since,
                        retry_at=self.clock() + timedelta(seconds=delay),
                        attempt=failures,
                    )
                )
                await self.poller.sleep(delay)
                continue
            if failures:
                log.info("poll recovered after %d failures", failures)
            failures, stale_since = 0, None
            self.post_message(SnapshotReady(snapshot))
            await self.poller.next_poll(self.interval - (time.monotonic() - started))

    @on(SnapshotReady)
    def _snapshot_ready(self, message: SnapshotReady) -> None:
        self.polls += 1
        self.dashboard.apply_snapshot(message.snapshot)
        self.call_after_refresh(self._trim)  # (what the refresh freed, at most once a minute)
        if self._freeze_heap and self.dashboard.renders:
            if self._freeze_asked:  # (the screen was never idle since the last snapshot, a busy host: now)
                self._freeze_once()
            else:  # (once the frame that shows the first data is drawn and the screen is idle)
                self._freeze_asked = True
                self.call_after_refresh(self._freeze_once)

    _freeze_asked = False

    def _freeze_once(self) -> None:
        if self._freeze_heap:
            self._freeze_heap = False
            freeze_heap()

    @on(PollFailed)
    def _poll_failed(self, message: PollFailed) -> None:
        self.dashboard.show_failure(Failure(message.error, message.stale_since, message.retry_at, message.attempt))

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            log.error("worker %s failed", event.worker.name, exc_info=event.worker.error)
            self.notify(
                _describe(event.worker.error), title=f"{event.worker.name} failed", severity="error", markup=False
            )

    def action_screenshot(self, filename: str | None = None, path: str | None = None) -> None:
        """Save an SVG of the screen into the export directory (Textual's own saves into ~/Downloads, which a
        server rarely has, and fails without saying why); the toast says where, or why not."""
        from netspy_tui import export

        svg = self.export_screenshot()
        stem = filename.removesuffix(".svg") if filename else f"netspy-screenshot-{export.stamp_of(self.clock())}"
        self._save_screenshot(Path(path) if path else export.export_dir(self.export_dir), stem, svg)

    @work(group="screenshot", exit_on_error=False)
    async def _save_screenshot(self, directory: Path, stem: str, svg: str) -> None:
        from netspy_tui import export

        try:
            saved = await export.save_text_async(directory, stem, ".svg", svg)
        except (OSError, UsageError) as exc:  # (UsageError: safefs refused the directory)
            self.notify(f"Screenshot not saved: {exc}", title="Screenshot", severity="error", markup=False)
            return
        self.notify(f"Saved screenshot to {saved}", title="Screenshot", markup=False)

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        for command in super().get_system_commands(screen):
            if command.title == "Screenshot":  # ours: into the export directory, saying where or why not
                yield SystemCommand(
                    "Screenshot",
                    "Save an SVG 'screenshot' of the screen to the export directory",
                    lambda: self.set_timer(0.1, self.action_screenshot),
                )
            else:
                yield command
        if not isinstance(screen, DashboardScreen):
            return
        for action in keys.ACTIONS:
            if action.palette and action.id != "netspy.quit":
                yield SystemCommand(
                    action.palette_title, f"key: {action.display_keys}", partial(screen.run_action, action.action)
                )
        for name in screen.palette_processes():
            # the palette parses titles as markup (its fuzzy highlighter): every bracket of a process name is escaped
            yield SystemCommand(
                f"focus: {markup_literal(clean(name, 32))}",
                "Focus every panel on this process",
                partial(screen.focus_process, name),
                discover=False,
            )


class Backend:
    """The source and the MCP pair, opened beside the app so that the frame paints first, closed after it.

    :attr:`gateway` stands in for the real gateway until it is up: what needs it (the first poll, an AI
    request, a command) waits for it; keys that need nothing else are answered at once. If the source or
    the gateway cannot open, the app exits and :meth:`stop` raises the reason.
    """

    def __init__(self, connect: Connect) -> None:
        self.connect = connect
        self.gateway = StartingGateway()
        self._done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None

    def start(self, app: NetspyApp) -> None:
        self._task = asyncio.create_task(self._run(app), name="netspy-backend")

    async def _run(self, app: NetspyApp) -> None:
        # Paint first: what the backend imports and builds (the SDK, the server's tools) takes the interpreter
        # for a second; started before the frame, it would share the CPU (and the GIL) with drawing it.
        await app.painted.wait()
        try:
            async with self.connect(app.show_starting) as (gateway, note):
                self.gateway.attach(gateway)
                app.set_gateway(gateway)
                app.show_source_note(note)
                app.show_starting("")
                await self._done.wait()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            inner = sole_exception(exc)
            log.debug("the data source or the MCP gateway did not start", exc_info=inner)
            self._failure = inner
            self.gateway.fail(user_error(exc) or NetspyError(_describe(inner)))
            app.exit(1, return_code=1)

    async def stop(self) -> None:
        """Close what was opened (stop opening if the user quit first); raise why it failed to open, if it did."""
        self._done.set()
        if self._task is not None:
            if not self.gateway.ready:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._failure is not None:
            raise self._failure


async def run_dashboard(
    connect: Connect,
    *,
    starting: str = "the MCP gateway",
    interval: float = 1.0,
    window: int = 60,
    clock: Callable[[], datetime] = utcnow,
    ai: AISource | None = None,
    max_rows: int = 2000,
    export_dir: Path | None = None,
    ai_label: str | None = None,
    notice: str = "",
) -> int:
    """Run the dashboard until the user quits; returns the exit code.

    Paint first: the frame is drawn, its header saying ``starting``, while ``connect`` opens the source
    and the MCP pair beside the app (see :class:`Backend`). ``notice``: a warning from the start (e.g. no log
    file, and why) shown as a toast once the frame is up."""
    backend = Backend(connect)
    app = NetspyApp(
        backend.gateway,
        interval=interval,
        window=window,
        clock=clock,
        ai=ai,
        max_rows=max_rows,
        export_dir=export_dir,
        ai_label=ai_label,
        freeze_heap=True,
    )
    app.show_starting(starting)
    app.notice = notice
    backend.start(app)
    try:
        result = await app.run_async()
    finally:
        await backend.stop()
    return result if isinstance(result, int) else (app.return_code or 0)
