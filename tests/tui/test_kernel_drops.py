"""A packet drop in kernel context (pid 0, shown as "(kernel)") has no process: its comm is whatever task the CPU
ran then (swapper/1 and the like). enter on its row focused that task, showing its drops only and hiding the other
"(kernel)" rows (an audit's); it says there is no process to focus."""

from __future__ import annotations

from datetime import timedelta

from netspy_tui.mcp_tools.gateway import open_gateway
from netspy_tui.telemetry.memory import MemorySource
from netspy_tui.tui.app import NetspyApp
from tests.factories import drop
from tests.tui.conftest import Clock, wait_for
from tests.tui.demo_data import DEMO_NOW


async def test_enter_on_a_kernel_context_drop_says_there_is_no_process_to_focus() -> None:
    events = [drop(pid=0, command=f"swapper/{i % 2}", time=DEMO_NOW - timedelta(seconds=5 - i)) for i in range(4)]
    async with open_gateway(MemorySource(events, clock=Clock())) as gateway:
        app = NetspyApp(gateway, interval=0.2, clock=Clock(), window=60)
        async with app.run_test(size=(120, 35)) as pilot:
            screen = app.dashboard
            await pilot.press("d")
            await wait_for(pilot, lambda: screen.drops.row_count == 4, "the four drops")
            screen.drops.focus()
            await pilot.press("enter")
            said = "This drop was in kernel context: no process to focus (filter by its reason or destination with / "
            await wait_for(pilot, lambda: any(said in str(n.message) for n in app._notifications), "the notification")
            assert screen.focus_subject is None and screen.drops.row_count == 4
