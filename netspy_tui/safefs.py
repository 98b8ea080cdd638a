"""Creating files as root without being redirected: exclusive, no links followed, private modes.

netspy-tui runs as root and writes what every process on the host connects to. Every file it
creates goes through this module:

* new files are created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` and mode ``0600`` (set with
  ``fchmod``, whatever the umask), so a name another user planted (a file, a dangling symbolic link)
  makes the creation fail instead of being followed;
* directories it creates are ``0700``;
* scratch data lives in a private directory made by :func:`scratch_dir` (``mkdtemp``: a fresh
  ``0700`` directory under ``$XDG_RUNTIME_DIR`` when that is private, else the temp directory);
* an SQLite file named by the user (``--db``) is checked by :func:`prepare_db_file`: not a link,
  a regular file, in a directory no other user can write (SQLite creates its ``-wal``/``-shm``
  side files next to it by name, and copies the database file's mode to them).

Refusals are :class:`UnsafePath` (a :class:`~netspy_tui.errors.UsageError`: one line, exit 2).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import IO

from netspy_tui.errors import UsageError
from netspy_tui.textsafe import clean

FILE_MODE = 0o600
DIR_MODE = 0o700
#: SQLite's side files, created next to the database by name.
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: How many numbered names :func:`create_unique` tries before giving up.
MAX_UNIQUE_TRIES = 1000


class UnsafePath(UsageError):
    """A path netspy-tui refuses to write (or read) because it could redirect root's writes."""


def shown(path: str | Path) -> str:
    return clean(str(path), 200)


