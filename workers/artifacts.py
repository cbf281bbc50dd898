"""The artifact store: one folder per job, published atomically with a SHA-256 per file."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class LocalArtifactStore:
    """`root/<job_id>/<name>`. A job's folder appears complete or not at all (one rename)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def publish(self, job_id: str, staging: Path) -> list[dict[str, Any]]:
        """Move the finished output folder into the store; returns [{name, size, sha256}]."""
        self.root.mkdir(parents=True, exist_ok=True)
        files = sorted(p for p in staging.rglob("*") if p.is_file() and not p.is_symlink())
        listing = [
            {"name": p.relative_to(staging).as_posix(), "size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in files
        ]
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

    def delete(self, job_id: str) -> None:
        shutil.rmtree(self.root / job_id, ignore_errors=True)
