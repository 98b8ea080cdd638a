"""The one registry of dashboard actions and their keys.

Every key the dashboard answers to is defined here once. The registry feeds the screen's
``BINDINGS`` (with ``id=`` so keys can be remapped through ``App.set_keymap``), the footer, the
help modal, the command palette and the README key table (:func:`markdown_table`).
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True, slots=True)
class KeyAction:
    id: str
    """Stable id, e.g. ``netspy.pause``; the name used by keymaps."""
    keys: str
    """Textual key names, comma-separated when several keys do the same thing."""
    action: str
    """Action method on the dashboard screen (``action_<name>``)."""
    description: str
    """Short footer label."""
    help: str
    """One sentence for the help modal and the palette."""
    group: str
    """Namespace: ``view``, ``data``, ``process``, ``tools``, ``app``."""
    show: bool = True
    """Shown in the footer."""
    key_display: str | None = None
    palette: bool = True
    """Offered in the command palette."""
    rank: int = 20
    """Footer priority: when the terminal is too narrow for every key, lower ranks stay."""

    @property
    def palette_title(self) -> str:
        text = self.help.rstrip(".")
        return f"{self.group}: {text[:1].lower()}{text[1:]}"  # "AI", "JSON" keep their case

    @property
    def display_keys(self) -> str:
        """Every key of the action, as the help modal and README show them."""
        return " / ".join(_KEY_NAMES.get(k, k) for k in self.keys.split(","))


_KEY_NAMES = {
    "space": "space",
    "escape": "esc",
    "backspace": "backspace",
    "enter": "enter",
    "question_mark": "?",
    "slash": "/",
    "colon": ":",
}

ACTIONS: tuple[KeyAction, ...] = (
    KeyAction(
        "netspy.help", "question_mark", "help", "Help", "Show every key and command.", "app", key_display="?", rank=0
    ),
    KeyAction(
        "netspy.filter",
        "slash",
        "filter",
        "Filter",
        "Filter by process name, pid, destination, workload or node; narrows as you type.",
        "view",
        key_display="/",
        rank=1,
    ),
    KeyAction(
        "netspy.back",
        "escape,backspace",
        "back",
        "Back",
        "Close the input, cancel the AI answer, then clear filter, focus, result.",
        "view",
        key_display="esc",
        rank=9,
    ),
    KeyAction(
        "netspy.focus",
        "enter",
        "focus_selected",
        "Focus",
        "Focus every panel on the selected process.",
        "process",
        show=False,
    ),
    KeyAction("netspy.pause", "space", "toggle_pause", "Pause", "Pause or resume live updates.", "view", rank=3),
    KeyAction(
        "netspy.window", "w", "cycle_window", "Window", "Cycle the time window (1m, 5m, 15m, 1h).", "view", rank=10
    ),
    KeyAction(
        "netspy.sort", "s", "cycle_sort", "Sort", "Sort the process table by the next column.", "process", rank=11
    ),
    KeyAction(
        "netspy.sort_reverse",
        "S",
        "reverse_sort",
        "Reverse",
        "Reverse the process table's sort order.",
        "process",
        show=False,
    ),
    KeyAction(
        "netspy.drops", "d", "toggle_drops", "Drops", "Switch between connections and packet drops.", "view", rank=7
    ),
    KeyAction(
        "netspy.traffic",
        "t",
        "toggle_traffic",
        "Traffic",
        "Switch between connections and traffic (bytes and rates, retransmits, connect latency).",
        "view",
        rank=8,
    ),
    KeyAction(
        "netspy.traffic_list",
        "v",
        "next_traffic_list",
        "List",
        "Traffic view: show it by process, connection, remote address or connect latency (the next one).",
        "view",
        show=False,
    ),
    KeyAction(
        "netspy.traffic_sort",
        "o",
        "sort_traffic",
        "Order",
        "Traffic view: sort by the next column.",
        "view",
        show=False,
    ),
    KeyAction(
        "netspy.group",
        "g",
        "toggle_group",
        "Group",
        "Group the process table by workload (container, pod, systemd unit, host), then by node (an aggregator's), "
        "or not.",
        "process",
        show=False,
    ),
    KeyAction(
        "netspy.explain",
        "a",
        "explain",
        "Explain",
        "Explain the selected process with AI (local rules when none is set up).",
        "process",
        rank=4,
    ),
    KeyAction(
        "netspy.ask",
        "A",
        "ask",
        "Ask AI",
        "Ask the AI a question; it reads live data through the MCP tools.",
        "tools",
        rank=13,
    ),
    KeyAction("netspy.insights", "i", "toggle_ai", "AI", "Show or hide the AI pane.", "view", rank=5),
    KeyAction(
        "netspy.names",
        "n",
        "toggle_names",
        "Names",
        "Show destinations by name (/etc/hosts, reverse DNS) or by address.",
        "view",
        show=False,
    ),
    KeyAction(
        "netspy.patterns",
        "p",
        "toggle_patterns",
        "Patterns",
        "Show or hide the pattern panel (below 140 columns it takes the place of the tables).",
        "view",
        rank=6,
    ),
    KeyAction(
        "netspy.command",
        "colon",
        "command_bar",
        "Command",
        "Open the command bar (summary, list, analyze, insights, tools, help).",
        "tools",
        key_display=":",
        rank=8,
    ),
    KeyAction(
        "netspy.export_json",
        "e",
        "export('json')",
        "Export",
        "Export the current view as JSON to the export directory.",
        "data",
        rank=12,
    ),
    KeyAction(
        "netspy.export_csv",
        "E",
        "export('csv')",
        "CSV",
        "Export the visible table as CSV to the export directory.",
        "data",
        show=False,
    ),
    KeyAction("netspy.quit", "q", "quit", "Quit", "Quit netspy-tui.", "app", rank=2),
)

BY_ID = {a.id: a for a in ACTIONS}
BY_ACTION = {a.action: a for a in ACTIONS}


def bindings() -> list[Binding]:
    """The dashboard's BINDINGS, built from :data:`ACTIONS`."""
    return [
        Binding(a.keys, a.action, a.description, show=a.show, key_display=a.key_display, id=a.id, tooltip=a.help)
        for a in ACTIONS
    ]


def groups() -> dict[str, list[KeyAction]]:
    """Actions by group, in registry order (for the help modal)."""
    out: dict[str, list[KeyAction]] = {}
    for a in ACTIONS:
        out.setdefault(a.group, []).append(a)
    return out


def markdown_table() -> str:
    """The key table for the README."""
    lines = ["| key | action |", "|---|---|"]
    for a in ACTIONS:
        lines.append(f"| `{a.display_keys}` | {a.help} |")
    return "\n".join(lines)
