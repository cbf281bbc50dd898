"""The project's own online-transform file (online_rotations.safetensors): what `transform_config` cannot hold.

Learned Kronecker input transforms (the `flatquant` stage) are written here, their factors as
they are (a + b squared factors and n scales per input, where a dense `transform_config`
matrix would take n² values: 400 MB of float32 on the bundled model, 33 GB on Llama-3-8B):

    [{"kind": "input_kronecker", "tensors": {"smooth": "kron_0.smooth", "left": "kron_0.left",
      "right": "kron_0.right"}, "targets": ["model.layers.0.self_attn.q_proj", ...]}]

with x ← (x ⊙ smooth)(left ⊗ right) in front of each target. No engine runs them;
`compressor.load` does.

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
INPUT_KRONECKER = "input_kronecker"
KRONECKER_PARTS = ("smooth", "left", "right")


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
        if entry.get("kind") == INPUT_KRONECKER:
            continue  # read by `read_online_kronecker`
        if entry.get("kind") != INPUT_ROTATION:
            raise ValueError(f"unknown online transform kind {entry.get('kind')!r}")
        matrix = tensors[entry["tensor"]]
        for name in entry["targets"]:
            out[name] = matrix
    return out


def read_online_kronecker(folder: Path, entries: list[dict[str, Any]]) -> dict[str, tuple[torch.Tensor, ...]]:
    """Linear name → (smooth, left, right) (float32) of its Kronecker input transform."""
    entries = [e for e in entries if e.get("kind") == INPUT_KRONECKER]
    if not entries:
        return {}
    path = folder / ROTATIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"the manifest lists Kronecker input transforms but {path} is missing")
    tensors = load_file(str(path))
    return {name: tuple(tensors[entry["tensors"][part]] for part in KRONECKER_PARTS)
            for entry in entries for name in entry["targets"]}


def write_online_kronecker(folder: Path, transforms: dict[str, tuple[torch.Tensor, ...]]) -> list[dict[str, Any]]:
    """Write each distinct (smooth, left, right) once (the linears reading one input share it); the manifest entries."""
    from safetensors.torch import save_file

    if not transforms:
        return []
    entries: list[dict[str, Any]] = []
    tensors: dict[str, torch.Tensor] = {}
    known: dict[bytes, dict[str, Any]] = {}
    for name, parts in transforms.items():
        parts = tuple(t.detach().to(torch.float32).cpu().contiguous() for t in parts)
        key = b"".join(t.numpy().tobytes() for t in parts) + str([tuple(t.shape) for t in parts]).encode()
        if key in known:
            known[key]["targets"].append(name)
            continue
        i = len(entries)
        names = {part: f"kron_{i}.{part}" for part in KRONECKER_PARTS}
        tensors.update({names[part]: t for part, t in zip(KRONECKER_PARTS, parts)})
        known[key] = {"kind": INPUT_KRONECKER, "tensors": names, "targets": [name]}
        entries.append(known[key])
    save_file(tensors, str(folder / ROTATIONS_FILE))
    return entries
