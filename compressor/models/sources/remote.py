"""What a remote model folder offers the importer: its listing, and one file at a time into the store."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from compressor.models.sources.copying import BytesDone


class RemoteFolder(Protocol):
    where: str  # the source as the user named it, for messages
    revision: str | None  # what was fetched (a hub commit), recorded in store.json

    def listing(self) -> dict[str, int]:
        """Top-level file name → size in bytes."""
        ...

    def fetch(self, name: str, dst: Path, on_bytes: BytesDone) -> str:
        """Stream file `name` to `dst`; returns its sha256, checked against the remote's own where it has one."""
        ...
