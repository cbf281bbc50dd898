"""The fixed random-Hadamard rotation baseline (QuaRot style), the `hadamard` recipe stage.

Fold RMSNorm weights into the next linears, rotate the residual stream by a random Hadamard
R1 (fused), rotate each value head by R2 (fused), put an online Hadamard on the down_proj
input (R4), and, when the KV cache is quantized, a Hadamard on Q and K after RoPE (R3).
Rotations spread outlier channels across all channels, which is what makes 4-bit
activations usable.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from compressor.context import CompressionContext
from compressor.models.adapter import DecoderAdapter
from compressor.registry import register_stage
from compressor.spec import HadamardConfig
from compressor.transforms.fusion import fold_norms_into_linears, rotate_residual_stream, rotate_value_heads
from compressor.transforms.hadamard import random_hadamard_matrix
from compressor.transforms.online_rotations import VALUE_HEAD_SEED_OFFSET, attach_online_rotations, resolve_online_qk


def apply_hadamard_rotations(model: nn.Module, adapter: DecoderAdapter, cfg: HadamardConfig, qk_rotation: bool) -> None:
    fold_norms_into_linears(model, adapter)
    if cfg.r1:
        rotate_residual_stream(model, adapter, random_hadamard_matrix(adapter.hidden_size, seed=cfg.seed))
    if cfg.r2:
        for parts in adapter.all_layer_parts(model):
            r2 = random_hadamard_matrix(adapter.head_dim, seed=cfg.seed + VALUE_HEAD_SEED_OFFSET + parts.index)
            rotate_value_heads(parts, adapter, [r2] * adapter.num_kv_heads)
    attach_online_rotations(model, adapter, cfg.seed, down_proj=cfg.online_down_proj, qk=qk_rotation, fuse_down_proj=True)


@register_stage(HadamardConfig)
def run_hadamard(ctx: CompressionContext, cfg: HadamardConfig) -> dict[str, Any]:
    qk = resolve_online_qk(cfg.online_qk, ctx.recipe.final_kv_cache())
    apply_hadamard_rotations(ctx.model, ctx.adapter, cfg, qk_rotation=qk)
    return {"r1": cfg.r1, "r2": cfg.r2, "online_down_proj": cfg.online_down_proj, "online_qk": qk}
