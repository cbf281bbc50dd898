"""Artifact stores: a local folder (`local.py`) or an S3-compatible bucket (`s3.py`).

`open_store(url, default_dir)` picks one by URL; it takes the two values it needs, not the
whole Settings, so the stores know nothing above them.
"""

from __future__ import annotations

from pathlib import Path

from service.storage.local import ArtifactStore, ArtifactStoreError, LocalArtifactStore, StoredFile

__all__ = ["ArtifactStore", "ArtifactStoreError", "LocalArtifactStore", "StoredFile", "open_store"]


def open_store(url: str, default_dir: Path) -> ArtifactStore:
    """The store `url` names: `s3://bucket/prefix?…`, `file:///path`, or (empty) `default_dir`."""
    if url.startswith("s3://"):
        from service.storage.s3 import S3ArtifactStore  # boto3 only where S3 is used

        return S3ArtifactStore.from_url(url)
    if url.startswith("file://"):
        return LocalArtifactStore(Path(url.removeprefix("file://")))
    return LocalArtifactStore(Path(default_dir))
