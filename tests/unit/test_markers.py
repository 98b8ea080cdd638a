"""Every test that needs root says so with a marker, and the root CI job runs the whole suite.

A root-only test skips as an ordinary user, so GitHub's non-root job never exercises it; it runs in
the root job of .github/workflows/ci.yml, which runs the whole suite (no ``-m`` selection) under sudo
with ``NETSPY_REQUIRE_EBPF=1``. There tests/conftest.py turns a skip of a test marked ``root`` or
``ebpf`` into a failure, so the marker is what stops a root-only test from skipping unnoticed.

Markers (pyproject.toml): ``ebpf`` — loads eBPF programs, needs root and a kernel that takes them;
``root`` — needs root for something else (mounting a tmpfs, running a child as another user).

The scan is static (AST, nothing imported or run). A test needs a marker when its own code, its
decorators, the helpers it calls (module-level functions of the test tree, followed transitively)
or the fixtures it requests (same module or a conftest.py above it) use a root-only facility:

* eBPF, so ``ebpf``: the name ``EbpfCollector``, or ``NETSPY_REQUIRE_EBPF`` (directly or through a
  module-level name computed from it, such as ``REQUIRE``) — a test that must fail when eBPF cannot
  load is an eBPF test;
* root, so ``root`` or ``ebpf``: ``os.geteuid``/``os.getuid``; a privilege call (``os.setuid``,
  ``os.setresuid``, ``os.setgroups``, ``os.chroot``, ``os.unshare``, ...); an argv list starting
  with ``mount``, ``umount``, ``setpriv``, ``unshare``, ``nsenter``, ``chroot``, ``capsh`` or
  ``sudo``; a ``pytest.skip``/``skipif`` reason that says "root" or "privilege".

Code inside strings (a child interpreter's ``-c`` program) is not read: a test that drops root in a
child and also works unprivileged, like tests/collector/test_ebpf.py's
test_unprivileged_start_says_what_to_do, runs in both jobs and needs no marker.
"""

from __future__ import annotations

import ast
import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.quiet

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"

ROOT_MARKERS = {"ebpf", "root"}
EBPF_NAMES = {"EbpfCollector"}
REQUIRE_ENV = "NETSPY_REQUIRE_EBPF"
UID_CHECKS = {"geteuid", "getuid"}
PRIVILEGE_CALLS = {
    "setuid",
    "seteuid",
    "setreuid",
    "setresuid",
    "setgid",
    "setegid",
    "setregid",
    "setresgid",
    "setgroups",
    "chroot",
    "unshare",
    "setns",
}
ROOT_COMMANDS = {"mount", "umount", "setpriv", "unshare", "nsenter", "chroot", "capsh", "sudo"}
ROOT_REASON = re.compile(r"\broot\b|privilege", re.IGNORECASE)

#: Unmarked root-only tests in files another change owns (the eBPF collector rewrite); each entry must
#: still be found unmarked, so the list can only shrink. Remove an entry when its test gets the marker.
KNOWN_UNMARKED: dict[str, str] = {}


@dataclass
class Module:
    path: Path
    tree: ast.Module
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = field(default_factory=dict)
    fixtures: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = field(default_factory=dict)
    imported: dict[str, tuple[str, str]] = field(default_factory=dict)  # local name -> (module, name)
    require_names: set[str] = field(default_factory=set)  # module-level names computed from REQUIRE_ENV
    marks: set[str] = field(default_factory=set)  # pytestmark

    @property
    def dotted(self) -> str:
        return ".".join(self.path.relative_to(REPO).with_suffix("").parts)


def mark_names(node: ast.expr) -> set[str]:
    """``pytest.mark.X`` or ``pytest.mark.X(...)`` (also inside a list or tuple) -> {"X"}."""
    if isinstance(node, ast.List | ast.Tuple):
        return set().union(*(mark_names(e) for e in node.elts)) if node.elts else set()
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "mark":
        return {node.attr}
    return set()


