"""Where gristmill keeps provisioned models and other cached files."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The model cache: $GRISTMILL_CACHE, else ~/.cache/gristmill. Created on first use."""
    p = Path(os.environ.get("GRISTMILL_CACHE") or Path.home() / ".cache" / "gristmill")
    p.mkdir(parents=True, exist_ok=True)
    return p
