"""Online input rotations (the down_proj Hadamard, R4) as a compressed-tensors `transform_config`.

This is where vLLM's compressed-tensors loader reads online transforms (PR #22486): a scheme
per distinct matrix, applied at `location: input` of the linears that read it, and its weight
stored in model.safetensors as `<linear>.<scheme>_input.weight`. Conventions, read from
compressed-tensors' `HadamardTransform` and vLLM's `transform/module.py`: a Hadamard-type
weight is stored unnormalized (entries ±1, exact in bf16) and both divide it by sqrt(n) after
loading; the input is multiplied from the right, `x ← x (W / sqrt n)`. Our R4 is a random-sign
Hadamard of any order k·2^m (Paley ⊗ Sylvester), so it is written as `random-hadamard` with its
exact signs, never regenerated. The weight is shared: it is stored once, under the first
target, as compressed-tensors' own save path does for shared transform weights (tied keys).

A rotation that is not a scaled ±1 matrix (none of our stages makes one online) would need
`random-matrix`, which vLLM normalizes by 1/sqrt(n) like a Hadamard, so `engines` refuses vLLM
for it.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from compressor.quant.online_rotation import is_scaled_sign_matrix

SCHEME_PREFIX = "online_input"  # scheme names: online_input_0, online_input_1, ...
HADAMARD_TYPE = "random-hadamard"
DENSE_TYPE = "random-matrix"
INPUT = "input"


def weight_key(target: str, scheme: str) -> str:
    return f"{target}.{scheme}_{INPUT}.weight"


def online_transform_config(rotations: dict[str, torch.Tensor]) -> tuple[dict[str, Any] | None, dict[str, torch.Tensor]]:
    """(`transform_config` dict, tensors for model.safetensors) for linear name → R with x ← x R."""
    from compressed_tensors.transform import TransformArgs, TransformConfig, TransformScheme

    unique: list[torch.Tensor] = []
    targets: list[list[str]] = []
    for name, matrix in rotations.items():
        matrix = matrix.detach().to(torch.float64).cpu()
        for i, known in enumerate(unique):
            if known.shape == matrix.shape and torch.equal(known, matrix):
                targets[i].append(name)
                break
        else:
            unique.append(matrix)
            targets.append([name])
    if not unique:
        return None, {}
    groups, tensors = {}, {}
    for i, (matrix, names) in enumerate(zip(unique, targets)):
        scheme = f"{SCHEME_PREFIX}_{i}"
        hadamard = is_scaled_sign_matrix(matrix)
        groups[scheme] = TransformScheme(
            type=HADAMARD_TYPE if hadamard else DENSE_TYPE,
            apply=[TransformArgs(targets=names, location=INPUT)],
            precision=torch.float32,
        )
        stored = torch.sign(matrix).to(torch.bfloat16) if hadamard else matrix.to(torch.float32)
        tensors[weight_key(names[0], scheme)] = stored.contiguous()
    return TransformConfig(config_groups=groups).model_dump(), tensors


def read_online_transforms(transform_config: dict[str, Any] | None, tensors: Any) -> dict[str, torch.Tensor]:
    """Linear name → R (float32, x ← x R) from a checkpoint's `transform_config` and its safetensors handle.

    Only `input` transforms on linears are read; fused locations (`weight_input`,
    `weight_output`) are already in the weights, anything else is refused by the caller.
    """
    out: dict[str, torch.Tensor] = {}
    keys = set(tensors.keys())
    for scheme_name, scheme in (transform_config or {}).get("config_groups", {}).items():
        for args in scheme.get("apply", []):
            if args.get("location") != INPUT:
                raise ValueError(f"transform {scheme_name}: location {args.get('location')!r} is not supported (only 'input')")
            if args.get("inverse"):
                raise ValueError(f"transform {scheme_name}: inverse input transforms are not supported")
            stored = [weight_key(t, scheme_name) for t in args["targets"] if weight_key(t, scheme_name) in keys]
            if not stored:
                raise ValueError(f"transform {scheme_name}: no weight stored for any of its targets")
            weight = tensors.get_tensor(stored[0]).to(torch.float32)
            if scheme.get("type") in ("hadamard", HADAMARD_TYPE):
                weight = weight / math.sqrt(weight.shape[0])
            elif scheme.get("type") != DENSE_TYPE:
                raise ValueError(f"transform {scheme_name}: type {scheme.get('type')!r} is not supported")
            for target in args["targets"]:
                out[target] = weight
    return out


def transform_weight_keys(transform_config: dict[str, Any] | None) -> set[str]:
    """Every state-dict key a transform weight may be stored under (what the model's own weights are not)."""
    return {weight_key(t, name) for name, scheme in (transform_config or {}).get("config_groups", {}).items()
            for args in scheme.get("apply", []) for t in args["targets"]}
