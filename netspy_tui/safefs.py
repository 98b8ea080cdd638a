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
  side files next to it by name, and copies the database file's mode to them);
* a path through a symbolic link of another user (neither root nor us) is refused wherever the link is
  (:func:`foreign_link`: what the kernel's ``fs.protected_symlinks`` does in sticky directories, whatever
  that setting), and so is a directory on the way that belongs to another user (:func:`make_private_dirs`);
* a file read for settings (the config file) is read only when it is a regular file of ours or root's that
  no other user can write (:func:`open_trusted_for_reading`), and never blocks on a FIFO.

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


def foreign_link(path: str | Path) -> str | None:
    """Why following ``path`` could take us where another user chose: the first symbolic link on the way (the
    last component included, links in links' targets too) that belongs to neither root nor us, in words; None
    when there is none (the walk ends at the first missing name). The kernel's ``fs.protected_symlinks`` refuses
    such a link only in a sticky world-writable directory, and only when it is set: refused here everywhere
    (a link in another user's own directory is refused anyway, with that directory)."""
    uid = os.geteuid()
    # The path as written, ``..`` kept: the kernel takes ``link/..`` as the parent of the link's target, while
    # os.path.abspath would fold it to the link's own directory (and never look at the link).
    pending = list(Path(os.getcwd(), path).parts[1:])
    current = Path("/")
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            current = current.parent  # (``current`` is a real directory: links on the way were followed)
            continue
        candidate = current / part
        try:
            st = os.lstat(candidate)
        except OSError:
            return None
        if not stat.S_ISLNK(st.st_mode):
            current = candidate
            continue
        if st.st_uid not in (0, uid):
            return f"{shown(candidate)} is a symbolic link of another user (uid {st.st_uid})"
        hops += 1
        if hops > 40:
            return f"{shown(candidate)}: too many levels of symbolic links"
        target = Path(os.readlink(candidate))
        if target.is_absolute():
            current = Path("/")
        pending[:0] = target.parts[1:] if target.is_absolute() else target.parts
    return None


def make_private_dirs(
    directory: Path, what: str = "the directory", hint: str = "", *, group_parents: bool = False
) -> None:
    """Create ``directory`` and any missing parents with mode ``0700`` (existing ones are left alone).

    :class:`UnsafePath` (nothing made) when the way to it goes through another user's symbolic link or
    directory, or through a directory others can write that is not sticky (:func:`unsafe_directory`; the
    directory itself may be writable by others, e.g. a shared export directory, since files are created in it
    exclusively); checked again once made (a name another user made first is not taken as ours).
    ``group_parents``: as for :func:`check_directory`."""
    link = foreign_link(directory)  # (as written: ``link/..`` is the link's target's parent, not folded away)
    if link:
        raise UnsafePath(f"refusing {what} {shown(directory)}: {link}", hint)
    directory = Path(os.path.abspath(directory))
    if group_parents:
        _GROUP_PARENTS_OK.add(directory)
    _refuse_unsafe(directory, what, hint, shared=True)
    missing: list[Path] = []
    current = directory
    while not os.path.lexists(current) and current != current.parent:
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, DIR_MODE)
    _refuse_unsafe(directory, what, hint, shared=True)


def _refuse_unsafe(directory: Path, what: str, hint: str, *, shared: bool = False) -> None:
    problem = _unsafe_directory(directory, shared=shared)
    if problem:
        raise UnsafePath(f"refusing {what} {shown(directory)}: {problem}", hint)


