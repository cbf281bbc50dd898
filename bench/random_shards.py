"""Random-weight checkpoints written as safetensors shards, one shard's tensors in memory at a time.

The benches that need a multi-GB model (import, big-model compression) build it here from a
list of (name, shape) in file order and a function that makes each tensor.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path


def write_shards(folder: Path, shapes: list[tuple[str, tuple[int, ...]]], make: Callable[[tuple[int, ...]], "torch.Tensor"],  # noqa: F821
                 bytes_per_value: int, shard_bytes: int) -> dict:
    """`model-0000i-of-0000N.safetensors` of at most `shard_bytes` each plus the index; returns shards, params, bytes."""
    from safetensors.torch import save_file

    groups: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in shapes:
        nbytes = bytes_per_value * math.prod(shape)
        if groups[-1] and size + nbytes > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append((name, shape))
        size += nbytes
    weight_map, total, params = {}, 0, 0
    for i, group in enumerate(groups):
        shard = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {name: make(shape) for name, shape in group}
        save_file(tensors, str(folder / shard), metadata={"format": "pt"})
        for name, t in tensors.items():
            weight_map[name] = shard
            total += t.numel() * t.element_size()
            params += t.numel()
        del tensors
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return {"shards": len(groups), "params": params, "weight_bytes": total}
