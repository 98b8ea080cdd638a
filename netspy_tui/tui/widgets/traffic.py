"""The Traffic view: bytes per process, connection and remote address, and connect latency per destination.

One table shows one of four lists of the same poll (``v`` cycles them, ``o`` sorts by the next column), so a
24-line terminal still shows a useful number of rows. Rows come from ``get_traffic`` and ``get_connect_latency``
(the poller asks only while this view is shown); every name in them is untrusted text and goes through
:func:`~netspy_tui.tui.widgets.cells.cell`. Rates are averages over the window, as the tools give them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from rich.text import Text

from netspy_tui.analysis.describe import duration_us, human_bytes
from netspy_tui.models import LatencyGroup, LatencyReport, TrafficFlow, TrafficRemote, TrafficReport
from netspy_tui.textsafe import clean
from netspy_tui.tui.widgets.cells import (
    Cell,
    Column,
    cell,
    cursor_key,
    fit_widths,
    next_shown_column,
    set_column_widths,
    table_width,
    window_label,
)
from netspy_tui.tui.widgets.table import KeyedTable

MODES = ("processes", "connections", "remotes", "latency")
MODE_LABELS = {"processes": "by process", "connections": "by connection", "remotes": "by remote address",
               "latency": "connect latency"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class TrafficColumn(Column):
    numeric: bool = True
    """Numeric columns sort largest first."""


def _col(key: str, label: str, least: int, most: int | None = None, *, numeric: bool = True) -> TrafficColumn:
    return TrafficColumn(key, label, least, most if most is not None else least, numeric)


_RATES = (_col("rx_rate", "Rx/s avg", 10), _col("tx_rate", "Tx/s avg", 10))
"""(Averages over the window, as the tools give them, not a current rate: 10 MB sent in one second of a minute
reads 166.7 kB/s for the whole minute; the summary line says which window.)"""
_TOTALS = (_col("rx", "Rx", 8), _col("tx", "Tx", 8), _col("retrans", "Retrans", 9))
"""(A total reads ``999.9 MB`` at most before the next unit: 8 cells.)"""

#: Columns of each list, by priority: the first ones stay in view at 80 columns (the name, the rates and the
#: totals), the others are shown whole where they fit (:func:`~netspy_tui.tui.widgets.cells.fit_widths`).
COLUMNS: dict[str, tuple[TrafficColumn, ...]] = {
    "processes": (
        _col("process", "Process", 12, 32, numeric=False),
        *_RATES,
        *_TOTALS,
        _col("flows", "Conns", 7),
        _col("inbound", "In", 6),
        _col("outbound", "Out", 6),
        _col("pids", "PIDs", 8, 40, numeric=False),
    ),
    "connections": (
        _col("process", "Process", 10, 24, numeric=False),
        _col("remote", "Remote", 18, 48, numeric=False),
        *_RATES,
        *_TOTALS,
        _col("direction", "Direction", 11, numeric=False),
        _col("pid", "PID", 7),
        _col("protocol", "Proto", 7, numeric=False),
        _col("local", "Local", 8, 48, numeric=False),
        _col("lifetime", "Lifetime", 10),
    ),
    "remotes": (
        _col("remote", "Remote", 18, 48, numeric=False),
        *_RATES,
        *_TOTALS,
        _col("processes", "Processes", 12, 60, numeric=False),
    ),
    "latency": (
        _col("process", "Process", 10, 24, numeric=False),
        _col("destination", "Destination", 18, 48, numeric=False),
        _col("p50", "p50", 9),
        _col("p95", "p95", 9),
        _col("attempts", "Attempts", 10),
        _col("max", "Max", 9),
        _col("outcomes", "Outcomes", 12, 60, numeric=False),
    ),
}
#: The column each list is sorted by at first (the order the tools rank by).
DEFAULT_SORT = {"processes": "rx_rate", "connections": "rx_rate", "remotes": "rx_rate", "latency": "p95"}


def endpoint(address: str, port: int) -> str:
    """``10.0.0.7:443``, ``[::1]:80``; ``(no peer)`` for an unconnected socket."""
    if not address:
        return "(no peer)" if not port else f"*:{port}"
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def rate_text(per_second: float) -> str:
    return f"{human_bytes(per_second)}/s"


def _bytes(n: int) -> Cell:
    return cell(human_bytes(n), 12, justify="right", sort_key=n)


def _rate(n: float) -> Cell:
    return cell(rate_text(n), 14, justify="right", sort_key=n)


def _count(n: int) -> Cell:
    return cell(f"{n:,}", 12, justify="right", sort_key=n)


def _pid(n: int) -> Cell:
    """A pid as the kernel writes it (``29570``: with a thousands separator it reads as two pids in a list)."""
    return cell(str(n), 12, justify="right", sort_key=n)


def _us(n: int) -> Cell:
    return cell(duration_us(n), 12, justify="right", sort_key=n)


def _text(value: str, most: int) -> Cell:
    return cell(value, most, sort_key=value.casefold())


def _pids(pids: Sequence[int]) -> Cell:
    return cell(",".join(str(p) for p in pids), 40, sort_key=(len(pids), pids[:1]))


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    cells: list[Cell]
    command: str
    """For the filter and focus (``""`` for a remote address's row, which several processes share)."""
    pids: tuple[int, ...]
    texts: tuple[str, ...]
    """Other text the filter matches (addresses, process names of a remote's row)."""
    data: BaseModel
    """What the row shows, as the tool returned it (exports write it)."""


@dataclass(frozen=True, slots=True)
class Known:
    """What the dashboard already knows about the addresses and pids in the traffic rows: destination names
    (from the connections held, empty when ``n`` shows addresses) and workloads (by pid). Shown and matched by
    the filter; nothing is asked for them."""

    names: Mapping[str, str] = field(default_factory=dict)
    workloads: Mapping[int, str] = field(default_factory=dict)

    def host(self, address: str) -> str:
        return self.names.get(address) or address

    def of_pids(self, pids: Sequence[int]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(w for p in pids if (w := self.workloads.get(p))))


NOTHING_KNOWN = Known()


def process_rows(report: TrafficReport, known: Known = NOTHING_KNOWN) -> list[Row]:
    return [
        Row(
            p.command,
            [
                _text(p.command, 32),
                _rate(p.rx_rate),
                _rate(p.tx_rate),
                _bytes(p.rx_bytes),
                _bytes(p.tx_bytes),
                _count(p.retransmits),
                _count(p.flows),
                _count(p.inbound),
                _count(p.outbound),
                _pids(p.pids),
            ],
            p.command,
            tuple(p.pids),
            known.of_pids(p.pids),
            p,
        )  # fmt: skip
        for p in report.stats.processes
    ]


def _flow_row(f: TrafficFlow, seconds: int, known: Known) -> Row:
    address = endpoint(f.remote, f.remote_port)
    remote = endpoint(known.host(f.remote), f.remote_port) if f.remote else address
    local = endpoint(f.local, f.local_port)
    key = f"{f.pid}\0{f.command}\0{f.protocol}\0{local}\0{address}"
    lifetime = cell(duration_us(f.lifetime_us) if f.lifetime_us is not None else "", 12, justify="right",
                    sort_key=f.lifetime_us or 0)  # fmt: skip
    return Row(
        key,
        [_text(f.command, 24), _text(remote, 48), _rate(f.rx_bytes / seconds), _rate(f.tx_bytes / seconds),
         _bytes(f.rx_bytes), _bytes(f.tx_bytes), _count(f.retransmits), _text(f.direction or "–", 10), _pid(f.pid),
         _text(f.protocol or "?", 6), _text(local, 48), lifetime],
        f.command,
        (f.pid,),
        (address, remote, f.direction, *known.of_pids((f.pid,))),
        f,
    )  # fmt: skip


def _remote_row(r: TrafficRemote, seconds: int, known: Known) -> Row:
    remote = known.host(r.remote) if r.remote else "(no peer)"
    return Row(
        r.remote,
        [_text(remote, 48), _rate(r.rx_bytes / seconds), _rate(r.tx_bytes / seconds), _bytes(r.rx_bytes),
         _bytes(r.tx_bytes), _count(r.retransmits), _text(", ".join(r.commands), 60)],
        "",
        (),
        (r.remote, remote, *r.commands),
        r,
    )  # fmt: skip


def _named_destination(destination: str, known: Known) -> str:
    """``ip:port`` / ``[ip]:port`` as ``name:port`` when the address has a name."""
    address, sep, port = destination.rpartition(":")
    name = known.names.get(address.removeprefix("[").removesuffix("]")) if sep else None
    return f"{name}:{port}" if name else destination


def _latency_row(g: LatencyGroup, known: Known) -> Row:
    outcomes = ", ".join(f"{name} {n:,}" for name, n in sorted(g.outcomes.items(), key=lambda kv: -kv[1]))
    destination = _named_destination(g.destination, known)
    return Row(
        f"{g.command}\0{g.destination}",
        [_text(g.command, 24), _text(destination, 48), _us(g.p50_us), _us(g.p95_us), _count(g.attempts),
         _us(g.max_us), _text(outcomes, 60)],
        g.command,
        tuple(g.pids),
        (g.destination, destination, *known.of_pids(g.pids)),
        g,
    )  # fmt: skip


def rows_of(mode: str, traffic: TrafficReport | None, latency: LatencyReport | None,
            known: Known = NOTHING_KNOWN) -> list[Row]:  # fmt: skip
    """The rows of list ``mode`` from one poll's reports (none when the report is missing)."""
    if mode == "latency":
        return [_latency_row(g, known) for g in latency.stats.destinations] if latency is not None else []
    if traffic is None:
        return []
    seconds = max(1, traffic.stats.window_seconds)
    if mode == "processes":
        return process_rows(traffic, known)
    if mode == "connections":
        return [_flow_row(f, seconds, known) for f in traffic.stats.flows]
    return [_remote_row(r, seconds, known) for r in traffic.stats.remotes]


def total_of(mode: str, traffic: TrafficReport | None, latency: LatencyReport | None) -> int | None:
    """How many rows list ``mode`` has in the window (the tools return the top 200 of each)."""
    if mode == "latency":
        return latency.stats.total_destinations if latency is not None else None
    if traffic is None:
        return None
    s = traffic.stats
    return {"processes": s.total_processes, "connections": s.total_flows, "remotes": s.total_remotes}[mode]


def shown_totals(mode: str, rows: Sequence[Row]) -> tuple[float, float, int] | None:
    """Rx/s, Tx/s and retransmits summed over ``rows`` of list ``mode`` (None for a list without them)."""
    keys = [c.key for c in COLUMNS[mode]]
    if not {"rx_rate", "tx_rate", "retrans"} <= set(keys):
        return None
    rx, tx, retrans = (keys.index(k) for k in ("rx_rate", "tx_rate", "retrans"))
    return (
        sum(r.cells[rx].sort_key for r in rows),
        sum(r.cells[tx].sort_key for r in rows),
        sum(r.cells[retrans].sort_key for r in rows),
    )


def summary_text(
    traffic: TrafficReport | None,
    latency: LatencyReport | None,
    error: str | None,
    mode: str,
    shown: Sequence[Row] | None = None,
) -> Text:
    """One line above the table: which list (``v``), the window's totals and connect percentiles, or why not.

    ``shown``: the rows a text filter left on screen (the tools were not narrowed by it): the totals are
    theirs (``shown: rx …``), or, for a list without bytes, the figures are labelled as the host's."""
    head = Text(f"{MODE_LABELS[mode]} (v) · ", style="bold")
    if error is not None:
        return head + Text(f"traffic unavailable: {clean(error, 200)}")  # (coloured by app.tcss: -error)
    if traffic is None:
        return head + Text("reading traffic…")
    s = traffic.stats
    if not s.available and s.unavailable_reason:
        return head + Text(f"not counted here: {clean(s.unavailable_reason, 300)}")
    if not s.available:
        # (whole on an 80-column screen; the tools' and the REPL's text says more: analysis/describe.py)
        return head + Text("not counted by this source (needs eBPF, Linux 6.3+)")
    avg = f"{window_label(s.window_seconds)} avg"
    totals = shown_totals(mode, shown) if shown is not None else None
    if totals is not None:
        rx, tx, retrans = totals
        parts = [f"shown, {avg} rx {rate_text(rx)} tx {rate_text(tx)}", f"{retrans:,} retrans"]
    else:
        host = "host, " if shown is not None else ""
        parts = [f"{host}{avg} rx {rate_text(s.rx_rate)} tx {rate_text(s.tx_rate)}", f"{s.retransmits:,} retrans"]
    if totals is None and (s.inbound_connections or s.outbound_connections):
        parts.append(f"{s.inbound_connections:,} in / {s.outbound_connections:,} out")
    if totals is None and latency is not None and latency.stats.available and latency.stats.attempts:
        ls = latency.stats
        parts.append(f"connect p50 {duration_us(ls.p50_us)} p95 {duration_us(ls.p95_us)}")
    if not traffic.counts_exact:
        parts.append("some counts lost")
    if s.sampled:  # (first: the line is cut on narrow screens)
        parts.insert(0, "sampled TCP counters")
    return head + Text(" · ".join(parts))


class TrafficTable(KeyedTable):
    """One list of the Traffic view; rebuilt when its rows change (at most a few hundred), the cursor kept on
    the same row by key."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.mode = MODES[0]
        self.sort_keys = dict(DEFAULT_SORT)
        self.sort_reverse = {m: True for m in MODES}
        self.rows_shown: list[Row] = []
        self._source: list[Row] = []

    @property
    def columns_spec(self) -> tuple[TrafficColumn, ...]:
        return COLUMNS[self.mode]

    def on_mount(self) -> None:
        self._add_columns()

    def _add_columns(self) -> None:
        sort = self.sort_keys[self.mode]
        arrow = " ▼" if self.sort_reverse[self.mode] else " ▲"
        for c in self.columns_spec:
            label = Text(c.label + arrow, style="bold") if c.key == sort else Text(c.label + "  ")
            self.add_column(label, key=c.key, width=c.least)
        self.on_resize()

    def on_resize(self) -> None:
        if not self.columns:
            return
        widths = fit_widths(self.columns_spec, table_width(self), self.cell_padding)
        set_column_widths(self, {c.key: w for c, w in zip(self.columns_spec, widths, strict=True)})

    @property
    def sort_label(self) -> str:
        column = next(c for c in self.columns_spec if c.key == self.sort_keys[self.mode])
        return f"{column.label} {'▼' if self.sort_reverse[self.mode] else '▲'}"

    def show(self, rows: list[Row]) -> None:
        """Show ``rows`` (the current list, already filtered), sorted by the chosen column."""
        self._source = rows
        index = [c.key for c in self.columns_spec].index(self.sort_keys[self.mode])
        key: Callable[[Row], Any] = lambda r: r.cells[index].sort_key  # noqa: E731
        ordered = sorted(rows, key=key, reverse=self.sort_reverse[self.mode])
        if [(r.key, [c.plain for c in r.cells]) for r in ordered] == [
            (r.key, [c.plain for c in r.cells]) for r in self.rows_shown
        ]:
            return
        selected = self.selected_key()
        with self.app.batch_update():
            self.clear()
            for row in ordered:
                self.add_row(*row.cells, key=row.key)
            self.rows_shown = ordered
            keys = [r.key for r in ordered]
            if selected in keys:
                self.move_cursor(row=keys.index(selected), animate=False)

    def selected_key(self) -> str | None:
        return cursor_key(self)

    def selected_row(self) -> Row | None:
        key = self.selected_key()
        return next((r for r in self.rows_shown if r.key == key), None)

    def set_mode(self, mode: str) -> None:
        """Show another list (its rows come with the next :meth:`show`)."""
        self.mode = mode
        self.rows_shown = []
        self.clear(columns=True)
        self._add_columns()

    def cycle_sort(self) -> str:
        """Sort by the next column shown (numbers largest first, text A-Z); returns the label shown."""
        keys = [c.key for c in self.columns_spec]
        nxt = self.columns_spec[next_shown_column(self, keys, self.sort_keys[self.mode])]
        self.sort_keys[self.mode] = nxt.key
        self.sort_reverse[self.mode] = nxt.numeric
        self.rows_shown = []
        self.clear(columns=True)
        self._add_columns()
        self.show(self._source)
        return self.sort_label
