"""`DecoderLayerParts`: the modules of one decoder layer, named by role rather than by checkpoint key."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass
class DecoderLayerParts:
    """One pre-norm decoder layer with a gated FFN.

    `input_norm` feeds q/k/v and `post_attention_norm` feeds gate/up (Gemma calls the latter
    `pre_feedforward_layernorm`). The optional norms are the ones a family adds: per-head
    q/k norms (Qwen3, Gemma 3) and norms on the block outputs inside the residual (Gemma).
    For Phi-3 the q/k/v and gate/up linears are the split views of its fused projections.
    """

    index: int
    layer: nn.Module
    input_norm: nn.Module
    q_proj: nn.Linear
    k_proj: nn.Linear
    v_proj: nn.Linear
    o_proj: nn.Linear
    post_attention_norm: nn.Module
    gate_proj: nn.Linear
    up_proj: nn.Linear
    down_proj: nn.Linear
    q_norm: nn.Module | None = None
    k_norm: nn.Module | None = None
    attn_output_norm: nn.Module | None = None
    mlp_output_norm: nn.Module | None = None

    def linears(self) -> dict[str, nn.Linear]:
        return {
            "self_attn.q_proj": self.q_proj, "self_attn.k_proj": self.k_proj,
            "self_attn.v_proj": self.v_proj, "self_attn.o_proj": self.o_proj,
            "mlp.gate_proj": self.gate_proj, "mlp.up_proj": self.up_proj, "mlp.down_proj": self.down_proj,
        }

    @staticmethod
    def shared_inputs() -> dict[str, str]:
        """Linears that read the same tensor as another (name -> the one whose statistics serve both)."""
        return {"self_attn.k_proj": "self_attn.q_proj", "self_attn.v_proj": "self_attn.q_proj", "mlp.up_proj": "mlp.gate_proj"}
