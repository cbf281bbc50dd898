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

from compressor.models.sources.errors import SourceError, UnknownSchemeError
from compressor.s3 import S3Location, parse_s3_url

SCHEMES = ("a local path", "file://", "hf://", "s3://")
HUB_REPO_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$"
REVISION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$"


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


S3Source = S3Location  # an s3:// model source is an S3 location

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
    try:
        return parse_s3_url(url)
    except ValueError as e:
        raise SourceError(str(e)) from None


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
