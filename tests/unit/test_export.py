"""netspy_tui.export: headless (no Textual), safefs rules, inert cells, off the event loop's thread."""

from __future__ import annotations

import asyncio
import csv
import json
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from netspy_tui import export
from tests.factories import BASE_TIME, connection, drop


def _request(view: export.View = "connections") -> export.ExportRequest:
    return export.ExportRequest(
        view=view,
        exported_at=BASE_TIME,
        window_seconds=60,
        connections=(connection(pid=1, command="=cmd|' /C calc'!A0"), connection(pid=2, command="curl")),
        drops=(drop(pid=3, command="nginx"),),
        filter="curl",
    )


def test_export_is_importable_without_textual() -> None:
    code = "import sys, netspy_tui.export; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_files_are_private_fresh_and_never_overwritten(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b"
    first = export.export(_request(), "json", directory)
    second = export.export(_request(), "json", directory)
    assert first.path.name == "netspy-connections-20261124T120000Z.json"
    assert second.path.name == "netspy-connections-20261124T120000Z-1.json"
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600 and stat.S_IMODE(directory.stat().st_mode) == 0o700
    data = json.loads(first.path.read_text())
    assert first.rows == 2 and len(data["connections"]) == 2 and data["filter"] == "curl"


def test_csv_cells_a_spreadsheet_would_run_are_quoted(tmp_path: Path) -> None:
    done = export.export(_request(), "csv", tmp_path)
    rows = list(csv.reader(done.path.open()))
    assert rows[1][2] == "'=cmd|' /C calc'!A0" and rows[2][2] == "curl"
    drops = export.export(_request("drops"), "csv", tmp_path)
    assert drops.rows == 1 and list(csv.reader(drops.path.open()))[0][3] == "reason"


def test_every_server_text_cell_is_inert_outcome_and_id_included(tmp_path: Path) -> None:
    # (an audit's finding: the outcome and id columns were written as the server sent them)
    hostile = '=HYPERLINK("http://evil","x")\x1b]0;PWN\x07'
    req = export.ExportRequest(view="connections", exported_at=BASE_TIME, window_seconds=60,
                               connections=(connection(pid=1, command="curl", outcome=hostile).model_copy(
                                   update={"id": "+1+cmd"}),), drops=())  # fmt: skip
    rows = list(csv.reader(export.export(req, "csv", tmp_path).path.open()))
    header, row = rows[0], rows[1]
    outcome, id_ = row[header.index("outcome")], row[header.index("id")]
    assert outcome.startswith("'=HYPERLINK(") and "\x1b" not in outcome and "\\x1b]0;PWN\\x07" in outcome
    assert id_ == "'+1+cmd"
    planted = drop(pid=3, command="nginx").model_copy(update={"id": "@SUM(A1)"})
    drops = export.ExportRequest(
        view="drops", exported_at=BASE_TIME, window_seconds=60, connections=(), drops=(planted,)
    )
    rows = list(csv.reader(export.export(drops, "csv", tmp_path).path.open()))
    assert rows[1][rows[0].index("id")] == "'@SUM(A1)"


def test_export_async_writes_on_another_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    original = export.write_json

    def spy(fh, req):  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread().name)
        original(fh, req)

    monkeypatch.setattr(export, "write_json", spy)
    done = asyncio.run(export.export_async(_request(), "json", tmp_path))
    assert done.path.exists() and threads and threads[0] != threading.main_thread().name


def test_a_file_in_the_way_of_the_directory_is_an_oserror(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        export.export(_request(), "json", tmp_path / "file" / "sub")


def test_csv_names_each_destination_and_workload_when_known(tmp_path: Path) -> None:
    named = connection(pid=4, command="curl").model_copy(update={"hostname": "db.internal", "workload": "docker 3f2a"})
    req = export.ExportRequest(view="connections", exported_at=BASE_TIME, window_seconds=60,
                               connections=(named, connection(pid=5, command="wget")), drops=())  # fmt: skip
    path = export.export(req, "csv", tmp_path).path
    header, first, second = list(csv.reader(path.open()))
    assert header[-5:] == ["hostname", "workload", "id", "direction", "peer"]
    assert first[-5:-3] == ["db.internal", "docker 3f2a"] and second[-5:-3] == ["", ""]
    assert first[-2:] == ["outbound", ""]
    data = json.loads(export.export(req, "json", tmp_path).path.read_text())
    assert data["connections"][0]["hostname"] == "db.internal" and data["connections"][0]["workload"] == "docker 3f2a"


def test_csv_gives_an_inbound_connection_its_direction_and_peer(tmp_path: Path) -> None:
    accepted = connection(pid=4, command="nginx", ip="10.0.0.2", port=443).model_copy(
        update={"direction": "inbound", "peer_ip": "10.0.0.9", "peer_port": 51000}
    )
    req = export.ExportRequest(view="connections", exported_at=BASE_TIME, window_seconds=60,
                               connections=(accepted,), drops=())  # fmt: skip
    header, row = list(csv.reader(export.export(req, "csv", tmp_path).path.open()))
    got = dict(zip(header, row, strict=True))
    assert (got["destination"], got["direction"], got["peer"]) == ("10.0.0.2:443", "inbound", "10.0.0.9:51000")


def test_an_export_the_disk_cannot_hold_leaves_no_cut_off_file(tmp_path: Path) -> None:
    """A full disk left a 64 KiB cut-off JSON (and an empty CSV) under an export's name, while the toast said the
    export failed (an audit's): the failed file is removed. Here the disk is full at 4 KiB (RLIMIT_FSIZE)."""
    code = f"""
import os, resource, signal, sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from netspy_tui import export
from tests.factories import connection
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # (write fails with EFBIG instead of killing the process)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
from tests.factories import BASE_TIME
request = export.ExportRequest(view="connections", exported_at=BASE_TIME, window_seconds=60,
                               connections=tuple(connection(pid=i, command="curl") for i in range(1, 200)), drops=())
directory = Path(sys.argv[1])
for fmt in ("json", "csv"):
    try:
        export.export(request, fmt, directory)
    except OSError as exc:
        print(fmt, exc.errno)
print(sorted(p.name for p in directory.iterdir()))
"""
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "exports")], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    import errno

    assert out.stdout.splitlines() == [f"json {errno.EFBIG}", f"csv {errno.EFBIG}", "[]"], out.stdout
