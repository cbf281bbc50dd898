"""Random-weight models for unit tests: seconds to build, no store, no download.

Lives with the tests, not the library: nothing in production builds a random model. The
root conftest puts this folder on sys.path, so tests import it as `random_models`.
"""

from __future__ import annotations

import torch
from torch import nn


def tiny_llama(seed: int = 0, **overrides: int) -> nn.Module:
    """A random-weight Llama of a few layers for unit tests (GQA, odd sizes, untied head)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = dict(vocab_size=256, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
               num_attention_heads=6, num_key_value_heads=2, head_dim=8, max_position_embeddings=256,
               rms_norm_eps=1e-5, tie_word_embeddings=True)
    cfg.update(overrides)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**cfg)).eval()
    # random RMSNorm weights, so norm folding is actually exercised
    for name, p in model.named_parameters():
        if "norm" in name:
            p.data.uniform_(0.5, 1.5)
    return model


# --------------------------------------------------------------------------- one tiny model per family
#
# Each keeps the family's layer as transformers builds it (q/k norms, (1+w) norms, fused
# projections, soft-capping, sliding windows) at widths a test runs in milliseconds. Widths are
# not powers of two (48 = 12·4, 96 = 12·8), so the Paley Hadamards are exercised too.

_SMALL = dict(vocab_size=256, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=6, num_key_value_heads=2, head_dim=8, max_position_embeddings=256,
              rms_norm_eps=1e-5)


def _randomize_norms(model: nn.Module, low: float, high: float) -> nn.Module:
    for name, p in model.named_parameters():
        if "norm" in name:
            p.data.uniform_(low, high)
    return model


def _build(config_cls, model_cls, seed: int, cfg: dict, norm_range: tuple[float, float] = (0.5, 1.5)) -> nn.Module:
    torch.manual_seed(seed)
    model = model_cls(config_cls(**cfg)).eval()
    _randomize_norms(model, *norm_range)
    # a non-zero bias (transformers initialises q/k/v biases to zero), so bias handling is exercised
    for name, p in model.named_parameters():
        if name.endswith("proj.bias"):
            p.data.normal_(0.0, 0.05)
    return model


def tiny_mistral(seed: int = 0, **overrides) -> nn.Module:
    from transformers import MistralConfig, MistralForCausalLM

    return _build(MistralConfig, MistralForCausalLM, seed, {**_SMALL, "tie_word_embeddings": False, "sliding_window": 16, **overrides})


def tiny_qwen2(seed: int = 0, **overrides) -> nn.Module:
    """Qwen2 keeps biases on q/k/v."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = {k: v for k, v in _SMALL.items() if k != "head_dim"}  # Qwen2 derives head_dim = hidden / heads
    return _build(Qwen2Config, Qwen2ForCausalLM, seed, {**cfg, "tie_word_embeddings": True, **overrides})


def tiny_qwen3(seed: int = 0, **overrides) -> nn.Module:
    """Qwen3: RMSNorm on every query and key head before RoPE."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    return _build(Qwen3Config, Qwen3ForCausalLM, seed, {**_SMALL, "tie_word_embeddings": True, **overrides})


def tiny_gemma2(seed: int = 0, **overrides) -> nn.Module:
    """Gemma 2: (1 + w) norms before and after each block, gelu-tanh GLU, scaled embeddings,
    attention and final-logit soft-capping, alternating sliding-window layers."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    cfg = {**_SMALL, "tie_word_embeddings": True, "sliding_window": 16, "query_pre_attn_scalar": 8,
           "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "rms_norm_eps": 1e-6}
    return _build(Gemma2Config, Gemma2ForCausalLM, seed, {**cfg, **overrides}, norm_range=(-0.5, 0.5))


def tiny_gemma3(seed: int = 0, **overrides) -> nn.Module:
    """Gemma 3 text: Gemma 2's layer plus (1 + w) q/k norms, local/global RoPE, no attention soft-capping."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = {**_SMALL, "num_hidden_layers": 3, "tie_word_embeddings": True, "sliding_window": 16,
           "query_pre_attn_scalar": 8, "rms_norm_eps": 1e-6,
           "layer_types": ["sliding_attention", "sliding_attention", "full_attention"]}
    return _build(Gemma3TextConfig, Gemma3ForCausalLM, seed, {**cfg, **overrides}, norm_range=(-0.5, 0.5))


def tiny_phi3(seed: int = 0, **overrides) -> nn.Module:
    """Phi-3: fused qkv_proj and gate_up_proj, as its checkpoints store them."""
    from transformers import Phi3Config, Phi3ForCausalLM

    cfg = {k: v for k, v in _SMALL.items() if k != "head_dim"}
    return _build(Phi3Config, Phi3ForCausalLM, seed, {**cfg, "tie_word_embeddings": False, "pad_token_id": 0,
                                                      "bos_token_id": 1, "eos_token_id": 2, **overrides})


# family name -> builder (the families the adapters cover; `tiny_llama` is the Llama entry)
FAMILY_BUILDERS = {
    "llama": tiny_llama, "mistral": tiny_mistral, "qwen2": tiny_qwen2, "qwen3": tiny_qwen3,
    "gemma2": tiny_gemma2, "gemma3": tiny_gemma3, "phi3": tiny_phi3,
}
