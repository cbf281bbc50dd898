"""Qwen3: Llama's layer plus an RMSNorm on every query and key head (over head_dim) before RoPE.

What passes: R1 (the norms read q_proj/k_proj outputs, not the residual), R2 (v has no norm),
R3 (applied after RoPE) and R4. What does not: a transform between q_proj and k_proj outputs
(AffineQuant's qk matrix, OSTQuant's q/k scales), since RMSNorm(q A⁻¹) ≠ RMSNorm(q) A⁻¹.
"""

from __future__ import annotations

from torch import nn

from compressor.models.adapters.base import DecoderAdapter
from compressor.models.families import QWEN3


class Qwen3Adapter(DecoderAdapter):
    family = QWEN3

    def _extra_norms(self, layer: nn.Module) -> dict[str, nn.Module]:
        return {"q_norm": layer.self_attn.q_norm, "k_norm": layer.self_attn.k_norm}
