"""HTTP Range for artifacts streamed from a remote store (local files use Starlette's FileResponse).

One `bytes=` range per request is served as 206; a multi-range request gets the whole file
(RFC 9110 lets a server ignore Range), an unsatisfiable one 416 with `Content-Range: bytes */size`.
"""

from __future__ import annotations

from fastapi import HTTPException


def parse_byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """`Range` header → (start, end inclusive), None for the whole file; 416 when unsatisfiable."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, sep, last = spec.strip().partition("-")
    if not sep or not (first.isdigit() or last.isdigit()) or not all(p.isdigit() or p == "" for p in (first, last)):
        return None  # malformed: ignored, like most servers
    if first == "":  # suffix range: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(size - n, 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> HTTPException:
    return HTTPException(416, f"the range is outside the file ({size} bytes)", headers={"Content-Range": f"bytes */{size}"})
