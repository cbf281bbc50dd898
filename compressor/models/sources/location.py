"""A model source as typed data: a local path (HF folder or `.gguf` file), a hub repo, or an S3 prefix.

    /data/models/Qwen2.5-1.5B              a folder: config.json, *.safetensors, tokenizer files
    /data/gguf/model.Q4_1.gguf             a GGUF file (dequantized through transformers)
    hf://Qwen/Qwen2.5-1.5B@main            a Hugging Face hub repo at a revision
    s3://bucket/models/qwen?endpoint_url=…  an S3 prefix (credentials from boto3's chain, as the artifact store)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from compressor.models.sources.errors import SourceError, UnknownSchemeError

SCHEMES = ("a local path", "file://", "hf://", "s3://")
HUB_REPO_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$"
REVISION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$"
S3_OPTIONS = ("endpoint_url", "region", "addressing_style")


@dataclass(frozen=True)
class LocalSource:
    path: Path  # as given (made absolute, not resolved: the policy checks `..` and symlinks itself)

    @property
    def is_gguf(self) -> bool:
        return self.path.suffix.lower() == ".gguf"

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class HubSource:
    repo_id: str
    revision: str | None = None

    @property
    def organisation(self) -> str:
        return self.repo_id.split("/")[0]

    def __str__(self) -> str:
        return f"hf://{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class S3Source:
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


ModelSource = LocalSource | HubSource | S3Source


def parse_source(text: str, revision: str | None = None) -> ModelSource:
    """The typed source `text` names; `revision` (hub only) overrides an `@revision` suffix."""
    text = text.strip()
    if not text:
        raise SourceError("the source is empty: give a folder, a .gguf file, hf://org/model or s3://bucket/prefix")
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if scheme is None:
        if revision:
            raise SourceError("a revision applies to hf:// sources only")
        return LocalSource(Path(text).expanduser().absolute())
    name = scheme.group(1).lower()
    if name == "file":
        return parse_source(text[len("file://"):], revision)
    if name == "hf":
        return _hub(text[len("hf://"):], revision)
    if name == "s3":
        if revision:
            raise SourceError("a revision applies to hf:// sources only")
        return _s3(text)
    raise UnknownSchemeError(f"unknown source scheme {name}://; allowed: {', '.join(SCHEMES)}")


def _hub(rest: str, revision: str | None) -> HubSource:
    repo, _, at = rest.partition("@")
    revision = revision or at or None
    if not re.fullmatch(HUB_REPO_PATTERN, repo) or ".." in repo:
        raise SourceError(f"hf:// wants org/model, got {repo!r}")
    if revision is not None and (not re.fullmatch(REVISION_PATTERN, revision) or ".." in revision):
        raise SourceError(f"invalid revision {revision!r}: a branch, tag or commit")
    return HubSource(repo, revision)


def _s3(url: str) -> S3Source:
    parts = urlsplit(url)
    if not parts.netloc or parts.username or parts.password:
        raise SourceError("s3:// wants s3://bucket/prefix and no credentials (they come from boto3's usual chain)")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(S3_OPTIONS))
    if unknown:
        raise SourceError(f"unknown S3 URL option(s) {unknown}; allowed: {list(S3_OPTIONS)}")
    options = {k: v[-1] for k, v in query.items()}
    endpoint = options.get("endpoint_url")
    if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
        raise SourceError(f"endpoint_url must be an http(s) URL, got {endpoint!r}")
    prefix = parts.path.strip("/")
    if ".." in prefix.split("/"):
        raise SourceError(f"an S3 prefix may not contain '..': {url!r}")
    return S3Source(parts.netloc, prefix, endpoint, options.get("region"), options.get("addressing_style"))


def default_name(source: ModelSource) -> str:
    """A store name from the source's last path part: lower case, other characters as '-'."""
    if isinstance(source, HubSource):
        last = source.repo_id.split("/")[-1]
    elif isinstance(source, S3Source):
        last = source.prefix.split("/")[-1] or source.bucket
    else:
        last = source.path.stem if source.is_gguf else source.path.name
    name = re.sub(r"[^a-z0-9._-]+", "-", last.lower()).strip("-._")[:64]
    return name or "model"
