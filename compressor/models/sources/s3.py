"""`s3://bucket/prefix` through boto3, configured like the artifact store (endpoint and region in the
URL's query, credentials from boto3's usual chain); each object is streamed to disk in chunks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compressor.models.sources.copying import CHUNK, BytesDone, write_chunks
from compressor.models.sources.errors import SourceUnavailable
from compressor.models.sources.location import S3Source


class S3Folder:
    def __init__(self, source: S3Source, client: Any = None):
        self.source, self.where, self.revision = source, str(source), None
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError:
                raise SourceUnavailable("s3:// sources need boto3: pip install boto3 (or the service extra)") from None

            s = self.source
            style = s.addressing_style or ("path" if s.endpoint_url else "auto")
            config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=60,
                            s3={"addressing_style": style})
            self._client = boto3.client("s3", endpoint_url=s.endpoint_url, region_name=s.region, config=config)
        return self._client

    def _key(self, name: str) -> str:
        return f"{self.source.prefix}/{name}" if self.source.prefix else name

    def _errors(self, doing: str):  # noqa: ANN202
        return _BotoErrors(f"{doing} {self.where}")

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


class _BotoErrors:
    """boto errors → SourceUnavailable saying what we were doing."""

    def __init__(self, doing: str):
        self.doing = doing

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, _tb: object) -> bool:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, (Boto3Error, BotoCoreError, ClientError)):
            raise SourceUnavailable(f"{self.doing}: {exc}") from exc
        return False
