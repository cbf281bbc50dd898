"""Giving freed host memory back to the operating system between layers.

glibc keeps freed blocks below its mmap threshold (at most 32 MB) in the heap for reuse, so a
walk that frees one layer's tensors and loads the next one's shapes differently grows the
process's RSS layer after layer. `malloc_trim(0)` returns the free heap pages; it is a no-op
where the C library has no such call (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache


@cache
def _malloc_trim():  # noqa: ANN202
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim") if name else None
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
