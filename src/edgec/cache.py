"""The user cache directory of edgec (emulator rootfs, tuning databases, build helpers).

``$EDGEC_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/edgec``, else ``~/.cache/edgec``.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """Return (and create) ``<cache root>/<parts...>``."""
    root = os.environ.get("EDGEC_CACHE_DIR")
    if root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgec"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
