"""The online rotations both rotation stages install: R4 on the down_proj input, R3 on Q/K after RoPE.

QuaRot (`hadamard`) and OSTQuant (`ostquant`) use the same fixed random Hadamards here, so the
two share one rule for when R3 is on (`resolve_online_qk`), one set of seed offsets, and one
function that attaches them (`attach_online_rotations`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from torch import nn

from compressor.models.adapter import DecoderAdapter
from compressor.quant.attention import set_qk_rotation, use_compressed_attention
from compressor.quant.compressed_linear import wrap_linear
from compressor.spec import KVCacheQuantConfig
from compressor.transforms.fusion import attach_online_input_rotation
from compressor.transforms.hadamard import random_hadamard_matrix

# Offsets added to a stage's `seed`, so each rotation draws its own signs from one seed.
QK_SEED_OFFSET = 3  # R3: Q and K after RoPE
DOWN_SEED_OFFSET = 4  # R4: the down_proj input
VALUE_HEAD_SEED_OFFSET = 1000  # R2 of the hadamard stage: seed + 1000 + layer index


def resolve_online_qk(setting: Literal["auto", "on", "off"], kv_cache: KVCacheQuantConfig | None) -> bool:
    """Whether to rotate Q/K after RoPE. 'auto': exactly when the KV cache ends up quantized.

    R3 leaves Q·Kᵀ unchanged and only spreads outliers before the KV quantizer, so without
    KV quantization it costs a matmul per head and buys nothing. `kv_cache` is the model's
    final KV quantization (`Recipe.final_kv_cache`).
    """
    return setting == "on" or (setting == "auto" and kv_cache is not None)


def down_proj_seed(seed: int, enabled: bool) -> int | None:
    """The seed of the R4 Hadamard, or None when the stage has no down_proj rotation."""
    return seed + DOWN_SEED_OFFSET if enabled else None


@dataclass(frozen=True)
class OnlineRotations:
    """The R4 (down_proj input) and R3 (Q/K after RoPE) matrices a stage installs, and R4's seed."""

    down_seed: int | None
    r4: torch.Tensor | None
    r3: torch.Tensor | None


def online_rotation_matrices(adapter: DecoderAdapter, seed: int, down_proj: bool, qk: bool) -> OnlineRotations:
    down_seed = down_proj_seed(seed, down_proj)
    r4 = random_hadamard_matrix(adapter.intermediate_size, seed=down_seed) if down_seed is not None else None
    r3 = random_hadamard_matrix(adapter.head_dim, seed=seed + QK_SEED_OFFSET) if qk else None
    return OnlineRotations(down_seed, r4, r3)


def attach_layer_online_rotations(parts, rotations: OnlineRotations, fuse_down_proj: bool) -> None:
    """Install R4 and R3 on one decoder layer (see `attach_online_rotations`)."""
    if rotations.r4 is not None:
        if fuse_down_proj:
            attach_online_input_rotation(parts.layer.mlp, "down_proj", rotations.r4)
        else:
            wrap_linear(parts.layer.mlp, "down_proj").set_input_rotation(rotations.r4)
    if rotations.r3 is not None:
        set_qk_rotation(parts.layer.self_attn, rotations.r3)


def attach_online_rotations(
    model: nn.Module, adapter: DecoderAdapter, seed: int, down_proj: bool, qk: bool, fuse_down_proj: bool
) -> int | None:
    """Install R4 on every down_proj input and, if `qk`, R3 on Q/K after RoPE; returns R4's seed.

    `fuse_down_proj` also folds R4 into down_proj's weight now (W ← W R4, the output is
    unchanged); OSTQuant passes False because it trains through R4 and fuses it afterwards.
    """
    rotations = online_rotation_matrices(adapter, seed, down_proj, qk)
    for parts in adapter.all_layer_parts(model):
        attach_layer_online_rotations(parts, rotations, fuse_down_proj)
    if rotations.r3 is not None:
        use_compressed_attention(model)
    return rotations.down_seed
