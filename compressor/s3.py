"""S3 addresses and clients, shared by the model sources (`s3://` models) and the service's artifact store.

`s3://bucket/prefix?endpoint_url=http://host:9000&region=…&addressing_style=path|virtual|auto`:
the endpoint and region travel in the URL's query, credentials never do (boto3's usual chain:
`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, a profile, an instance role). Parsing needs no
boto3, so settings can check a URL without importing a storage implementation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

S3_OPTIONS = ("endpoint_url", "region", "addressing_style")


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str
    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: str | None = None

    @property
    def has_options(self) -> bool:
        return any((self.endpoint_url, self.region, self.addressing_style))

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


def parse_s3_url(url: str) -> S3Location:
    """The location `url` names; ValueError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise ValueError(f"an S3 URL starts with s3://, got {url!r}")
    if not parts.netloc or parts.username or parts.password:
        raise ValueError("an S3 URL needs a bucket (s3://bucket/prefix) and no credentials; credentials come from "
                         "boto3's usual chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, an instance role)")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(S3_OPTIONS))
    if unknown:
        raise ValueError(f"unknown S3 URL option(s) {unknown}; allowed: {list(S3_OPTIONS)}")
    options = {k: v[-1] for k, v in query.items()}
    endpoint = options.get("endpoint_url")
    if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
        raise ValueError(f"endpoint_url must be an http(s) URL, got {endpoint!r}")
    style = options.get("addressing_style")
    if style is not None and style not in ("path", "virtual", "auto"):
        raise ValueError(f"addressing_style must be path, virtual or auto, got {style!r}")
    prefix = parts.path.strip("/")
    if ".." in prefix.split("/"):
        raise ValueError(f"an S3 prefix may not contain '..': {url!r}")
    return S3Location(parts.netloc, prefix, endpoint, options.get("region"), style)


def s3_client(location: S3Location, max_attempts: int = 3, max_pool_connections: int = 10) -> Any:
    """A boto3 client for the location's endpoint and region (path-style addressing for a custom endpoint)."""
    import boto3
    from botocore.config import Config

    style = location.addressing_style or ("path" if location.endpoint_url else "auto")
    config = Config(retries={"max_attempts": max_attempts, "mode": "standard"}, connect_timeout=10, read_timeout=60,
                    s3={"addressing_style": style}, max_pool_connections=max_pool_connections)
    return boto3.client("s3", endpoint_url=location.endpoint_url, region_name=location.region, config=config)


@contextmanager
def boto_errors(doing: str, into: type[Exception]) -> Iterator[None]:
    """boto's errors become `into` saying what we were doing; other exceptions pass unchanged."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (Boto3Error, BotoCoreError, ClientError) as exc:
        raise into(f"{doing}: {exc}") from exc
