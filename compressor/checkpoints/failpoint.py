"""A kill switch for crash tests: `COMPRESSOR_FAILPOINT=<unit key>` SIGKILLs the process right after that unit is saved.

What a test needs to crash a job at an exact point (after GPTQ layer k, after training step
k) with the same signal the out-of-memory killer sends; unset, it costs one dict lookup.
A key ending in `*` matches a prefix. `COMPRESSOR_FAILPOINT_ONCE=<file>` fires only when
that file does not exist yet (and creates it), so the re-queued attempt runs through.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

ENV = "COMPRESSOR_FAILPOINT"
ONCE_ENV = "COMPRESSOR_FAILPOINT_ONCE"


def reached(key: str) -> None:
    want = os.environ.get(ENV)
    if not want or not (key == want or (want.endswith("*") and key.startswith(want[:-1]))):
        return
    once = os.environ.get(ONCE_ENV)
    if once:
        marker = Path(once)
        if marker.exists():
            return
        marker.write_text(key)
    os.kill(os.getpid(), signal.SIGKILL)
