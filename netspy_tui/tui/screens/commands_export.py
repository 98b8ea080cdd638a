"""The dashboard's command bar (``:``) and export (``e`` / ``E``): the work is done elsewhere, by the shared
:class:`~netspy_tui.commands.CommandRunner` (in the result panel's worker) and by :mod:`netspy_tui.export`
(on a worker thread); these only gather what the user is looking at."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from textual import on, work
from textual.screen import Screen
from textual.widgets import Input

from netspy_tui.commands import CommandResult, CommandRunner
from netspy_tui.errors import UsageError
from netspy_tui.models import Scope
from netspy_tui.tui.screens.ai_actions import AIActions
from netspy_tui.tui.snapshot import Snapshot
from netspy_tui.tui.widgets.command import CommandInput, ResultPanel
from netspy_tui.tui.widgets.connections import ConnectionTable, DropTable
from netspy_tui.tui.widgets.processes import ProcessTable
from netspy_tui.tui.widgets.traffic import TrafficTable

if TYPE_CHECKING:  # netspy_tui.export loads with the first export, not before the dashboard's first frame
    from netspy_tui import export


class CommandBarActions(AIActions):
    # provided by DashboardScreen
    commands: CommandRunner

    def action_quit(self) -> None:
        raise NotImplementedError

    @property
    def result(self) -> ResultPanel:
        return self.query_one("#result", ResultPanel)

    def action_command_bar(self) -> None:
        self.open_input(self.query_one("#command-bar", CommandInput))

    @on(Input.Submitted, "#command-bar")
    async def _command_submitted(self, event: Input.Submitted) -> None:
        bar = self.query_one("#command-bar", CommandInput)
        line = event.value.strip()
        if line:
            bar.remember(line)
            bar.value = ""
            await self.run_command(line)

    async def run_command(self, line: str) -> None:
        parsed = self.commands.parse(line)
        if isinstance(parsed, CommandResult):
            self.result.show(line, parsed.text, is_error=True)
        elif parsed.action == "quit":
            self.action_quit()
        elif parsed.tool == "ai_insights":  # AI answers stream into the AI pane; the result box closes
            self.result.hide()
            await self.summarize(str(parsed.arguments["summary_text"]))
        elif parsed.tool == "contextual_analysis":
            self.result.hide()
            args = parsed.arguments
            context = {
                k: v
                for k, v in (
                    ("pid", args.get("pid")),
                    ("process_name", args.get("process_name")),
                    ("duration", self.window),
                )
                if v is not None
            }
            await self.ask(str(args["query"]), context)
        else:
            self.result.run(self.commands, parsed, line)


class ExportActions(Screen[None]):
    # provided by DashboardScreen
    rendered: Snapshot | None
    window: int
    view: str
    focus_subject: Scope | None
    clock: Callable[[], datetime]
    export_dir: Path | None
    filter_text: str

    def action_export(self, fmt: export.Format) -> None:
        from netspy_tui import export

        snap = self.rendered
        if snap is None:
            self.notify("Nothing to export yet: no poll has finished.", severity="warning")
            return
        conns, drops = self.query_one("#connections", ConnectionTable), self.query_one("#drops", DropTable)
        drops.catch_up()  # (not updated while its tab is hidden)
        traffic = self.query_one("#traffic", TrafficTable)
        procs = self.query_one("#processes", ProcessTable)
        view: export.View = "traffic" if self.view == "traffic" else "drops" if self.view == "drops" else "connections"
        if fmt == "csv" and procs.has_focus:  # the visible table the user is in (a CSV holds one table)
            view = "processes"
        request = export.ExportRequest(  # the rows as shown
            view=view,
            exported_at=self.clock(),
            window_seconds=self.window,
            connections=tuple(conns.events.values()),
            drops=tuple(drops.events.values()),
            # (the JSON keeps a process a row, in any grouping)
            processes=tuple(procs.rows_shown() if view == "processes" else procs.stats.values()),
            process_rates=procs.rates,
            source=snap.status.source.label if snap.status else None,
            filter=self.filter_text or None,
            focus=self.focus_subject.as_arguments() if self.focus_subject else None,
            patterns=snap.patterns.model_dump(mode="json") if snap.patterns else None,
            drop_patterns=snap.drop_patterns.model_dump(mode="json") if snap.drop_patterns else None,
            traffic_list=traffic.mode if self.view == "traffic" else None,
            traffic_rows=tuple(r.data for r in traffic.rows_shown) if self.view == "traffic" else (),
            traffic=snap.traffic.model_dump(mode="json") if snap.traffic else None,
            connect_latency=snap.latency.model_dump(mode="json") if snap.latency else None,
        )
        self._export(request, fmt, export.export_dir(self.export_dir))

    @work(group="export", exit_on_error=False)
    async def _export(self, request: export.ExportRequest, fmt: export.Format, directory: Path) -> None:
        from netspy_tui import export

        try:
            done = await export.export_async(request, fmt, directory)
        except (OSError, UsageError) as exc:  # (UsageError: safefs refused the directory)
            self.notify(f"Export failed: {exc}", severity="error", markup=False)
            return
        what = request.name.replace("-", " ")
        self.notify(f"Exported {done.rows} {what} rows to {done.path}", title="Export", markup=False)
