"""The models build their validators when first used (issue 17: building all of them was ~30 ms of every
start, and a one-shot ``--tool`` uses a few); :func:`build_models` builds them all ahead."""

from __future__ import annotations

import json
import subprocess
import sys

_REPORT = (
    "import json; from pydantic import BaseModel; import netspy_tui.models as m; "
    "models = [v for v in vars(m).values() if isinstance(v, type) and issubclass(v, BaseModel) "
    "and v.__module__ == m.__name__ and not v.__pydantic_generic_metadata__['parameters']]; "
    "built = lambda: sorted(v.__name__ for v in models if v.__pydantic_complete__); "
    "before = built(); {step}; print(json.dumps([len(models), before, built()]))"
)


def _run(step: str) -> tuple[int, list[str], list[str]]:
    out = subprocess.run([sys.executable, "-c", _REPORT.format(step=step)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    count, before, after = json.loads(out.stdout)
    return count, before, after


def test_importing_the_models_builds_none_of_them():
    count, before, _ = _run("pass")
    assert count > 30  # the listing is real
    assert before == []


def test_a_model_builds_when_used_and_validates_as_ever():
    step = (
        "from tests.factories import connection_json; doc = connection_json(pid=7, port=8443); "
        "e = m.ConnectionEvent.model_validate(doc); assert (e.pid, e.destination_port) == (7, 8443), e; "
        "assert m.parse_event(doc) == e"
    )
    _, _, after = _run(step)
    assert "ConnectionEvent" in after
    assert "ProcessList" not in after  # what was not used stays unbuilt


def test_build_models_builds_them_all():
    count, _, after = _run("m.build_models()")
    assert len(after) == count


def test_annotations_are_objects_and_importing_builds_no_event_model():
    """Importing the models evaluates no annotation strings (pydantic compiled and evaluated ~280 of them at every
    start) and builds neither event model (parametrizing the generic list builds its origin: with the event models
    as its type variable's constraints, both of them)."""
    step = (
        "strings = [(v.__name__, k) for v in models for k, a in vars(v).get('__annotations__', {}).items() "
        "if isinstance(a, str)]; assert strings == [], strings; "
        "assert not m.ConnectionEvent.__pydantic_complete__ and not m.PacketDropEvent.__pydantic_complete__"
    )
    count, before, _ = _run(step)
    assert count > 30 and before == []
