"""Online input rotations (the down_proj Hadamard) stored beside a compressed-tensors checkpoint.

A stock Llama graph has no place for `x ← x R` in front of a linear, so vLLM and transformers
cannot run such an artifact (the manifest says so). `compressor.load` can: the exporter writes
each distinct rotation matrix once into `online_rotations.safetensors` (float32, exactly the
matrix the in-memory evaluation used) and lists which linears read it in the manifest under
`online_transforms`:

    [{"kind": "input_rotation", "tensor": "rotation_0", "size": 1536,
      "targets": ["model.layers.0.mlp.down_proj", ...]}]

Why not compressed-tensors' own `transform_config`: transformers 5.24 ignores it (the model
would silently run without the rotation), and vLLM runs a `hadamard` scheme with its hadacore
kernel (Sylvester, power-of-two sizes only; our R4 is a random-sign Paley-12 ⊗ Sylvester-128 of
order 1536), while other scheme types need the dense matrix stored per target layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

ROTATIONS_FILE = "online_rotations.safetensors"
INPUT_ROTATION = "input_rotation"


def write_online_rotations(rotations: dict[str, torch.Tensor], out_dir: Path) -> list[dict[str, Any]]:
    """Save the distinct matrices of `rotations` (linear name → R, x ← x R) once each; the manifest entries."""
    unique: list[torch.Tensor] = []
    targets: list[list[str]] = []
    for name, matrix in rotations.items():
        matrix = matrix.detach().to(torch.float32).cpu()
        for i, known in enumerate(unique):
            if known.shape == matrix.shape and torch.equal(known, matrix):
                targets[i].append(name)
                break
        else:
            unique.append(matrix.contiguous())
            targets.append([name])
    if not unique:
        return []
    save_file({f"rotation_{i}": m for i, m in enumerate(unique)}, str(out_dir / ROTATIONS_FILE), metadata={"format": "pt"})
    return [
        {"kind": INPUT_ROTATION, "tensor": f"rotation_{i}", "size": int(m.shape[0]), "targets": names}
        for i, (m, names) in enumerate(zip(unique, targets))
    ]


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
