"""The dashboard's AI actions: ``a`` explains the selected process, ``A`` asks a question, the command bar's
``insights`` / ``ask`` stream into the AI pane. Requests are built here and submitted to the AI pane, whose
:class:`~netspy_tui.tui.ai_runner.AIRunner` decides whether they start and runs them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from textual import on
from textual.widgets import Input

from netspy_tui.models import Scope
from netspy_tui.textsafe import clean
from netspy_tui.tui.ai_runner import AIRequest
from netspy_tui.tui.screens.panes import InputKeys, PaneLayout
from netspy_tui.tui.widgets.ai_pane import AIPane
from netspy_tui.tui.widgets.cells import window_label

if TYPE_CHECKING:  # the AI layer loads after the first frame (see DashboardScreen.ai)
    from netspy_tui.ai.types import AnswerItem
    from netspy_tui.mcp_tools.ai_bridge import AIHooks
    from netspy_tui.mcp_tools.gateway import Gateway


class AIActions(PaneLayout, InputKeys):
    # provided by DashboardScreen
    gateway: Gateway
    window: int
    view: str
    focus_subject: Scope | None
    filter_subject: Scope | None
    filter_text: str

    @property
    def ai(self) -> AIHooks:
        raise NotImplementedError

    @property
    def ai_pane(self) -> AIPane:
        return self.query_one("#ai-pane", AIPane)

    def selected_process(self) -> tuple[str | None, int | None]:
        raise NotImplementedError

    def selected_nodes(self) -> list[str]:
        raise NotImplementedError

    def _request(
        self, key: tuple[object, ...], title: str, failure_title: str, produce: Callable[[], AsyncIterator[AnswerItem]]
    ) -> None:
        self.reveal_pane("ai")
        self.ai_pane.submit(AIRequest(key, title, failure_title, produce))

    async def action_explain(self) -> None:
        """Explain what the table shows: the selected row's process (else the focused or filtered one), on the node
        and in the workload the focus or filter narrows the view to (else on the selected row's node when it has
        one: a process row grouped by node, a connection), over the window shown."""
        shown = [s for s in (self.focus_subject, self.filter_subject) if s is not None]
        name, pid = self.selected_process()
        if name is None and pid is None and shown:
            name, pid = shown[0].command, shown[0].pid
        node = next((s.node for s in shown if s.node), None)
        if node is None and name:  # a process row on one node (grouped by node): that node's figures, as `A` takes
            nodes = self.selected_nodes()
            node = nodes[0] if len(nodes) == 1 else None
        workload = next((s.workload for s in shown if s.workload), None)
        if name and pid not in {s.pid for s in shown if s.pid is not None}:
            pid = None  # a row's process by its name (all its pids), unless the view shows this one pid alone
        window = self.window
        scope = Scope(pid=pid, command=name, window=window, node=node, workload=workload)
        gateway, explain = self.gateway, self.ai.explain
        self._request(
            ("explain", name, pid, window, node, workload),
            f"explaining {self._explained(scope)} over {window_label(window)}",
            "AI explanation failed",
            lambda: explain(gateway, scope),
        )

    def _explained(self, scope: Scope) -> str:
        """What ``a`` explains, for the pane: the process, its node and workload, and a filter it cannot apply."""
        who = scope.label + (f" (pid {scope.pid})" if scope.command is not None and scope.pid is not None else "")
        if scope.workload:
            who += f" in workload '{clean(scope.workload, 40)}'"
        if scope.node:
            who += f" on node '{clean(scope.node, 40)}'"
        if self.filter_text and self.filter_subject is None and scope.is_all:
            who += f" (not only the rows the filter '{clean(self.filter_text, 40)}' shows: it names no process or node)"
        return who

    def action_ask(self) -> None:
        self.open_input(self.query_one("#question-bar", Input))

    @on(Input.Submitted, "#question-bar")
    async def _question_submitted(self, event: Input.Submitted) -> None:
        question = event.value.strip()
        if not question:
            return
        event.input.value = ""
        event.input.display = False
        self.focus_active_table()
        context: dict[str, Any] = {"duration": self.window, "view": self.view}  # what the user is looking at
        scope = self.focus_subject or self.filter_subject
        if scope is not None:
            context["focus"] = scope.as_arguments()
        name, pid = self.selected_process()
        if name is not None or pid is not None:
            context["selected_process"] = {k: v for k, v in (("process_name", name), ("pid", pid)) if v is not None}
            nodes = self.selected_nodes()
            if nodes:  # an aggregator's row: the host(s) it is about
                context["selected_process"]["nodes"] = nodes
        await self.ask(question, context)

    async def ask(self, question: str, context: dict[str, Any] | None) -> None:
        """Stream the answer to a free-form question into the AI pane (the model may call the data tools)."""
        if self.ai.ask is None:
            await self._unavailable()
            return
        gateway, ask = self.gateway, self.ai.ask
        self._request(
            ("ask", question, json.dumps(context, sort_keys=True, default=str)),
            f"asking: {clean(question, 80)}",
            "AI answer failed",
            lambda: ask(gateway, question, context),
        )

    async def summarize(self, summary_text: str) -> None:
        """Stream insights into a summary text (the command bar's ``insights "..."``) into the AI pane."""
        if self.ai.summarize is None:
            await self._unavailable()
            return
        summarize = self.ai.summarize
        self._request(
            ("insights", summary_text),
            f"insights into: {clean(summary_text, 80)}",
            "AI insights failed",
            lambda: summarize(summary_text),
        )

    async def _unavailable(self) -> None:
        self.reveal_pane("ai")
        await self.ai_pane.show_notice(self.ai.unavailable)
