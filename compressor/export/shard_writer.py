"""Checkpoint tensors written as they are produced, in shards of bounded size.

A model exported a layer at a time never holds its whole checkpoint in memory: tensors go to
the current shard, which is written before a group would take it past `max_shard_bytes` (1 GiB),
or when a group alone fills it. A checkpoint that fits
one shard is the single `model.safetensors` transformers and vLLM expect (same bytes as
writing it at once); a bigger one is `model-0000i-of-0000N.safetensors` with the standard
`model.safetensors.index.json`, which both load.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from compressor.models.shards import INDEX_FILE, SINGLE_FILE

MAX_SHARD_BYTES = 2**30  # a pending shard is held in memory until written: this bounds what export adds
METADATA = {"format": "pt"}


class ShardWriter:
    def __init__(self, out_dir: Path, max_shard_bytes: int = MAX_SHARD_BYTES):
        self.out_dir, self.max_shard_bytes = Path(out_dir), max_shard_bytes
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._written: list[tuple[Path, list[str], int]] = []  # (temporary file, its tensor names, bytes)

    def add(self, tensors: dict[str, torch.Tensor]) -> None:
        """Queue a group of tensors; the pending shard is written first when the group would overflow it or is half a shard."""
        incoming = sum(t.numel() * t.element_size() for t in tensors.values())
        if self._pending and (self._pending_bytes + incoming > self.max_shard_bytes or 2 * incoming >= self.max_shard_bytes):
            self._flush()  # a big group (an embedding) goes out with nothing else pending in memory beside it
        for name, t in tensors.items():
            if name in self._pending or any(name in names for _, names, _ in self._written):
                raise ValueError(f"tensor {name!r} written twice")
            self._pending[name] = t.detach().contiguous().cpu()
            self._pending_bytes += t.numel() * t.element_size()
        if self._pending_bytes >= self.max_shard_bytes:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        path = self.out_dir / f".shard-{len(self._written):05d}.tmp"
        save_file(dict(sorted(self._pending.items())), str(path), metadata=METADATA)
        self._written.append((path, sorted(self._pending), self._pending_bytes))
        self._pending, self._pending_bytes = {}, 0

    def close(self) -> list[Path]:
        """Write what is pending; name the shards; the index when there are several. Returns the weight files."""
        self._flush()
        if len(self._written) == 1:
            target = self.out_dir / SINGLE_FILE
            self._written[0][0].replace(target)
            return [target]
        n = len(self._written)
        weight_map, files = {}, []
        for i, (tmp, names, _) in enumerate(self._written):
            target = self.out_dir / f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            tmp.replace(target)
            files.append(target)
            weight_map.update({name: target.name for name in names})
        index = {"metadata": {"total_size": sum(b for _, _, b in self._written)}, "weight_map": dict(sorted(weight_map.items()))}
        (self.out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        return files
