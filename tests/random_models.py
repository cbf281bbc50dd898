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
