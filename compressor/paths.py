"""Where the service keeps its files: one home folder, `$COMPRESSOR_HOME` or ~/.cache/compressor."""

from __future__ import annotations

import os
from pathlib import Path


def compressor_home() -> Path:
    home = os.environ.get("COMPRESSOR_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "compressor"
