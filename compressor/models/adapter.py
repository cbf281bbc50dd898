"""Architecture adapters: where a model family keeps its norms, projections and heads.

Methods ask the adapter for "the q/k/v projections of layer i" instead of walking module
names themselves, so a new family is one adapter, not edits across every method.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")


class UnsupportedArchitectureError(ValueError):
    pass


@dataclass
class DecoderLayerParts:
    """The modules of one pre-norm decoder layer with gated FFN (Llama family)."""

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


class LlamaFamilyAdapter:
    """Llama, Mistral and Qwen2 share the layout `model.layers[i].{self_attn,mlp}.*_proj`."""

    def __init__(self, model: nn.Module):
        cfg = model.config
        self.config = cfg
        self.num_layers: int = cfg.num_hidden_layers
        self.hidden_size: int = cfg.hidden_size
        self.intermediate_size: int = cfg.intermediate_size
        self.num_heads: int = cfg.num_attention_heads
        self.num_kv_heads: int = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        self.head_dim: int = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        if getattr(cfg, "hidden_act", "silu") != "silu":
            raise UnsupportedArchitectureError(f"hidden_act {cfg.hidden_act!r}: only 'silu' (SwiGLU) is supported")

    def decoder_layers(self, model: nn.Module) -> list[nn.Module]:
        return list(model.model.layers)

    def layer_parts(self, model: nn.Module, index: int) -> DecoderLayerParts:
        layer = model.model.layers[index]
        attn, mlp = layer.self_attn, layer.mlp
        return DecoderLayerParts(
            index=index, layer=layer, input_norm=layer.input_layernorm,
            q_proj=attn.q_proj, k_proj=attn.k_proj, v_proj=attn.v_proj, o_proj=attn.o_proj,
            post_attention_norm=layer.post_attention_layernorm,
            gate_proj=mlp.gate_proj, up_proj=mlp.up_proj, down_proj=mlp.down_proj,
        )

    def all_layer_parts(self, model: nn.Module) -> list[DecoderLayerParts]:
        return [self.layer_parts(model, i) for i in range(self.num_layers)]

    def embeddings(self, model: nn.Module) -> nn.Embedding:
        return model.model.embed_tokens

    def final_norm(self, model: nn.Module) -> nn.Module:
        return model.model.norm

    def lm_head(self, model: nn.Module) -> nn.Linear:
        return model.lm_head

    def rotary_embedding(self, model: nn.Module) -> nn.Module:
        return model.model.rotary_emb

    def untie_embeddings(self, model: nn.Module) -> None:
        """Give lm_head its own weight: rotations change the embedding and head differently."""
        head, emb = self.lm_head(model), self.embeddings(model)
        if head.weight.data_ptr() == emb.weight.data_ptr() or getattr(model.config, "tie_word_embeddings", False):
            head.weight = nn.Parameter(emb.weight.detach().clone())
            model.config.tie_word_embeddings = False
            if hasattr(model, "_tied_weights_keys"):
                model._tied_weights_keys = []  # transformers 5: stop re-tying on save/load

    def linear_names(self, model: nn.Module) -> list[str]:
        """Fully qualified names of the decoder linears (what quantization targets)."""
        return [f"model.layers.{p.index}.{n}" for p in self.all_layer_parts(model) for n in p.linears()]


def adapter_for(model: nn.Module) -> LlamaFamilyAdapter:
    arch = type(model).__name__
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"architecture {arch} is not supported; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    return LlamaFamilyAdapter(model)