def fixture_name(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    for dec in fn.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        if isinstance(target, ast.Attribute) and target.attr == "fixture":
            if isinstance(dec, ast.Call):
                for kw in dec.keywords:
                    if kw.arg == "name" and isinstance(kw.value, ast.Constant):
                        return str(kw.value.value)
            return fn.name
    return None


def load(path: Path) -> Module:
    mod = Module(path, ast.parse(path.read_text(), str(path)))
    for node in mod.tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            name = fixture_name(node)
            if name is not None:
                mod.fixtures[name] = node
            else:
                mod.functions[node.name] = node
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tests"):
            for alias in node.names:
                mod.imported[alias.asname or alias.name] = (node.module, alias.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = {t.id for t in targets if isinstance(t, ast.Name)}
            if "pytestmark" in names and node.value is not None:
                mod.marks |= mark_names(node.value)
            if node.value is not None and any(
                isinstance(n, ast.Constant) and n.value == REQUIRE_ENV for n in ast.walk(node.value)
            ):
                mod.require_names |= names
    return mod


class Tree:
    def __init__(self) -> None:
        self.modules = {p: load(p) for p in sorted(TESTS.rglob("*.py"))}
        self.by_dotted = {m.dotted: m for m in self.modules.values()}

    def conftests(self, mod: Module) -> Iterator[Module]:
        """The module's own fixtures first, then conftest.py files from its directory up to tests/."""
        yield mod
        directory = mod.path.parent
        while True:
            conftest = self.modules.get(directory / "conftest.py")
            if conftest is not None and conftest is not mod:
                yield conftest
            if directory == TESTS:
                return
            directory = directory.parent

    def fixture(self, mod: Module, name: str) -> tuple[Module, ast.FunctionDef | ast.AsyncFunctionDef] | None:
        for m in self.conftests(mod):
            if name in m.fixtures:
                return m, m.fixtures[name]
        return None

    def helper(self, mod: Module, name: str) -> tuple[Module, ast.FunctionDef | ast.AsyncFunctionDef] | None:
        if name in mod.functions:
            return mod, mod.functions[name]
        if name in mod.imported:
            module, original = mod.imported[name]
            other = self.by_dotted.get(module)
            if other is not None and original in other.functions:
                return other, other.functions[original]
        return None

    def facilities(
        self, mod: Module, fn: ast.FunctionDef | ast.AsyncFunctionDef, seen: set[tuple[Path, str]] | None = None
    ) -> dict[str, str]:
        """What root-only facility ``fn`` uses, directly or through helpers and fixtures: {kind: where}."""
        seen = set() if seen is None else seen
        key = (mod.path, fn.name)
        if key in seen:
            return {}
        seen.add(key)
        where = f"{mod.path.relative_to(REPO)}:{fn.lineno} {fn.name}"
        found: dict[str, str] = {}
        for node in ast.walk(fn):
            kind = direct_use(mod, node)
            if kind is not None:
                found.setdefault(kind, f"{where} line {node.lineno}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                target = self.helper(mod, node.func.id)
                if target is not None:
                    for k, w in self.facilities(*target, seen).items():
                        found.setdefault(k, w)
        params = [a.arg for a in (*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs)]
        for name in params:
            target = self.fixture(mod, name)
            if target is not None:
                for k, w in self.facilities(*target, seen).items():
                    found.setdefault(k, w)
        return found

    def tests(self) -> Iterator[tuple[str, Module, ast.FunctionDef | ast.AsyncFunctionDef, set[str]]]:
        """(id, module, function, markers) for every test function and method under tests/."""
        for mod in self.modules.values():
            if not mod.path.name.startswith("test_") or mod.path == Path(__file__).resolve():
                continue  # this module names the facilities it looks for
            rel = mod.path.relative_to(REPO).as_posix()
            for node in mod.tree.body:
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
                    yield f"{rel}::{node.name}", mod, node, mod.marks | decorator_marks(node)
                elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                    outer = mod.marks | decorator_marks(node)
                    for item in node.body:
                        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name.startswith("test"):
                            yield f"{rel}::{node.name}::{item.name}", mod, item, outer | decorator_marks(item)


def decorator_marks(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> set[str]:
    return set().union(*(mark_names(d) for d in node.decorator_list)) if node.decorator_list else set()


def reason_text(node: ast.expr) -> str:
    return " ".join(str(n.value) for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str))


def direct_use(mod: Module, node: ast.AST) -> str | None:
    """ "ebpf", "root" or None for one AST node."""
    if isinstance(node, ast.Name) and (node.id in EBPF_NAMES or node.id in mod.require_names):
        return "ebpf"
    if isinstance(node, ast.Attribute) and node.attr in EBPF_NAMES:
        return "ebpf"
    if isinstance(node, ast.Constant) and node.value == REQUIRE_ENV:
        return "ebpf"
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os":
        if node.attr in UID_CHECKS or node.attr in PRIVILEGE_CALLS:
            return "root"
    if isinstance(node, ast.List | ast.Tuple) and node.elts:
        first = node.elts[0]
        if isinstance(first, ast.Constant) and first.value in ROOT_COMMANDS:
            return "root"
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in {"skip", "skipif"}:
            texts = [reason_text(k.value) for k in node.keywords if k.arg in {"reason", "msg"}]
            if name == "skip":  # skipif's positional argument is the condition: code, not prose
                texts += [reason_text(a) for a in node.args]
            if any(ROOT_REASON.search(t) for t in texts):
                return "root"
    return None


def unmarked_root_tests() -> dict[str, tuple[str, str]]:
    """{test id: (marker it needs, where the facility is used)} for root-only tests without a marker."""
    tree = Tree()
    missing: dict[str, tuple[str, str]] = {}
    for test_id, mod, fn, marks in tree.tests():
        found = tree.facilities(mod, fn)
        if "ebpf" in found and "ebpf" not in marks:
            missing[test_id] = ("ebpf", found["ebpf"])
        elif "root" in found and not marks & ROOT_MARKERS:
            missing[test_id] = ("root", found["root"])
    return missing


def test_every_root_only_test_carries_a_marker() -> None:
    missing = unmarked_root_tests()
    new = {t: v for t, v in missing.items() if t not in KNOWN_UNMARKED}
    assert not new, "root-only tests without their marker (add @pytest.mark.<marker>):\n" + "\n".join(
        f"  {t}: needs @pytest.mark.{marker} (uses it at {where})" for t, (marker, where) in sorted(new.items())
    )
    stale = {t for t in KNOWN_UNMARKED if t not in missing}
    assert not stale, f"marked or gone now; remove from KNOWN_UNMARKED: {sorted(stale)}"
    assert {t: missing[t][0] for t in KNOWN_UNMARKED} == KNOWN_UNMARKED


def test_the_scan_finds_what_it_looks_for() -> None:
    """The rule itself: the known root-only tests are seen as such, and a plain test is not."""
    tree = Tree()
    by_id = {test_id: (mod, fn) for test_id, mod, fn, _ in tree.tests()}
    expected = {
        "tests/store/test_store.py::test_disk_full_raises_to_the_caller_and_the_store_keeps_working": "root",
        "tests/store/test_store.py::test_permission_denied_for_an_unprivileged_user": "root",
        "tests/hardening/test_faults_embedded.py::test_a_full_disk_at_start_is_one_line": "root",
        "tests/hardening/test_faults_embedded.py::"
        "test_disk_full_mid_session_counts_loss_keeps_collecting_and_recovers": "root",
        **KNOWN_UNMARKED,
    }
    for test_id, kind in expected.items():
        assert kind in tree.facilities(*by_id[test_id]), test_id
    for plain in (
        "tests/store/test_store.py::test_one_writer_thread_and_concurrent_readers",
        "tests/hardening/test_faults_embedded.py::test_ring_buffer_overflow_is_counted_and_shown",
        "tests/collector/test_ebpf.py::test_unprivileged_start_says_what_to_do",
    ):
        if plain in by_id:
            assert tree.facilities(*by_id[plain]) == {}, plain


def _jobs(workflow: str) -> dict[str, str]:
    """Top-level jobs of a GitHub workflow: {job id: its text} (indentation-based, no YAML parser)."""
    jobs: dict[str, list[str]] = {}
    current: list[str] | None = None
    in_jobs = False
    for line in workflow.splitlines():
        if re.match(r"^\S", line):
            in_jobs = line.rstrip() == "jobs:"
            current = None
            continue
        match = re.match(r"^  ([\w-]+):\s*$", line)
        if in_jobs and match:
            current = jobs.setdefault(match.group(1), [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines) for name, lines in jobs.items()}


def _pytest_args(command: str) -> list[str]:
    words = shlex.split(command)
    return words[words.index("pytest") + 1 :]


def test_the_root_ci_job_runs_the_whole_suite() -> None:
    jobs = _jobs((REPO / ".github" / "workflows" / "ci.yml").read_text())
    assert jobs, "no jobs found in ci.yml"
    for name, text in jobs.items():
        assert re.search(r"^    timeout-minutes: \d+\s*$", text, re.MULTILINE), f"job {name} has no timeout-minutes"
    runs = [
        line.split("run:", 1)[1].strip()
        for text in jobs.values()
        for line in text.splitlines()
        if "run:" in line and "pytest" in line
    ]
    root = [r for r in runs if r.startswith("sudo ")]
    assert len(root) == 1, runs
    assert f"{REQUIRE_ENV}=1" in root[0] and "python -m pytest" in root[0]
    assert _pytest_args(root[0]) == [], f"the root job must not select tests: {root[0]}"
    # .ci/run (a clean clone, as root here) runs the README's command, also without a selection
    ci_run = [
        line.strip()
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if "pytest" in line and not line.lstrip().startswith("#")
    ]
    assert len(ci_run) == 1 and _pytest_args(ci_run[0]) == [], ci_run
    options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    addopts = shlex.split(options.get("addopts", ""))
    selecting = [a for a in addopts if a.split("=")[0] in {"-m", "-k", "--deselect", "--ignore", "--ignore-glob"}]
    assert not selecting, f"addopts deselects tests: {addopts}"
    assert {m.split(":")[0] for m in options["markers"]} >= ROOT_MARKERS