def describe(st: os.stat_result) -> str:
    """What kind of file ``st`` is, in words."""
    mode = st.st_mode
    kinds = [
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISREG, "a regular file"),
    ]
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and any missing parents with mode ``0700`` (existing ones are left alone)."""
    missing: list[Path] = []
    current = Path(os.path.abspath(directory))
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, DIR_MODE)


def create_exclusive(path: Path, what: str, hint: str) -> int:
    """A new file at ``path`` (mode 0600) opened for writing; :class:`UnsafePath` if the name exists
    in any form (file, link, dangling link, device). ``what`` names the file in the message."""
    try:
        fd = os.open(path, _CREATE, FILE_MODE)
    except FileExistsError:
        raise UnsafePath(f"refusing to write {what} {shown(path)}: it {_exists_as(path)}", hint) from None
    os.fchmod(fd, FILE_MODE)
    return fd


def _exists_as(path: Path) -> str:
    try:
        st = os.lstat(path)
    except OSError:
        return "already exists"
    if stat.S_ISREG(st.st_mode):
        return "already exists"
    return f"already exists as {describe(st)}"


def create_unique(directory: Path, stem: str, suffix: str) -> tuple[Path, int]:
    """A fresh file ``directory/stem{suffix}`` (or ``stem-1{suffix}``, ``stem-2``, ...) created
    exclusively: whatever another user planted at a predicted name is skipped, never followed."""
    for n in range(MAX_UNIQUE_TRIES):
        path = directory / (f"{stem}{suffix}" if n == 0 else f"{stem}-{n}{suffix}")
        try:
            fd = os.open(path, _CREATE, FILE_MODE)
        except FileExistsError:
            continue
        os.fchmod(fd, FILE_MODE)
        return path, fd
    raise FileExistsError(f"{MAX_UNIQUE_TRIES} names like {directory / stem}{suffix} are taken")


def open_text(fd: int) -> IO[str]:
    """A text stream (UTF-8, no newline translation) over a descriptor from this module."""
    return os.fdopen(fd, "w", encoding="utf-8", newline="")


def open_append(path: Path, what: str, hint: str) -> int:
    """``path`` opened for appending (created 0600 if missing) without following a link; an existing
    file must be a regular file with one name (not a hard link planted to another file)."""
    try:
        fd = os.open(
            path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, FILE_MODE
        )
    except OSError:
        if os.path.islink(path):
            raise UnsafePath(f"refusing to write {what} {shown(path)}: it is a symbolic link", hint) from None
        with contextlib.suppress(OSError):  # (a FIFO with no reader: ENXIO; a socket: ENXIO too)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
                raise UnsafePath(f"refusing to write {what} {shown(path)}: it is {describe(st)}", hint) from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        kind = describe(st) if not stat.S_ISREG(st.st_mode) else "a file with several hard links"
        raise UnsafePath(f"refusing to write {what} {shown(path)}: it is {kind}", hint)
    os.set_blocking(fd, True)
    return fd


class NotRegularFile(ValueError):
    """What :func:`open_regular_for_reading` found instead of a regular file (``kind``: in words)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def open_regular_for_reading(path: Path) -> int:
    """``path`` opened read-only if it is a regular file; never blocks on a FIFO (opened
    non-blocking, checked, then switched to blocking). Raises :class:`NotRegularFile` for anything
    else and :class:`OSError` when it cannot be opened."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotRegularFile(describe(st))
    os.set_blocking(fd, True)
    return fd


# --- SQLite files ---------------------------------------------------------------------------------


#: Store directories whose parents may be writable by a group this process is in: only the aggregator's (its
#: stores on a Kubernetes volume under ``fsGroup``), named by :func:`check_directory` with ``group_parents``.
_GROUP_PARENTS_OK: set[Path] = set()


def _unsafe_directory(directory: Path) -> str | None:
    """Why another user could add or swap names in ``directory`` (None: only root or we can).

    Every directory on the way to it (as written and with links resolved) must belong to root or to
    us; the directory itself must not be writable by group or others, and one above it only if it is
    sticky (like /tmp: others cannot rename what they do not own there).
    """
    uid = os.geteuid()
    groups = {os.getegid(), *os.getgroups()}
    group_ok = Path(os.path.abspath(directory)) in _GROUP_PARENTS_OK
    for variant in dict.fromkeys([Path(os.path.abspath(directory)), Path(os.path.realpath(directory))]):
        for depth, path in enumerate([variant, *variant.parents]):
            try:
                st = os.stat(path)
            except OSError:
                continue
            if st.st_uid not in (0, uid):
                return f"{shown(path)} belongs to another user (uid {st.st_uid})"
            if st.st_mode & 0o022 and (depth == 0 or not st.st_mode & stat.S_ISVTX):
                if group_ok and depth and uid != 0 and not st.st_mode & 0o002 and st.st_gid in groups:
                    # Not root: a directory above the store's own, writable by a group this process is in (a
                    # Kubernetes volume's root under fsGroup: root:<fsGroup>, 2775). Whoever could rename names
                    # in it could only redirect this process's writes to files its own user may write anyway;
                    # the store's own directory must still be private (depth 0), and for root nothing changes.
                    continue
                return f"{shown(path)} is writable by other users"
    return None


def unsafe_directory(directory: Path) -> str | None:
    """Why another user could add or swap names in ``directory`` (an existing one), or None: see
    :func:`check_directory`, which refuses it."""
    return _unsafe_directory(directory)


def check_directory(directory: Path, what: str, hint: str, *, group_parents: bool = False) -> None:
    """Refuse ``directory`` for files SQLite creates by name when another user could add or swap names in
    it or above it (the rules of :func:`check_db_path`); :class:`UnsafePath` names ``what``. ``group_parents``:
    directories above it may be writable by a group this (non-root) process is in, for it and the stores in it
    from now on (the aggregator's volume under ``fsGroup``; nowhere else)."""
    if group_parents:
        _GROUP_PARENTS_OK.add(Path(os.path.abspath(directory)))
    problem = _unsafe_directory(directory)
    if problem:
        raise UnsafePath(f"refusing {what} {shown(directory)}: {problem}", hint)


def check_db_path(path: Path, *, creating: bool) -> None:
    """Refuse an SQLite path that is a link, not a regular file, sits in a directory other users can
    write, or has a side file (``-wal``, ``-shm``, ``-journal``) that is not ours."""
    hint = "put the store in a directory only root can write, e.g. /var/lib/netspy-tui/events.sqlite3"
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise UnsafePath(f"refusing the store {shown(path)}: it is {describe(st)}, not a regular file", hint)
    problem = _unsafe_directory(path.parent)
    if problem:
        raise UnsafePath(
            f"refusing the store {shown(path)}: {problem}, who could plant links at its -wal/-shm names", hint
        )
    uid = os.geteuid()
    for suffix in SQLITE_SIDE_FILES:
        side = Path(f"{path}{suffix}")
        try:
            side_st = os.lstat(side)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(side_st.st_mode) or side_st.st_nlink != 1 or side_st.st_uid not in (0, uid):
            what = describe(side_st) if not stat.S_ISREG(side_st.st_mode) else "not a file of ours"
            raise UnsafePath(
                f"refusing the store {shown(path)}: {shown(side)} is {what}",
                "remove it, or choose another file for the store",
            )
    if not creating and st is None:
        raise FileNotFoundError(f"no such file: {path}")


def prepare_db_file(path: Path) -> tuple[int, int]:
    """Make ``path`` ready for SQLite to open read-write and return its (device, inode).

    A missing file is created exclusively, mode 0600 (SQLite gives its ``-wal``/``-shm`` the same
    mode); an existing one of ours with group/other bits set is tightened to 0600. Missing parent
    directories are created 0700 first, then everything is checked by :func:`check_db_path`.
    """
    make_private_dirs(path.parent)
    check_db_path(path, creating=True)
    try:
        fd = os.open(path, _CREATE, FILE_MODE)
    except FileExistsError:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and st.st_mode & 0o077:
            os.fchmod(fd, FILE_MODE)
    else:
        os.fchmod(fd, FILE_MODE)
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePath(f"refusing the store {shown(path)}: it is {describe(st)}, not a regular file", "")
    return st.st_dev, st.st_ino


def verify_same_file(path: Path, identity: tuple[int, int]) -> None:
    """After SQLite opened ``path`` by name: it is still the regular file :func:`prepare_db_file` made."""
    st = os.lstat(path)
    if (st.st_dev, st.st_ino) != identity or not stat.S_ISREG(st.st_mode):
        raise UnsafePath(
            f"refusing the store {shown(path)}: it was replaced while it was being opened",
            "check who else writes to that directory",
        )


# --- scratch --------------------------------------------------------------------------------------


def _private_runtime_dir() -> str | None:
    """``$XDG_RUNTIME_DIR`` when it is an absolute directory of ours that nobody else can enter."""
    value = os.environ.get("XDG_RUNTIME_DIR", "")
    if not value or not os.path.isabs(value):
        return None
    try:
        st = os.stat(value)
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077:
        return value
    return None


#: Scratch directories of this process not removed yet (for an exit that cannot wait: signals.py).
_live_scratch: set[Path] = set()


def scratch_dir() -> Path:
    """A new private (0700) directory for this process's scratch data; remove it with :func:`remove_tree`."""
    directory = Path(tempfile.mkdtemp(prefix="netspy-tui-", dir=_private_runtime_dir()))
    _live_scratch.add(directory)
    return directory


def remove_tree(directory: Path) -> None:
    """Remove a scratch directory and everything in it (links inside are removed, not followed)."""
    shutil.rmtree(directory, ignore_errors=True)
    _live_scratch.discard(directory)


def remove_all_scratch() -> None:
    """Remove every scratch directory this process still has (before an immediate exit)."""
    for directory in list(_live_scratch):
        remove_tree(directory)
