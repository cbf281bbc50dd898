"""`ShardedTensors`: a checkpoint folder's tensors by name, across its safetensors shards, read on demand.

One reader for every sharded folder the project meets: a stored model (one file, or shards
with `model.safetensors.index.json`) whose layers are loaded one at a time, and an exported
checkpoint that is written in shards when it is big. It answers `keys()` and
`get_tensor(name)` like safetensors' own `safe_open` handle, so code written for one file
reads shards unchanged. safetensors memory-maps each file, so a read costs that tensor alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


def shard_files(folder: Path) -> list[Path]:
    """The folder's weight files: those its index names, else model.safetensors, else every *.safetensors."""
    folder = Path(folder)
    index = folder / INDEX_FILE
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / n for n in names]
    if (folder / SINGLE_FILE).is_file():
        return [folder / SINGLE_FILE]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no safetensors weights (model.safetensors or {INDEX_FILE})")
    return files


class ShardedTensors:
    """Open handles on every shard of a folder; `get_tensor(name)` reads one tensor from the shard that holds it."""

    def __init__(self, handles: list[Any]):
        self._where: dict[str, Any] = {}
        for handle in handles:
            for key in handle.keys():
                self._where[key] = handle

    def keys(self) -> list[str]:
        return list(self._where)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def get_tensor(self, name: str) -> Any:
        try:
            handle = self._where[name]
        except KeyError:
            raise KeyError(f"tensor {name!r} is in none of the checkpoint's shards") from None
        return handle.get_tensor(name)

    def get_slice(self, name: str) -> Any:
        return self._where[name].get_slice(name)

    def metadata(self) -> dict[str, str]:
        """The first shard's header metadata (the exporter writes the same into each)."""
        first = next(iter(self._where.values()), None)
        return (first.metadata() or {}) if first is not None else {}


@contextmanager
def open_shards(folder: Path) -> Iterator[ShardedTensors]:
    from safetensors import safe_open

    with ExitStack() as stack:
        handles = [stack.enter_context(safe_open(str(p), framework="pt")) for p in shard_files(folder)]
        yield ShardedTensors(handles)
