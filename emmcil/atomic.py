"""The project's one atomic file writer: run directories (configs, checkpoints, results), arrow files, metadata.

A file is written under a temporary name in its own directory, flushed, fsync-ed and renamed onto its final name
(``os.replace``, atomic on POSIX and Windows), so a reader sees the old file or the new one, never half of one, and a
process killed mid-write leaves the previous version intact. Temporary files start with :data:`TMP_PREFIX`, which
:func:`remove_stale` sweeps away.

Files get the permissions any other tool would give them: ``0o666`` less the process's umask (``0o644`` under the
usual umask 022), because the temporary file is created with ``os.open(..., 0o666)`` and the kernel applies the umask
(and default ACLs). ``tempfile.mkstemp`` would create ``0o600`` files, unreadable by the rest of a group that shares
results or resumes runs on a cluster.
"""
from __future__ import annotations

import contextlib
import io
import os
import secrets
from pathlib import Path
from typing import Any, Callable, Iterator

TMP_PREFIX = ".tmp-"


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
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
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


def remove_stale(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed writers left anywhere under ``folder``; returns them."""
    stale = list(Path(folder).rglob(TMP_PREFIX + "*"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale
