"""The project's one atomic file writer: run directories (configs, checkpoints, results), arrow files, metadata.

A file is written under a temporary name in its own directory, flushed, fsync-ed and renamed onto its final name
(``os.replace``, atomic on POSIX and Windows), so a reader sees the old file or the new one, never half of one, and a
process killed mid-write leaves the previous version intact. Temporary files start with :data:`TMP_PREFIX`, which
:func:`remove_stale` sweeps away.

Files get the permissions any other tool would give them: ``0o666`` less the process's umask (``0o644`` under the
usual umask 022), because the temporary file is created with ``os.open(..., 0o666)`` and the kernel applies the umask
(and default ACLs). ``tempfile.mkstemp`` would create ``0o600`` files, unreadable by the rest of a group that shares
results or resumes runs on a cluster.

A full disk (or quota) is :class:`DiskFullError`, whose message is ``No space left on device: <path>`` and what was
kept: torch's zip writer, for one, buries the ``ENOSPC`` under an error of its own ("unexpected pos").
"""
from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets
import time
from pathlib import Path
from typing import Any, Callable, Iterator

TMP_PREFIX = ".tmp-"
FULL_DISK_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class DiskFullError(OSError):
    """A write ran out of space (ENOSPC, or EDQUOT: over quota); ``path`` is the file that was being written, and
    its previous version (if any) is intact."""

    def __init__(self, path: str | os.PathLike, code: int = errno.ENOSPC):
        self.path = Path(path)
        super().__init__(code, f"No space left on device: {self.path} (not written; any earlier version of it is "
                               f"kept as it was)")

    def __str__(self) -> str:
        return self.strerror


def _full_disk(error: BaseException | None) -> OSError | None:
    """The OSError of a full disk in ``error`` or the errors it was raised from, else None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in FULL_DISK_ERRNOS:
            return error
        error = error.__cause__ or error.__context__
    return None


def disk_full(error: BaseException, path: str | os.PathLike | None = None) -> DiskFullError | None:
    """``error`` as a :class:`DiskFullError` when a full disk (ENOSPC, EDQUOT) is in it or in the errors it was
    raised from (a log writer's, a library's), naming ``path`` or the file the OSError names; else None."""
    if isinstance(error, DiskFullError):
        return error
    full = _full_disk(error)
    if full is None:
        return None
    return DiskFullError(path or full.filename or "a file being written", full.errno)


class _Recording:
    """The temporary file, remembering a full disk met by ``write``: a writer that catches the OSError and fails
    with another error (torch's zip writer) must not hide it. Everything else is the file's own."""

    def __init__(self, f):
        self.f, self.full = f, None

    def write(self, b) -> int:
        try:
            return self.f.write(b)
        except OSError as e:
            if e.errno in FULL_DISK_ERRNOS:
                self.full = e.errno
            raise

    def __getattr__(self, name):
        return getattr(self.f, name)


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new, empty, exclusively created file next to ``path`` (mode 0o666 less the umask): (fd, its path)."""
    while True:
        tmp = path.parent / f"{TMP_PREFIX}{path.name}.{os.getpid()}.{secrets.token_hex(4)}"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:  # a name drawn twice: draw again
            continue


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[io.BufferedWriter]:
    """``with atomic_open(path) as f: f.write(...)``: a binary file that replaces ``path`` when the block ends
    without an exception; on an exception (or a kill) ``path`` keeps its previous content and the temporary file is
    removed (a kill leaves it behind, under :data:`TMP_PREFIX`). Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recording = None
    try:
        fd, tmp = _create_temporary(path)
    except OSError as e:
        if e.errno in FULL_DISK_ERRNOS:
            raise DiskFullError(path, e.errno) from e
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            recording = _Recording(f)
            yield recording
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, DiskFullError):
            raise
        if recording is not None and recording.full is not None:
            raise DiskFullError(path, recording.full) from e
        full = disk_full(e, path)
        if full is not None:
            raise full from e
        raise
    _fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], Any]) -> Path:
    """Call ``write(f)`` on a binary file that atomically replaces ``path`` (see :func:`atomic_open`)."""
    with atomic_open(path) as f:
        write(f)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def move_aside(path: str | os.PathLike, reason: str) -> Path:
    """Rename ``path`` to ``<path>.unreadable-<time>`` (never over another file) and write the ``reason`` beside
    it (``<that name>.txt``): a file that cannot be read is kept for a look, never overwritten. Returns the new
    path."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(1000):
        aside = path.with_name(f"{path.name}.unreadable-{stamp}" + (f"-{k}" if k else ""))
        if not aside.exists():
            break
    os.replace(path, aside)
    write_text(aside.with_name(aside.name + ".txt"), f"{path.name} could not be read ({reason}); it was moved "
                                                        f"here on {time.strftime('%Y-%m-%d %H:%M:%S %z')}.\n")
    return aside


def remove_stale(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed writers left anywhere under ``folder``; returns them."""
    stale = list(Path(folder).rglob(TMP_PREFIX + "*"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale
