"""`ShardedTensors`: a checkpoint folder's tensors by name, across its safetensors shards, read on demand.

One reader for every sharded folder the project meets: a stored model (one file, or shards
with `model.safetensors.index.json`) whose layers are loaded one at a time, and an exported
checkpoint that is written in shards when it is big. It answers `keys()` and
`get_tensor(name)` like safetensors' own `safe_open` handle, so code written for one file
reads shards unchanged.

Each tensor is read with plain file reads into memory of its own, not through a memory map:
a mapped tensor's pages count in the process's RSS beside any copy made of it (a 1.6 GB
embedding cast or copied would count twice), and two reads of one mapped tensor (a tied
embedding and head) would share memory, so an in-place change of one would change the other.
Every header is checked first (`read_tensors`), so a read never leaves the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from compressor.models.sources.safetensors_header import TensorEntry, read_tensors

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
CONVERT_CHUNK_BYTES = 64 << 20  # stored bytes read per step when a tensor is converted as it is read
TORCH_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64, "I32": torch.int32,
    "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "U16": torch.uint16, "U32": torch.uint32,
    "U64": torch.uint64, "BOOL": torch.bool,
}


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
    """Every shard's header, read once; `get_tensor(name)` reads that tensor's bytes from the shard holding it."""

    def __init__(self, files: list[Path] | tuple[Path, ...]):
        self._where: dict[str, tuple[Path, TensorEntry]] = {}
        for path in files:
            for entry in read_tensors(path):
                self._where[entry.name] = (path, entry)

    def keys(self) -> list[str]:
        return list(self._where)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def stored_dtype(self, name: str) -> torch.dtype:
        return TORCH_DTYPES[self._where[name][1].dtype]

    def get_tensor(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The tensor as stored, or converted to `dtype` a few MB at a time (no full-size copy in the stored dtype)."""
        try:
            path, entry = self._where[name]
        except KeyError:
            raise KeyError(f"tensor {name!r} is in none of the checkpoint's shards") from None
        stored = TORCH_DTYPES[entry.dtype]
        if dtype is None or dtype == stored or not entry.nbytes:
            tensor = torch.empty(entry.shape, dtype=stored)
            if entry.nbytes:
                _read_into(path, entry.data_start, tensor)
            return tensor.to(dtype) if dtype is not None else tensor
        out = torch.empty(entry.shape, dtype=dtype)
        flat = out.view(-1)
        step = max(1, CONVERT_CHUNK_BYTES // stored.itemsize)
        staging = torch.empty(min(step, flat.numel()), dtype=stored)
        for start in range(0, flat.numel(), step):
            n = min(step, flat.numel() - start)
            _read_into(path, entry.data_start + start * stored.itemsize, staging[:n])
            flat[start:start + n] = staging[:n]
        return out


def _read_into(path: Path, offset: int, tensor: torch.Tensor) -> None:
    """Fill contiguous `tensor` with the file's bytes from `offset`."""
    buffer = memoryview(tensor.view(-1).view(torch.uint8).numpy())
    with path.open("rb", buffering=0) as f:
        f.seek(offset)
        done = 0
        while done < len(buffer):
            n = f.readinto(buffer[done:])
            if not n:
                raise OSError(f"{path.name}: ends early at byte {offset + done}")
            done += n


@contextmanager
def open_shards(folder: Path) -> Iterator[ShardedTensors]:
    yield ShardedTensors(shard_files(folder))