def create_exclusive(path: Path, what: str, hint: str) -> int:
    """A new file at ``path`` (mode 0600) opened for writing; :class:`UnsafePath` if the name exists
    in any form (file, link, dangling link, device), or when another user could add or swap names on the way to
    it (:func:`_unsafe_directory`, shared: its own directory may be a sticky one others can write, like /tmp; a
    directory above it of another user's could be swapped for a link between the check and the open, and was).
    ``what`` names the file in the message."""
    problem = _unsafe_directory(path.parent, shared=True)
    if problem:
        raise UnsafePath(f"refusing to write {what} {shown(path)}: {problem}", hint)
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
    file must be a regular file of ours with one name (not a hard link planted to another file, not
    another user's file), and no other user may add or swap names on the way to it (as for
    :func:`create_exclusive`: a log file's directory above it of another user's let it be swapped for a link to
    root's own directory, between the check and the open, or before a rollover renamed the old logs by name)."""
    problem = _unsafe_directory(path.parent, shared=True)
    if problem:
        raise UnsafePath(f"refusing to write {what} {shown(path)}: {problem}", hint)
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
    kind = None
    if not stat.S_ISREG(st.st_mode):
        kind = describe(st)
    elif st.st_nlink != 1:
        kind = "a file with several hard links"
    elif st.st_uid != os.geteuid():
        kind = f"another user's file (uid {st.st_uid})"
    return _keep_or_refuse(fd, kind and f"it is {kind}", f"refusing to write {what} {shown(path)}", hint)


def _keep_or_refuse(fd: int, problem: str | None, refusal: str, hint: str) -> int:
    """``fd`` (opened non-blocking) switched to blocking when there is no ``problem``; else closed, and
    :class:`UnsafePath` saying ``refusal: problem``."""
    if problem:
        os.close(fd)
        raise UnsafePath(f"{refusal}: {problem}", hint)
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


def open_trusted_for_reading(path: Path, what: str, hint: str) -> int:
    """``path`` opened read-only if root may take settings from it: a regular file (never blocks on a FIFO)
    that belongs to us or root and that neither group nor others can write (what ssh asks of its files), on a
    way through no other user's symbolic link (a link of ours or root's is followed: a config file kept with
    one's dotfiles). :class:`UnsafePath` names ``what`` and why; :class:`OSError` when it cannot be opened
    (:class:`FileNotFoundError`: there is none)."""
    problem = foreign_link(path)
    if problem:
        raise UnsafePath(f"refusing {what} {shown(path)}: {problem}", hint)
    fd = os.open(os.path.realpath(path), os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        problem = f"it is {describe(st)}, not a regular file"
    elif st.st_uid not in (0, os.geteuid()):
        problem = f"it belongs to another user (uid {st.st_uid})"
    elif st.st_mode & 0o022:
        who = "others" if st.st_mode & 0o002 else "its group"
        problem = f"it is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o})"
    return _keep_or_refuse(fd, problem, f"refusing {what} {shown(path)}", hint)


def tighten_directory(directory: Path, keep: int = 0) -> None:
    """Make ``directory``, ours, ``0700`` (plus the ``keep`` bits of its mode, e.g. setgid) through a descriptor
    opened without following a link: a symbolic link there is left alone (what it points to is judged by
    :func:`check_directory`), never changed through."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        if os.path.islink(directory):
            return
        raise
    try:
        st = os.fstat(fd)
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077:
            os.fchmod(fd, DIR_MODE | (st.st_mode & keep))
    finally:
        os.close(fd)


# --- SQLite files ---------------------------------------------------------------------------------


#: Store directories whose parents may be writable by a group this process is in: only the aggregator's (its
#: stores on a Kubernetes volume under ``fsGroup``), named by :func:`check_directory` with ``group_parents``.
_GROUP_PARENTS_OK: set[Path] = set()


def _unsafe_directory(directory: Path, *, shared: bool = False) -> str | None:
    """Why another user could add or swap names in ``directory`` (None: only root or we can).

    No symbolic link on the way may belong to another user (:func:`foreign_link`); every directory on the
    way to it (as written and with links resolved) must belong to root or to us; the directory itself must
    not be writable by group or others (unless ``shared``: files are only ever created in it exclusively; one
    that every user can write must then be sticky, like /tmp, where others cannot rename or replace what they do
    not own: one that was not let another user swap an export for a forged one), and one above it only if it is
    sticky.
    Names not made yet are skipped.
    """
    link = foreign_link(directory)
    if link:
        return link
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
            if (
                st.st_mode & 0o022
                and not (depth and st.st_mode & stat.S_ISVTX)
                and not (depth == 0 and shared and (st.st_mode & stat.S_ISVTX or not st.st_mode & 0o002))
            ):
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


_DB_HINT = "put the store in a directory only root can write, e.g. /var/lib/netspy-tui/events.sqlite3"


def check_db_path(path: Path, *, creating: bool) -> None:
    """Refuse an SQLite path that is a link, not a regular file, sits in a directory other users can
    write, or has a side file (``-wal``, ``-shm``, ``-journal``) that is not ours."""
    hint = _DB_HINT
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
    make_private_dirs(path.parent, "the store's directory", _DB_HINT)
    check_db_path(path, creating=True)
    for suffix in SQLITE_SIDE_FILES:  # (SQLite reuses a -wal/-shm as it finds it: one left readable stays so)
        with contextlib.suppress(OSError):
            side = os.open(f"{path}{suffix}", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                side_st = os.fstat(side)
                if stat.S_ISREG(side_st.st_mode) and side_st.st_uid == os.geteuid() and side_st.st_mode & 0o077:
                    os.fchmod(side, FILE_MODE)
            finally:
                os.close(side)
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


_SCRATCH_HINT = "set TMPDIR to a directory only root can write, or leave it unset (/tmp)"


def scratch_dir() -> Path:
    """A new private (0700) directory for this process's scratch data; remove it with :func:`remove_tree`.
    :class:`UnsafePath` when another user could add or swap names on the way to it (a ``TMPDIR`` of another
    user's, kept by ``su`` or ``sudo``: the directory could be renamed away and a link put in its place, and
    files written in it by name — the REPL's history — went where the link led)."""
    parent = Path(_private_runtime_dir() or tempfile.gettempdir())
    _refuse_unsafe(parent, "the scratch directory's place", _SCRATCH_HINT, shared=True)
    directory = Path(tempfile.mkdtemp(prefix="netspy-tui-", dir=parent))
    _live_scratch.add(directory)
    problem = _unsafe_directory(directory)
    if problem:
        remove_tree(directory)
        raise UnsafePath(f"refusing the scratch directory {shown(directory)}: {problem}", _SCRATCH_HINT)
    return directory


def remove_tree(directory: Path) -> None:
    """Remove a scratch directory and everything in it (links inside are removed, not followed)."""
    shutil.rmtree(directory, ignore_errors=True)
    _live_scratch.discard(directory)


def remove_all_scratch() -> None:
    """Remove every scratch directory this process still has (before an immediate exit)."""
    for directory in list(_live_scratch):
        remove_tree(directory)
