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
from compressor.registry import register_stage

from compressor.models.adapter import LlamaFamilyAdapter
from compressor.quant.attention import use_compressed_attention
from compressor.transforms.fusion import (
    attach_online_input_rotation,
    fold_norms_into_linears,
    rotate_residual_stream,
    rotate_value_heads,
)
from compressor.transforms.hadamard import random_hadamard_matrix
from compressor.spec import HadamardConfig


def apply_hadamard_rotations(model: nn.Module, adapter: LlamaFamilyAdapter, cfg: HadamardConfig, qk_rotation: bool) -> None:
    fold_norms_into_linears(model, adapter)
    if cfg.r1:
        rotate_residual_stream(model, adapter, random_hadamard_matrix(adapter.hidden_size, seed=cfg.seed))
    r4 = random_hadamard_matrix(adapter.intermediate_size, seed=cfg.seed + 4) if cfg.online_down_proj else None
    r3 = random_hadamard_matrix(adapter.head_dim, seed=cfg.seed + 3) if qk_rotation else None
    for parts in adapter.all_layer_parts(model):
        if cfg.r2:
            r2 = random_hadamard_matrix(adapter.head_dim, seed=cfg.seed + 1000 + parts.index)
            rotate_value_heads(parts, adapter, [r2] * adapter.num_kv_heads)
        if r4 is not None:
            attach_online_input_rotation(parts.layer.mlp, "down_proj", r4)
        if r3 is not None:
            parts.layer.self_attn.register_buffer("qk_rotation", r3.float(), persistent=False)
    if r3 is not None:
        use_compressed_attention(model)


@register_stage(HadamardConfig)
def run_hadamard(ctx: CompressionContext, cfg: HadamardConfig) -> dict[str, Any]:
    qk = cfg.online_qk == "on" or (cfg.online_qk == "auto" and ctx.kv_cache_quantized())
    apply_hadamard_rotations(ctx.model, ctx.adapter, cfg, qk_rotation=qk)
    return {"r1": cfg.r1, "r2": cfg.r2, "online_down_proj": cfg.online_down_proj, "online_qk": qk}
