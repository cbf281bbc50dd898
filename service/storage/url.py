"""`s3://bucket/prefix?…` URLs of the S3 artifact store, parsed without boto3.

Apart from the store itself so the settings can check a URL without importing a storage
implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

URL_OPTIONS = ("endpoint_url", "region", "addressing_style")


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str
    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: str | None = None


def parse_s3_url(url: str) -> S3Location:
    """`s3://bucket/prefix?endpoint_url=…&region=…&addressing_style=path|virtual` → S3Location.

    Raises ValueError saying what is wrong (used by the settings check as well)."""
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise ValueError(f"an S3 artifacts URL starts with s3://, got {url!r}")
    if not parts.netloc or parts.username or parts.password:
        raise ValueError("the S3 artifacts URL needs a bucket (s3://bucket/prefix) and no credentials; "
                         "credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(URL_OPTIONS))
    if unknown:
        raise ValueError(f"unknown S3 URL option(s) {unknown}; allowed: {list(URL_OPTIONS)}")
    options = {k: v[-1] for k, v in query.items()}
    endpoint = options.get("endpoint_url")
    if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
        raise ValueError(f"endpoint_url must be an http(s) URL, got {endpoint!r}")
    style = options.get("addressing_style")
    if style is not None and style not in ("path", "virtual", "auto"):
        raise ValueError(f"addressing_style must be path, virtual or auto, got {style!r}")
    return S3Location(bucket=parts.netloc, prefix=parts.path.strip("/"), endpoint_url=endpoint,
                      region=options.get("region"), addressing_style=style)
