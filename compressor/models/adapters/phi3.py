"""Phi-3: Llama's layer with q/k/v fused in `qkv_proj` and gate/up in `gate_up_proj` (gate rows first).

`layer_parts` splits a layer's fused projections the first time a method asks for it (see
`fused.py`); `restore_checkpoint_layout` fuses them back, quantized codes included, so the
export stores `qkv_proj` and `gate_up_proj` as the checkpoint does.
"""

from __future__ import annotations

from torch import nn

from compressor.models.adapters.base import DecoderAdapter
from compressor.models.adapters.fused import fuse_projection, split_projection
from compressor.models.adapters.parts import DecoderLayerParts
from compressor.models.families import PHI3

QKV, GATE_UP = "qkv_proj", "gate_up_proj"


class Phi3Adapter(DecoderAdapter):
    family = PHI3

    def layer_parts(self, model: nn.Module, index: int) -> DecoderLayerParts:
        layer = model.model.layers[index]
        q_rows, kv_rows = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        split_projection(layer.self_attn, QKV, {"q_proj": q_rows, "k_proj": kv_rows, "v_proj": kv_rows})
        split_projection(layer.mlp, GATE_UP, {"gate_proj": self.intermediate_size, "up_proj": self.intermediate_size})
        return super().layer_parts(model, index)

    def restore_checkpoint_layout(self, model: nn.Module) -> None:
        for layer in self.decoder_layers(model):
            fuse_projection(layer.self_attn, QKV)
            fuse_projection(layer.mlp, GATE_UP)
