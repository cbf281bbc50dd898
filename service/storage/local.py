"""The local artifact store, and the interface both stores share (`publish`, `open`).

`LocalArtifactStore` keeps one folder per job, published atomically with a SHA-256 per file;
`S3ArtifactStore` (`service/storage/s3.py`) does the same in a bucket. `open_store` in this
package's `__init__` picks one by URL.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from compressor.export.format import sha256_file  # one definition for the exporter, the stores and the loader


class ArtifactStoreError(OSError):
    """The store could not be read or written (a network error, a missing bucket, …)."""


def list_staging(staging: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The files of a finished output folder with their listing entry {name, size, sha256}."""
    files = sorted(p for p in staging.rglob("*") if p.is_file() and not p.is_symlink())
    return [(p, {"name": p.relative_to(staging).as_posix(), "size": p.stat().st_size, "sha256": sha256_file(p)})
            for p in files]


@dataclass
class StoredFile:
    """One published file, ready to be served: a local path (served by the web server itself)
    or a byte-range reader (streamed from a remote store)."""

    name: str
    size: int
    local_path: Path | None = None
    reader: Callable[[int, int], Iterator[bytes]] | None = None  # (start, end inclusive) -> chunks

    def read(self, start: int, end: int) -> Iterator[bytes]:
        if self.local_path is not None:
            return _read_local(self.local_path, start, end)
        assert self.reader is not None
        return self.reader(start, end)


def _read_local(path: Path, start: int, end: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as f:
        f.seek(start)
        left = end - start + 1
        while left > 0 and (block := f.read(min(chunk, left))):
            left -= len(block)
            yield block


class ArtifactStore(Protocol):
    def publish(self, job_id: str, staging: Path) -> list[dict[str, Any]]: ...
    def open(self, job_id: str, name: str) -> StoredFile | None: ...


class LocalArtifactStore:
    """`root/<job_id>/<name>`. A job's folder appears complete or not at all (one rename)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def publish(self, job_id: str, staging: Path) -> list[dict[str, Any]]:
        """Move the finished output folder into the store; returns [{name, size, sha256}]."""
        self.root.mkdir(parents=True, exist_ok=True)
        listing = [entry for _, entry in list_staging(staging)]
        dest = self.root / job_id
        incoming = self.root / f".incoming-{job_id}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(staging, incoming)
        except OSError as e:  # another file system: copy next to the destination first
            if e.errno != errno.EXDEV:
                raise
            shutil.copytree(staging, incoming)
            shutil.rmtree(staging, ignore_errors=True)
        if dest.exists():  # left by an earlier attempt that crashed after publishing
            shutil.rmtree(dest)
        os.rename(incoming, dest)
        return listing

    def path(self, job_id: str, name: str) -> Path | None:
        """The file of a published artifact, or None; never a path outside the job's folder."""
        base = (self.root / job_id).resolve()
        candidate = (base / name).resolve()
        if base not in candidate.parents or not candidate.is_file():
            return None
        return candidate

    def open(self, job_id: str, name: str) -> StoredFile | None:
        path = self.path(job_id, name)
        return None if path is None else StoredFile(name, path.stat().st_size, local_path=path)

