"""The one way cvt-convert puts a file, a directory or an artifact's pair of files in place: atomically.

Everything is written under a hidden staging name `.<final name>.w<pid>-<nonce>` beside its final
name and renamed into place when complete, so a reader (or a kill) sees the old output or the new
one, never part of one. `remove_stale` deletes what killed writers left under that pattern.
"""

import contextlib
import ctypes
import errno
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from cvt_spec import OutputError

STAGED_NAME = re.compile(r"\.(?P<name>.+)\.w(?P<pid>[0-9]+)-(?P<nonce>[0-9a-f]{8})")

# Staged names this process is writing now: kept by `remove_stale` when a write nests in another
# (an artifact's manifest rewritten while an export beside it is staged).
_WRITING_NOW: set[str] = set()


def staged_path(final: Path) -> Path:
    """A fresh hidden name beside `final` that `remove_stale` knows: `.<name>.w<pid>-<nonce>`."""
    final = Path(final)
    return final.with_name(f".{final.name}.w{os.getpid()}-{secrets.token_hex(4)}")


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # an earlier process with our pid (this one's own writes are in _WRITING_NOW)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


def remove_path(path: Path) -> None:
    """Removes a file, a symlink (not its target) or a directory tree; nothing if absent."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale(directory) -> list[str]:
    """Deletes what writers that died mid-write (e.g. SIGKILL) left in `directory`; returns the names.

    Only entries of the staging pattern whose process no longer runs are touched, and never one that
    a symlink in the directory points at (an artifact's current version).
    """
    entries = list(Path(directory).iterdir())
    orphaned = {entry.name for entry in entries
                if (match := STAGED_NAME.fullmatch(entry.name)) and not _process_alive(int(match["pid"]))
                and os.path.abspath(entry) not in _WRITING_NOW}
    in_use = {os.readlink(entry) for entry in entries if entry.is_symlink() and entry.name not in orphaned}
    removed = sorted(orphaned - in_use)
    for name in removed:
        remove_path(Path(directory) / name)
    return removed


def make_dirs(out_dir) -> list[Path]:
    """Creates `out_dir` and missing parents; returns the ones created, deepest first."""
    created = []
    path = Path(out_dir)
    while not path.exists():
        created.append(path)
        path = path.parent
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return created


def remove_empty_dirs(paths: list[Path]) -> None:
    for path in paths:
        try:
            path.rmdir()
        except OSError:
            return  # not empty (another writer) or already gone


def fsync_path(path: Path) -> None:
    """Flushes a file, or a directory's entries, to the disk."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def fsync_tree(path: Path) -> None:
    """Flushes a file, or every file and directory under a directory, to the disk."""
    path = Path(path)
    if path.is_dir():
        for member in path.rglob("*"):
            if not member.is_symlink():
                fsync_path(member)
    fsync_path(path)


def write_text_file(path: Path, text: str) -> None:
    """Writes `text` to `path` (a staged name) and flushes it to the disk."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def point_symlink(link: Path, target: str) -> None:
    """Makes `link` a symlink to `target` (relative), replacing what `link` was in one rename."""
    staged = staged_path(link)
    os.symlink(target, staged)
    try:
        os.replace(staged, link)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def writing(final: Path, naming: Path | None = None) -> Iterator[Path]:
    """Yields a staged path for `final`; renames it onto `final` once the block completes.

    Parent directories are created, and removed again if the write fails; stale staging entries in
    the directory go first. `final` may be a file or a plain directory (replaced). Any OSError inside
    the block or while placing it becomes one OutputError naming `naming` (default `final`).

    Raises:
        OutputError: the output cannot be written; nothing is left behind.
    """
    final = Path(final)
    created = make_dirs(final.parent)
    staged = staged_path(final)
    placed = False
    _WRITING_NOW.add(os.path.abspath(staged))
    try:
        remove_stale(final.parent)
        yield staged
        fsync_tree(staged)
        _replace(staged, final)
        fsync_path(final.parent)
        placed = True
    except OSError as error:
        raise OutputError(f"cannot write {naming or final}: {error.strerror or error}") from None
    finally:
        _WRITING_NOW.discard(os.path.abspath(staged))
        remove_path(staged)
        if not placed:
            remove_empty_dirs(created)


def _replace(staged: Path, final: Path) -> None:
    """`os.replace` for a file; a directory becomes a hidden version that `final` links to.

    `final` -> `.<name>.w<pid>-<nonce>` is switched in one rename (rename cannot replace a non-empty
    directory); the version it replaces is removed afterwards.
    """
    if not staged.is_dir():
        os.replace(staged, final)
        return
    version = staged_path(final)
    os.replace(staged, version)
    previous = os.readlink(final) if final.is_symlink() else None
    if final.is_dir() and not final.is_symlink():
        _swap_in_symlink(final, version.name)
    else:
        point_symlink(final, version.name)
    if previous is not None and STAGED_NAME.fullmatch(previous):
        remove_path(final.parent / previous)


AT_FDCWD = -100
RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(first: Path, second: Path) -> bool:
    """Swaps two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where it is not supported."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def _swap_in_symlink(directory: Path, target: str) -> None:
    """Replaces a plain directory (an output written before outputs became symlinks) by a symlink.

    Where renameat2 cannot exchange them, the old tree is moved aside first: a kill between the two
    renames then leaves it under a staging name and no `directory` (README, "Bad input").
    """
    link = staged_path(directory)
    os.symlink(target, link)
    if not _exchange(link, directory):
        aside = staged_path(directory)
        os.replace(directory, aside)
        os.replace(link, directory)
        link = aside
    remove_path(link)


@contextlib.contextmanager
def writing_together(out_dir: Path, name: str, file_names: tuple[str, ...]) -> Iterator[Path]:
    """Yields a fresh hidden directory to write `file_names` into; they then replace the old ones at once.

    On disk: `.<name>.current` -> `.<name>.w<pid>-<nonce>/` holds the files, and each
    `out_dir/<file name>` is a fixed symlink through `.<name>.current`. Switching `.<name>.current` is
    one rename (the commit), so after a kill at any point the names give all the old files or all
    the new ones, or, where there were none, none. Plain files of the earlier two-file layout are
    first put behind links without changing what they hold.

    Raises:
        OutputError: naming the file whose write failed (as `out_dir/<file name>`); nothing is left behind.
    """
    out_dir = Path(out_dir)
    created = make_dirs(out_dir)
    version, pointer = staged_path(out_dir / name), out_dir / f".{name}.current"
    links = {out_dir / file_name: f"{pointer.name}/{file_name}" for file_name in file_names}
    made_links, committed = [], False
    _WRITING_NOW.add(os.path.abspath(version))
    try:
        remove_stale(out_dir)
        version.mkdir()
        yield version
        fsync_tree(version)
        _adopt_plain_files(out_dir, name, pointer, links)
        for link, target in links.items():  # dangling until the first commit: no artifact yet
            if not (link.is_symlink() and os.readlink(link) == target):
                point_symlink(link, target)
                made_links.append(link)
        previous = os.readlink(pointer) if pointer.is_symlink() else None
        point_symlink(pointer, version.name)  # the commit
        fsync_path(out_dir)
        committed = True
        if previous not in (None, version.name):
            remove_path(out_dir / previous)
    except OSError as error:
        written = Path(error.filename) if error.filename else None
        shown = out_dir / written.name if written is not None and written.parent == version else written
        raise OutputError(f"cannot write {shown or out_dir}: {error.strerror or error}") from None
    finally:
        _WRITING_NOW.discard(os.path.abspath(version))
        if not committed:
            if not pointer.is_symlink():  # no artifact here: the links made for it would dangle
                for link in made_links:
                    link.unlink(missing_ok=True)
            remove_path(version)
            remove_empty_dirs(created)


def _adopt_plain_files(out_dir: Path, name: str, pointer: Path, links: dict) -> None:
    """Puts plain files of the earlier two-file layout behind links, holding the same bytes at each step."""
    plain = [link for link in links if link.is_file() and not link.is_symlink()]
    if not plain or pointer.is_symlink():
        return
    old = staged_path(out_dir / name)
    old.mkdir()
    for link in plain:
        os.link(link, old / link.name)
    fsync_path(old)
    point_symlink(pointer, old.name)
    for link in plain:
        point_symlink(link, links[link])


@contextlib.contextmanager
def named_errors(path: Path) -> Iterator[None]:
    """A block in which an OSError without a file name gets `path` as its name."""
    try:
        yield
    except OSError as error:
        if not error.filename:
            error.filename = str(path)
        raise
