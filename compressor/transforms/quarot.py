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
from compressor.execution.residency import ResidentLayers
from compressor.quant.attention import use_compressed_attention
from compressor.transforms.fusion import fold_final_norm, fold_layer_norms, rotate_layer_residual, rotate_outer_residual, rotate_value_heads
from compressor.transforms.hadamard import random_hadamard_matrix
from compressor.transforms.online_rotations import (
    VALUE_HEAD_SEED_OFFSET,
    attach_layer_online_rotations,
    online_rotation_matrices,
    resolve_online_qk,
)


def apply_hadamard_rotations(model: nn.Module, adapter: DecoderAdapter, cfg: HadamardConfig, qk_rotation: bool,
                             layers: ResidentLayers | None = None) -> None:
    """Fold the norms, fuse R1 and R2, install R4 (and R3): a decoder layer at a time, then the embedding and head.

    Each weight sees the same products in the same order as a whole-model pass would apply
    them, so walking the layers (sequential execution) gives the same bits.
    """
    layers = layers or ResidentLayers(model, adapter)
    r1 = random_hadamard_matrix(adapter.hidden_size, seed=cfg.seed) if cfg.r1 else None
    if r1 is not None:
        adapter.require_residual_rotation()
    online = online_rotation_matrices(adapter, cfg.seed, down_proj=cfg.online_down_proj, qk=qk_rotation)
    for parts in layers.walk():
        fold_layer_norms(parts, adapter)
        if r1 is not None:
            rotate_layer_residual(parts, r1)
        if cfg.r2:
            r2 = random_hadamard_matrix(adapter.head_dim, seed=cfg.seed + VALUE_HEAD_SEED_OFFSET + parts.index)
            rotate_value_heads(parts, adapter, [r2] * adapter.num_kv_heads)
        attach_layer_online_rotations(parts, online, fuse_down_proj=True)
    with layers.outer("embed", "head", save=True):
        fold_final_norm(model, adapter)
        if r1 is not None:
            rotate_outer_residual(model, adapter, r1)
    if online.r3 is not None:
        use_compressed_attention(model)


@register_stage(HadamardConfig)
def run_hadamard(ctx: CompressionContext, cfg: HadamardConfig) -> dict[str, Any]:
    qk = resolve_online_qk(cfg.online_qk, ctx.recipe.final_kv_cache())
    apply_hadamard_rotations(ctx.model, ctx.adapter, cfg, qk_rotation=qk, layers=ctx.layers)
    return {"r1": cfg.r1, "r2": cfg.r2, "online_down_proj": cfg.online_down_proj, "online_qk": qk}
