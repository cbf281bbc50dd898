"""Gemma 2 and Gemma 3 (text): (1 + w) RMSNorms before and after each block, gelu-tanh GLU,
embeddings scaled by sqrt(hidden), final-logit soft-capping, sliding-window layers; Gemma 2
soft-caps attention logits, Gemma 3 normalises q/k per head instead and uses a local RoPE on
its sliding layers.

Folding a (1 + w) norm moves 1 + w into the readers and sets w = 0. The norms after each block
(`post_attention_layernorm`, `post_feedforward_layernorm`) scale the residual stream channel by
channel, so R1 cannot be fused; R2 (inside attention), R3 (after RoPE) and R4 can.
"""

from __future__ import annotations

from torch import nn

from compressor.models.adapters.base import DecoderAdapter
from compressor.models.families import GEMMA2, GEMMA3


class Gemma2Adapter(DecoderAdapter):
    family = GEMMA2

    def _extra_norms(self, layer: nn.Module) -> dict[str, nn.Module]:
        return {"attn_output_norm": layer.post_attention_layernorm, "mlp_output_norm": layer.post_feedforward_layernorm}


class Gemma3Adapter(Gemma2Adapter):
    family = GEMMA3

    def _extra_norms(self, layer: nn.Module) -> dict[str, nn.Module]:
        return {**super()._extra_norms(layer), "q_norm": layer.self_attn.q_norm, "k_norm": layer.self_attn.k_norm}
