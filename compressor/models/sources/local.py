"""A local HF folder as a source: listed, then each file copied (or hard-linked) and hashed.

`confine` (set from the REST allow-list) is the resolved root every file must resolve inside:
a symlink in the folder that points out of it is refused before anything is copied.
"""

from __future__ import annotations

from pathlib import Path

from compressor.models.sources.copying import BytesDone, copy_verified
from compressor.models.sources.errors import SourceNotAllowed, SourceUnavailable


class LocalFolder:
    def __init__(self, path: Path, confine: Path | None = None, link: bool = False):
        self.path, self.confine, self.link = path, confine, link
        self.where, self.revision = str(path), None

    def listing(self) -> dict[str, int]:
        if not self.path.is_dir():
            what = "does not exist" if not self.path.exists() else "is not a folder (nor a .gguf file)"
            raise SourceUnavailable(f"{self.path} {what}")
        files = [p for p in sorted(self.path.iterdir()) if p.is_file()]
        if self.confine is not None:
            for p in files:
                real = p.resolve()
                if not real.is_relative_to(self.confine):
                    raise SourceNotAllowed(f"{p} is a symlink to {real}, outside the allowed root {self.confine}")
        return {p.name: p.stat().st_size for p in files}

    def fetch(self, name: str, dst: Path, on_bytes: BytesDone) -> str:
        return copy_verified(self.path / name, dst, on_bytes, link=self.link)
