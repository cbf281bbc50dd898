"""The allow-lists REST imports must stay inside: local roots, hub organisations, buckets.

Set once by the operator as `COMPRESSOR_MODEL_SOURCES`, a comma-separated list:

    /data/models, hf://Qwen, hf://meta-llama, s3://team-models/llm?endpoint_url=http://minio:9000

A REST client names a source; `SourcePolicy.admit` returns it with the operator's S3 endpoint
filled in (a client may not point the server at hosts of its choosing), or raises
`SourceNotAllowed` naming what is allowed. The CLI runs with no policy: its user owns the files.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from compressor.models.sources.errors import SourceError, SourceNotAllowed
from compressor.models.sources.location import HubSource, LocalSource, ModelSource, S3Source, parse_source


@dataclass(frozen=True)
class SourcePolicy:
    local_roots: tuple[Path, ...] = ()
    hub_organisations: tuple[str, ...] = ()
    buckets: tuple[S3Source, ...] = field(default=())

    @classmethod
    def parse(cls, text: str) -> SourcePolicy:
        """`COMPRESSOR_MODEL_SOURCES` → policy; ValueError naming a bad entry."""
        roots: list[Path] = []
        orgs: list[str] = []
        buckets: list[S3Source] = []
        for entry in (e.strip() for e in text.split(",")):
            if not entry:
                continue
            if entry.startswith("hf://"):
                org = entry[len("hf://"):].strip("/")
                if not org or "/" in org:
                    raise ValueError(f"model source {entry!r}: a hub entry is hf://<organisation>")
                orgs.append(org)
                continue
            try:
                source = parse_source(entry)
            except SourceError as e:
                raise ValueError(f"model source {entry!r}: {e}") from None
            if isinstance(source, S3Source):
                buckets.append(source)
            elif isinstance(source, LocalSource):
                if not Path(entry).is_absolute():
                    raise ValueError(f"model source {entry!r}: a local root must be an absolute path")
                roots.append(source.path)
        return cls(tuple(roots), tuple(orgs), tuple(buckets))

    def describe(self) -> str:
        parts = []
        if self.local_roots:
            parts.append("local folders under " + ", ".join(str(r) for r in self.local_roots))
        if self.hub_organisations:
            parts.append("hub organisations " + ", ".join(f"hf://{o}" for o in self.hub_organisations))
        if self.buckets:
            parts.append("buckets " + ", ".join(str(b) for b in self.buckets))
        if not parts:
            return "none (the operator sets COMPRESSOR_MODEL_SOURCES)"
        return "; ".join(parts) + " (COMPRESSOR_MODEL_SOURCES)"

    def _refuse(self, source: ModelSource, why: str) -> SourceNotAllowed:
        return SourceNotAllowed(f"source {source} is not allowed: {why}; allowed: {self.describe()}")

    def admit(self, source: ModelSource) -> ModelSource:
        """`source` if an allow-list holds it (S3: with the entry's endpoint); else SourceNotAllowed."""
        if isinstance(source, LocalSource):
            self.local_root(source)
            return source
        if isinstance(source, HubSource):
            if source.organisation.lower() not in {o.lower() for o in self.hub_organisations}:
                raise self._refuse(source, f"hub organisation {source.organisation} is not in the allow-list")
            return source
        if source.has_options:
            raise self._refuse(source, "an S3 source over REST takes no endpoint_url/region/addressing_style "
                                       "options: the allow-list entry sets them")
        for entry in self.buckets:
            if entry.bucket == source.bucket and _under(source.prefix, entry.prefix):
                return replace(source, endpoint_url=entry.endpoint_url, region=entry.region,
                               addressing_style=entry.addressing_style)
        raise self._refuse(source, "its bucket and prefix are not in the allow-list")

    def local_root(self, source: LocalSource) -> Path:
        """The resolved allowed root `source` lies in. Refuses `..`, and a path (or a symlink on
        it) that resolves outside every root."""
        if ".." in source.path.parts:
            raise self._refuse(source, "a path may not contain '..'")
        resolved = source.path.resolve()
        for root in self.local_roots:
            real_root = root.resolve()
            if source.path.is_relative_to(root) or source.path.is_relative_to(real_root):
                if not resolved.is_relative_to(real_root):
                    raise self._refuse(source, f"it resolves to {resolved}, outside {root} (a symlink leaves the root)")
                return real_root
        raise self._refuse(source, "it is outside the allowed local roots")


def _under(prefix: str, root: str) -> bool:
    """`prefix` equals `root` or lies below it, component-wise (`models2` is not under `models`)."""
    return not root or prefix == root or prefix.startswith(root.rstrip("/") + "/")
