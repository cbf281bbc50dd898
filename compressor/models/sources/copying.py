"""Files into the store by streaming: copied (or hard-linked) in 8 MB chunks, each hashed as it goes.

A multi-GB shard never sits in memory: RSS stays at one chunk while the page cache does the
rest. A copy is read back and compared with the source's hash, so a file changed or cut
short while it was copied is caught before the store holds it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from compressor.models.sources.errors import SourceError

CHUNK = 8 << 20
BytesDone = Callable[[int], None]


def write_chunks(chunks: Iterable[bytes], dst: Path, on_bytes: BytesDone) -> str:
    """Write `chunks` to `dst` (fsynced); returns their sha256."""
    h = hashlib.sha256()
    with dst.open("wb") as out:
        for chunk in chunks:
            h.update(chunk)
            out.write(chunk)
            on_bytes(len(chunk))
        out.flush()
        os.fsync(out.fileno())
    return h.hexdigest()


def file_chunks(path: Path) -> Iterable[bytes]:
    with path.open("rb") as f:
        yield from iter(lambda: f.read(CHUNK), b"")


def hash_file(path: Path, on_bytes: BytesDone | None = None) -> str:
    h = hashlib.sha256()
    for chunk in file_chunks(path):
        h.update(chunk)
        if on_bytes is not None:
            on_bytes(len(chunk))
    return h.hexdigest()


def copy_verified(src: Path, dst: Path, on_bytes: BytesDone, link: bool = False) -> str:
    """`src` → `dst`; returns the sha256 both have. `link` hard-links where the filesystem allows
    (same device), which costs no space but shares the inode with the source."""
    if link:
        try:
            os.link(src, dst)
            return hash_file(dst, on_bytes)
        except OSError:
            pass  # another filesystem: copy
    before = src.stat()
    digest = write_chunks(file_chunks(src), dst, on_bytes)
    after = src.stat()
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        raise SourceError(f"{src} changed while it was copied; import it again")
    if hash_file(dst) != digest:
        raise SourceError(f"the copy of {src} does not read back as written (sha256 differs); check the disk")
    return digest
