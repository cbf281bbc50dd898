"""The S3-compatible artifact store (AWS S3, MinIO, Ceph RGW, …), chosen by an `s3://` URL.

`s3://bucket/prefix?endpoint_url=http://host:9000&region=us-east-1` — credentials come from
boto3's usual chain (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, a profile, an instance role),
never from the URL.

Atomic publish. S3 has no rename and a job has several files, so a publish writes every file
under a fresh upload prefix, `<prefix>/<job_id>/<upload_id>/<name>`, and only then writes one
small pointer object, `<prefix>/<job_id>/published.json`, naming that upload and listing each
file's size and SHA-256. Readers go through the pointer alone: before it exists the job has
no artifacts, after it exists every file it names is complete (single PUTs are atomic in S3).
A re-publish (an attempt that crashed after publishing) writes a new upload, replaces the
pointer, then deletes the older uploads.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from service.storage.local import ArtifactStoreError, StoredFile, list_staging
from compressor.s3 import S3Location, boto_errors, parse_s3_url, s3_client

POINTER = "published.json"


class S3ArtifactStore:
    """Artifacts in a bucket; see the module docstring for the layout and the publish protocol."""

    def __init__(self, location: S3Location, client: Any = None):
        self.location = location
        self.bucket = location.bucket
        self.client = client or s3_client(location, max_attempts=5, max_pool_connections=32)

    @classmethod
    def from_url(cls, url: str) -> S3ArtifactStore:
        return cls(parse_s3_url(url))

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.location.prefix, *parts) if p)

    def publish(self, job_id: str, staging: Path) -> list[dict[str, Any]]:
        """Upload the finished output folder, then the pointer; returns [{name, size, sha256}]."""
        from boto3.s3.transfer import TransferConfig

        files = list_staging(staging)
        upload = f"u-{uuid.uuid4().hex[:12]}"
        # a part size fixed here keeps S3's per-part SHA-256 checks on large files
        transfer = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20, max_concurrency=4)
        with boto_errors(f"uploading the artifacts of {job_id} to s3://{self.bucket}", ArtifactStoreError):
            for path, entry in files:
                self.client.upload_file(
                    str(path), self.bucket, self._key(job_id, upload, entry["name"]), Config=transfer,
                    ExtraArgs={"ChecksumAlgorithm": "SHA256", "Metadata": {"sha256": entry["sha256"]},
                               "ContentType": "application/octet-stream"})
            listing = [entry for _, entry in files]
            pointer = json.dumps({"job_id": job_id, "upload": upload, "files": listing}).encode()
            self.client.put_object(Bucket=self.bucket, Key=self._key(job_id, POINTER), Body=pointer,
                                   ContentType="application/json", ChecksumAlgorithm="SHA256")
        self._delete_keys(job_id, keep=upload)  # an earlier attempt's upload, if any
        return listing

    def _pointer(self, job_id: str) -> dict[str, Any] | None:
        with boto_errors(f"reading s3://{self.bucket}/{self._key(job_id, POINTER)}", ArtifactStoreError):
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=self._key(job_id, POINTER))["Body"].read()
            except self.client.exceptions.NoSuchKey:
                return None
        return json.loads(body)

    def open(self, job_id: str, name: str) -> StoredFile | None:
        """A published file (only names the pointer lists exist), streamed by byte range."""
        pointer = self._pointer(job_id)
        entry = next((f for f in (pointer or {}).get("files", []) if f["name"] == name), None)
        if pointer is None or entry is None:
            return None
        key = self._key(job_id, pointer["upload"], name)

        def read(start: int, end: int) -> Iterator[bytes]:
            # the GET happens now, so a store error is raised here and not in mid-response
            with boto_errors(f"reading s3://{self.bucket}/{key}", ArtifactStoreError):
                body = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end}")["Body"]
            return _chunks(body)

        return StoredFile(name, int(entry["size"]), reader=read)

    def _delete_keys(self, job_id: str, keep: str) -> None:
        """Delete the job's objects but the pointer and the upload `keep` (an earlier attempt's files)."""
        base = self._key(job_id) + "/"
        kept = (base + POINTER, base + f"{keep}/")
        with boto_errors(f"deleting old artifacts of {job_id} in s3://{self.bucket}", ArtifactStoreError):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base)
            for page in pages:
                doomed = [{"Key": o["Key"]} for o in page.get("Contents", []) if not o["Key"].startswith(kept)]
                if doomed:
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": doomed, "Quiet": True})


def _chunks(body: Any, size: int = 1 << 20) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(size)
    finally:
        body.close()
