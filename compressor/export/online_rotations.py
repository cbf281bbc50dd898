"""Reader of the online rotations artifacts written before `transform_config` (online_rotations.safetensors).

Artifacts written now store the down_proj rotation as a compressed-tensors `transform_config`
input transform (see `transform_config`), where vLLM reads it. Older artifacts kept each distinct
matrix once in `online_rotations.safetensors` (float32) and listed its linears in the manifest:

    [{"kind": "input_rotation", "tensor": "rotation_0", "size": 1536,
      "targets": ["model.layers.0.mlp.down_proj", ...]}]

`compressor.load` still reads those.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

ROTATIONS_FILE = "online_rotations.safetensors"
INPUT_ROTATION = "input_rotation"


def read_online_rotations(folder: Path, entries: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Linear name → rotation matrix (float32), shared between the linears that read the same one."""
    if not entries:
        return {}
    path = folder / ROTATIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"the manifest lists online rotations but {path} is missing")
    tensors = load_file(str(path))
    out: dict[str, torch.Tensor] = {}
    for entry in entries:
        if entry.get("kind") != INPUT_ROTATION:
            raise ValueError(f"unknown online transform kind {entry.get('kind')!r}")
        matrix = tensors[entry["tensor"]]
        for name in entry["targets"]:
            out[name] = matrix
    return out
