"""The sdist and the wheel, built offline from a copy of the tree (``python -m build --no-isolation``).

The copy gets the clutter a working tree really has — .ci/run's venv, a hand-made .venv, benchmark
results, screenshots, the .hypothesis/ cache the README's test command leaves — so the exclusions are
tested, not assumed.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_SKIP = shutil.ignore_patterns(
    ".git",
    ".venv",
    "venv",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "dist",
    "build",
    "*.egg-info",
)


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], dict[str, bytes]]:
    """(names in the sdist, wheel files by name)."""
    missing = [m for m in ("build", "hatchling") if importlib.util.find_spec(m) is None]
    assert not missing, f"{missing} missing: install the `test` extra (pip install '.[test]')"
    base = tmp_path_factory.mktemp("dist")
    tree = base / "netspy-tui"
    shutil.copytree(ROOT, tree, ignore=_SKIP)
    (tree / ".ci" / "venv" / "bin").mkdir(parents=True, exist_ok=True)
    (tree / ".ci" / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (tree / ".venv" / "lib").mkdir(parents=True)
    (tree / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (tree / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (tree / "bench" / "results" / "scratch.json").write_text("{}\n")
    # What `python -m pytest` leaves (hypothesis's example database, with its own .gitignore, which
    # hatchling does not read).
    (tree / ".hypothesis" / "examples" / "0a1b2c").mkdir(parents=True)
    (tree / ".hypothesis" / "examples" / "0a1b2c" / "3d4e5f").write_bytes(b"\x00\x01")
    (tree / ".hypothesis" / ".gitignore").write_text("# automatically created by Hypothesis\n*\n")
    out = base / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(tree)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    with tarfile.open(sdist) as tar:
        names = [name.split("/", 1)[1] for name in tar.getnames() if "/" in name]
    with zipfile.ZipFile(wheel) as whl:
        files = {name: whl.read(name) for name in whl.namelist()}
    return names, files


def _metadata(files: dict[str, bytes]):
    (name,) = [n for n in files if n.endswith(".dist-info/METADATA")]
    return Parser().parsestr(files[name].decode("utf-8"))


def test_sdist_has_the_license_and_marker_and_no_venvs_caches_screenshots_or_results(dists):
    names, _ = dists
    assert "LICENSE" in names and "netspy_tui/py.typed" in names and "pyproject.toml" in names
    assert "README.md" in names and "tests/fake_ebpf_server.py" in names
    for clutter in (".ci/venv", ".venv", ".hypothesis", "screenshots/", "bench/results/"):
        assert not [n for n in names if n.startswith(clutter)], clutter
    assert not [n for n in names if n.endswith("pyvenv.cfg") or "__pycache__" in n]


def test_wheel_has_the_package_its_marker_and_the_license(dists):
    _, files = dists
    assert "netspy_tui/py.typed" in files and "netspy_tui/tui/app.tcss" in files
    licenses = [n for n in files if ".dist-info/licenses/" in n]
    assert [n.rsplit("/", 1)[1] for n in licenses] == ["LICENSE"]
    assert b"MIT License" in files[licenses[0]] and b"netspy-tui developers" in files[licenses[0]]
    assert not [n for n in files if n.startswith(("tests/", "bench/", "screenshots/"))]


def test_metadata_names_license_classifiers_urls_keywords_and_extras(dists):
    _, files = dists
    meta = _metadata(files)
    assert meta["License-Expression"] == "MIT" and meta["Requires-Python"] == ">=3.11"
    classifiers = meta.get_all("Classifier")
    assert {
        "Typing :: Typed",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3.11",
        "Topic :: System :: Networking :: Monitoring",
    } <= set(classifiers)
    assert not [c for c in classifiers if c.startswith("License ::")]  # the expression says it
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert {"Homepage", "Source", "Issues"} <= set(urls) and all(u.startswith("https://") for u in urls.values())
    assert "ebpf" in meta["Keywords"] and "mcp" in meta["Keywords"]
    requires = meta.get_all("Requires-Dist")
    assert {"test", "dev"} <= set(meta.get_all("Provides-Extra"))
    test_extra = [r for r in requires if "extra == 'test'" in r or 'extra == "test"' in r]
    assert test_extra and not [r for r in test_extra if r.startswith("ruff")], test_extra
    assert [r for r in requires if r.startswith("ruff") and "dev" in r]
    assert any(r.startswith("uvicorn") and "<1" in r for r in requires)
    assert any(r.startswith("numpy") and "extra" not in r for r in requires)  # core: the store uses it
