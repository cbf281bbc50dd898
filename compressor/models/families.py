"""The model families the compressor knows, as torch-free records (what each layer computes).

One record per family says where its norms sit and what they compute, whether queries and keys
are normalised per head, whether projections are fused in the checkpoint, and which config
field names the FFN activation. `compatibility.py` reads these to decide, from a config.json
alone, which methods apply; the adapters (`adapters/`) read the same records to walk a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Family:
    name: str
    architectures: tuple[str, ...]
    activations: tuple[str, ...]  # FFN activations the family ships with (ProSparse may swap in relu)
    activation_field: str = "hidden_act"  # config field naming the activation
    norm_offset: float = 0.0  # RMSNorm computes x̂ · (offset + w): Gemma's (1 + w)
    qk_norm: bool = False  # RMSNorm on each query and key head before RoPE (Qwen3, Gemma 3)
    post_block_norms: bool = False  # RMSNorms on the attention and FFN outputs inside the residual (Gemma 2/3)
    fused_projections: bool = False  # qkv_proj and gate_up_proj stored fused (Phi-3)
    mlp_norm: str = "post_attention_layernorm"  # the norm that feeds the FFN
    mlp_activation_attr: str = "act_fn"  # the FFN module's activation attribute


LLAMA = Family("llama", ("LlamaForCausalLM",), ("silu",))
MISTRAL = Family("mistral", ("MistralForCausalLM",), ("silu",))
QWEN2 = Family("qwen2", ("Qwen2ForCausalLM",), ("silu",))
QWEN3 = Family("qwen3", ("Qwen3ForCausalLM",), ("silu",), qk_norm=True)
GEMMA_KW: dict[str, Any] = dict(activation_field="hidden_activation", norm_offset=1.0, post_block_norms=True,
                                mlp_norm="pre_feedforward_layernorm")
GEMMA2 = Family("gemma2", ("Gemma2ForCausalLM",), ("gelu_pytorch_tanh",), **GEMMA_KW)
GEMMA3 = Family("gemma3", ("Gemma3ForCausalLM",), ("gelu_pytorch_tanh",), qk_norm=True, **GEMMA_KW)
PHI3 = Family("phi3", ("Phi3ForCausalLM",), ("silu",), fused_projections=True, mlp_activation_attr="activation_fn")

FAMILIES: tuple[Family, ...] = (LLAMA, MISTRAL, QWEN2, QWEN3, GEMMA2, GEMMA3, PHI3)
_BY_ARCHITECTURE = {arch: f for f in FAMILIES for arch in f.architectures}
SUPPORTED_ARCHITECTURES: tuple[str, ...] = tuple(_BY_ARCHITECTURE)

# config fields that only mixture-of-experts models carry (Mixtral, Qwen2/3-MoE, DeepSeek, Phi-3.5-MoE, ...)
MOE_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_intermediate_size", "num_experts_per_tok")


def family_of(architecture: str) -> Family | None:
    return _BY_ARCHITECTURE.get(architecture)


def is_mixture_of_experts(config: dict[str, Any]) -> bool:
    arch = " ".join(config.get("architectures") or [])
    return "moe" in arch.lower() or any(config.get(f) for f in MOE_FIELDS)


def unsupported_reason(config: dict[str, Any]) -> str | None:
    """Why a config's model cannot be compressed here (None if its family is supported)."""
    archs = config.get("architectures") or []
    arch = archs[0] if archs else None
    if is_mixture_of_experts(config):
        return (f"{arch or config.get('model_type')} is a mixture-of-experts model: its FFN is a router over expert FFNs, "
                "which no method here walks (quantization, rotations and sparsity assume one dense gated FFN per layer)")
    if arch is None:
        return "config.json names no architecture (field 'architectures')"
    family = family_of(arch)
    if family is None:
        if arch == "Gemma3ForConditionalGeneration":
            return ("Gemma3ForConditionalGeneration is the multimodal Gemma 3 (vision tower); import its text-only "
                    f"Gemma3ForCausalLM checkpoint; supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
        return f"architecture {arch} is not supported; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
    act = config.get(family.activation_field) or config.get("hidden_act")
    if act is not None and act not in family.activations + ("relu",):
        return f"{family.activation_field} {act!r}: the {family.name} adapter knows {', '.join(family.activations)} (and relu after ProSparse)"
    return None


def partial_rotary_factor(config: dict[str, Any]) -> float:
    """The fraction of each head RoPE rotates (Phi-4-mini-style Phi3 configs: 0.75); 1.0 when unset."""
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    return float(config.get("partial_rotary_factor") or (rope.get("partial_rotary_factor") if isinstance(rope, dict) else None) or 1.0)


PARTIAL_ROPE_BLOCKED = ("RoPE rotates only part of each head (partial_rotary_factor < 1), so the q/k transforms shaped for "
                        "pairs (i, i + head_dim/2) do not commute with it")
