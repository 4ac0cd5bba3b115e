"""Writing files so that nothing is lost: atomic writes and fresh output folders.

A file written with :func:`atomic_write` is either the old file or the new
one, never half of each: the bytes go to a temporary file in the same folder,
which is then renamed over the target (``os.replace`` is atomic on POSIX and
Windows). A crash or Ctrl-C mid-write leaves the previous file untouched.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "atomic_write_text", "fresh_dir", "same_file"]


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Write ``path`` atomically: ``write(tmp_path)`` fills a temporary file, then it is renamed.

    Args:
        path: the final file; its folder is created if needed.
        write: called with the temporary file's path (same folder, so the
            rename never crosses file systems); it must write the whole file.

    Returns:
        ``Path(path)``. On any exception (Ctrl-C included) the temporary file
        is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` of a text file (UTF-8)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def fresh_dir(parent: str | os.PathLike, name: str = "run") -> Path:
    """A new, empty folder ``parent/name``, or ``parent/name2``, ``name3``, ... if taken.

    Never reuses a folder that exists, so one run cannot mix its outputs with
    an earlier run's.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for k in range(1, 100_000):
        folder = parent / (name if k == 1 else f"{name}{k}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise RuntimeError(f"no free folder name {name}<k> under {parent}")


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file (resolving links; False when ``b`` does not exist yet)."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()
