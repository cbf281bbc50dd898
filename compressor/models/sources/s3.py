"""`s3://bucket/prefix` through boto3, configured like the artifact store (endpoint and region in the
URL's query, credentials from boto3's usual chain); each object is streamed to disk in chunks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compressor.models.sources.copying import CHUNK, BytesDone, write_chunks
from compressor.models.sources.errors import SourceUnavailable
from compressor.models.sources.location import S3Source
from compressor.s3 import boto_errors, s3_client


class S3Folder:
    def __init__(self, source: S3Source, client: Any = None):
        self.source, self.where, self.revision = source, str(source), None
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                self._client = s3_client(self.source)
            except ImportError:
                raise SourceUnavailable("s3:// sources need boto3: pip install boto3 (or the service extra)") from None
        return self._client

    def _key(self, name: str) -> str:
        return f"{self.source.prefix}/{name}" if self.source.prefix else name

    def _errors(self, doing: str):  # noqa: ANN202
        return boto_errors(f"{doing} {self.where}", SourceUnavailable)

    def listing(self) -> dict[str, int]:
        base = f"{self.source.prefix}/" if self.source.prefix else ""
        listing: dict[str, int] = {}
        with self._errors("listing"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.source.bucket, Prefix=base):
                for obj in page.get("Contents", []):
                    listing[obj["Key"][len(base):]] = int(obj["Size"])
        if not listing:
            raise SourceUnavailable(f"{self.where}: no objects under this prefix")
        return listing

    def fetch(self, name: str, dst: Path, on_bytes: BytesDone) -> str:
        with self._errors(f"downloading {name} from"):
            body = self.client.get_object(Bucket=self.source.bucket, Key=self._key(name))["Body"]
            try:
                return write_chunks(body.iter_chunks(CHUNK), dst, on_bytes)
            finally:
                body.close()
