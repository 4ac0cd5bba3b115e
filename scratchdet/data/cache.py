"""Where scratchdet caches data: one setting, independent of the working directory.

The SynthFaces cache (and, by default, where WIDER FACE is looked for) lives in
:func:`default_data_root`:

1. ``$SCRATCHDET_DATA`` when set;
2. otherwise the ``data/`` folder of the source checkout when scratchdet runs
   from one (``pip install -e .``: the folder beside ``scratchdet/`` and
   ``pyproject.toml``), so the course's notebooks and CLI share one cache;
3. otherwise ``~/.cache/scratchdet`` (``$XDG_CACHE_HOME/scratchdet``).

Every ``root=None`` / ``data.root: null`` in the package means this folder.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_ENV", "default_data_root", "resolve_data_root"]

DATA_ENV = "SCRATCHDET_DATA"


def default_data_root() -> Path:
    """The data folder scratchdet uses when none is given (see the module docstring)."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "scratchdet").is_dir():
        return checkout / "data"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "scratchdet"


def resolve_data_root(root: str | os.PathLike | None) -> Path:
    """``root`` as a ``Path``, or :func:`default_data_root` when it is ``None``."""
    return default_data_root() if root is None else Path(root).expanduser()
