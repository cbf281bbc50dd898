"""A job's resume state mirrored to the S3 artifact store, so any worker sharing the bucket resumes it.

The library writes checkpoints to a local folder and reports each change (files written, the
journal last, then files removed); this mirror uploads them under
`<prefix>/<job_id>/resume/<same relative path>` in that order. A kill mid-upload leaves the
bucket's journal at the previous state, whose files are all there, so what a later attempt
downloads is always consistent. A local artifact store needs no mirror: the checkpoints
folder itself is shared (`Settings.checkpoints_dir`).
"""

from __future__ import annotations

from pathlib import Path

from compressor.s3 import boto_errors
from service.storage.local import ArtifactStoreError
from service.storage.s3 import S3ArtifactStore

RESUME_PREFIX = "resume"


class S3CheckpointMirror:
    def __init__(self, store: S3ArtifactStore, job_id: str):
        self.store, self.job_id = store, job_id
        self.base = store._key(job_id, RESUME_PREFIX) + "/"

    def __call__(self, folder: Path, written: list[str], removed: list[str]) -> None:
        client, bucket = self.store.client, self.store.bucket
        with boto_errors(f"mirroring the checkpoints of {self.job_id} to s3://{bucket}/{self.base}", ArtifactStoreError):
            for name in written:
                client.upload_file(str(folder / name), bucket, self.base + name)
            if removed:
                client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": self.base + n} for n in removed], "Quiet": True})

    def _keys(self) -> list[str]:
        pages = self.store.client.get_paginator("list_objects_v2").paginate(Bucket=self.store.bucket, Prefix=self.base)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def restore(self, folder: Path) -> int:
        """Download the mirrored checkpoints into `folder`; returns how many files."""
        with boto_errors(f"restoring the checkpoints of {self.job_id} from s3://{self.store.bucket}/{self.base}", ArtifactStoreError):
            keys = self._keys()
            for key in keys:
                target = folder / key[len(self.base):]
                target.parent.mkdir(parents=True, exist_ok=True)
                self.store.client.download_file(self.store.bucket, key, str(target))
        return len(keys)

    def delete(self) -> None:
        with boto_errors(f"deleting the checkpoints of {self.job_id} in s3://{self.store.bucket}", ArtifactStoreError):
            keys = self._keys()
            for start in range(0, len(keys), 1000):
                self.store.client.delete_objects(Bucket=self.store.bucket,
                                                 Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]], "Quiet": True})


def checkpoint_mirror(artifacts_url: str, job_id: str) -> S3CheckpointMirror | None:
    """The mirror of `job_id`'s checkpoints for an S3 artifact store; None for a local one."""
    if not artifacts_url.startswith("s3://"):
        return None
    return S3CheckpointMirror(S3ArtifactStore.from_url(artifacts_url), job_id)
