"""`DecoderAdapter`: what every family's adapter answers (sizes, layers, norms, heads), read from its `Family`."""

from __future__ import annotations

import torch
from torch import nn

from compressor.models.adapters.parts import DecoderLayerParts
from compressor.models.families import PARTIAL_ROPE_BLOCKED, Family, partial_rotary_factor

TIE_BLOCK_ELEMENTS = 1 << 24  # elements per block when the tie is compared in another dtype (64 MB of float32)


class UnsupportedArchitectureError(ValueError):
    pass


class UnsupportedTransformError(ValueError):
    """A transform that cannot pass through this family's layer (recipe validation refuses it earlier)."""


class DecoderAdapter:
    """Llama-layout decoder (`model.layers[i].{self_attn,mlp}.*_proj`); families override what differs."""

    family: Family

    def __init__(self, model: nn.Module):
        cfg = model.config
        self.config = cfg
        self.num_layers: int = cfg.num_hidden_layers
        self.hidden_size: int = cfg.hidden_size
        self.intermediate_size: int = cfg.intermediate_size
        self.num_heads: int = cfg.num_attention_heads
        self.num_kv_heads: int = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        self.head_dim: int = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        act = getattr(cfg, self.family.activation_field, None) or getattr(cfg, "hidden_act", None)
        if act not in self.family.activations + ("relu",):
            raise UnsupportedArchitectureError(
                f"{self.family.activation_field} {act!r}: the {self.family.name} adapter supports {', '.join(self.family.activations)}"
            )

    # ------------------------------------------------------------------ layers

    def decoder_layers(self, model: nn.Module) -> list[nn.Module]:
        return list(model.model.layers)

    def layer_parts(self, model: nn.Module, index: int) -> DecoderLayerParts:
        layer = model.model.layers[index]
        attn, mlp = layer.self_attn, layer.mlp
        return DecoderLayerParts(
            index=index, layer=layer, input_norm=layer.input_layernorm,
            q_proj=attn.q_proj, k_proj=attn.k_proj, v_proj=attn.v_proj, o_proj=attn.o_proj,
            post_attention_norm=getattr(layer, self.family.mlp_norm),
            gate_proj=mlp.gate_proj, up_proj=mlp.up_proj, down_proj=mlp.down_proj,
            **self._extra_norms(layer),
        )

    def _extra_norms(self, layer: nn.Module) -> dict[str, nn.Module]:
        return {}

    def all_layer_parts(self, model: nn.Module) -> list[DecoderLayerParts]:
        return [self.layer_parts(model, i) for i in range(self.num_layers)]

    def gated_mlps(self, model: nn.Module) -> list[nn.Module]:
        """Every layer's FFN module (its activation is `mlp_activation_attr`)."""
        return [layer.mlp for layer in self.decoder_layers(model)]

    def embeddings(self, model: nn.Module) -> nn.Embedding:
        return model.model.embed_tokens

    def final_norm(self, model: nn.Module) -> nn.Module:
        return model.model.norm

    def lm_head(self, model: nn.Module) -> nn.Linear:
        return model.lm_head

    def logits(self, model: nn.Module, hidden: torch.Tensor, head: nn.Module | None = None) -> torch.Tensor:
        """Next-token logits from final-norm hidden states, as the model's own forward makes them (Gemma 2 soft-caps them).

        `head` replaces the model's lm_head (the original's, kept for KL against a rotated model).
        """
        logits = (head or self.lm_head(model))(hidden)
        cap = getattr(self.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def rotary_embedding(self, model: nn.Module) -> nn.Module:
        return model.model.rotary_emb

    # ------------------------------------------------------------------ norms

    @property
    def norm_offset(self) -> float:
        return self.family.norm_offset

    def norm_gain(self, norm: nn.Module) -> torch.Tensor:
        """The per-channel factor the norm multiplies by (w, or 1 + w for Gemma), in float64."""
        return norm.weight.data.double() + self.family.norm_offset

    def set_norm_gain(self, norm: nn.Module, gain: torch.Tensor) -> None:
        norm.weight.data.copy_((gain.double() - self.family.norm_offset).to(norm.weight.dtype))

    # ------------------------------------------------------------------ what passes through the layer

    def require_residual_rotation(self) -> None:
        """Raise unless an orthogonal map of the residual stream (R1) can be fused into the weights."""
        if self.family.post_block_norms:
            raise UnsupportedTransformError(
                f"{self.family.name}: the RMSNorms on the attention and FFN outputs scale the residual stream channel by channel, "
                "so a residual rotation (R1) does not commute with them; use r1: false"
            )

    def query_key_transform_block(self) -> str | None:
        """Why no invertible map may sit between q_proj and k_proj outputs (q/k scales), or None if one may."""
        if self.family.qk_norm:
            return (f"{self.family.name}: queries and keys pass an RMSNorm per head before RoPE, which a q/k transform "
                    "fused into q_proj/k_proj would change; only rotations after RoPE (R3) pass it")
        if partial_rotary_factor(self.config.to_dict()) < 1.0:
            return f"{self.family.name}: {PARTIAL_ROPE_BLOCKED}"
        return None

    def require_query_key_transform(self) -> None:
        block = self.query_key_transform_block()
        if block is not None:
            raise UnsupportedTransformError(block)

    # ------------------------------------------------------------------ head and layout

    def untie_embeddings(self, model: nn.Module) -> None:
        """Give lm_head its own weight: rotations change the embedding and head differently."""
        head, emb = self.lm_head(model), self.embeddings(model)
        if head.weight.data_ptr() == emb.weight.data_ptr() or getattr(model.config, "tie_word_embeddings", False):
            head.weight = nn.Parameter(emb.weight.detach().clone())
            model.config.tie_word_embeddings = False
            if hasattr(model, "_tied_weights_keys"):
                model._tied_weights_keys = []  # transformers 5: stop re-tying on save/load

    def embeddings_tied(self, model: nn.Module, dtype: torch.dtype | None = None) -> bool:
        """Whether lm_head holds exactly the input embedding, compared as `dtype` would store both.

        A stored tie survives RTN/GPTQ and rounding (both parts change alike) but not a rotation;
        the comparison runs in row blocks, so no full copy of either part is made in `dtype`.
        """
        head, emb = self.lm_head(model), self.embeddings(model)
        if head is None or emb is None or getattr(head, "bias", None) is not None:
            return False
        a, b = head.weight, emb.weight
        if a.shape != b.shape:
            return False
        if dtype is None or (a.dtype == dtype and b.dtype == dtype):
            return bool(torch.equal(a, b))
        rows = max(1, TIE_BLOCK_ELEMENTS // max(1, a.shape[-1]))
        return all(torch.equal(x.to(dtype), y.to(dtype)) for x, y in zip(a.split(rows), b.split(rows)))

    def restore_checkpoint_layout(self, model: nn.Module) -> None:
        """Put the model back into its checkpoint's module layout before export (only Phi-3 changes it)."""

    def linear_names(self, model: nn.Module) -> list[str]:
        """Fully qualified names of the decoder linears (what quantization targets)."""
        return [f"model.layers.{p.index}.{n}" for p in self.all_layer_parts(model) for n in p.linears()]
