"""The adapter's tie check: the head holds the embedding's values (as a dtype stores them), compared in row blocks."""

from __future__ import annotations

import torch

from compressor.models.adapter import adapter_for
from compressor.models.adapters import base
from tests.random_models import tiny_llama


def test_tie_follows_the_values_in_the_stored_dtype(monkeypatch):
    model = tiny_llama(num_hidden_layers=1, tie_word_embeddings=False)
    adapter = adapter_for(model)
    monkeypatch.setattr(base, "TIE_BLOCK_ELEMENTS", 3 * model.config.hidden_size)  # several row blocks
    model.lm_head.weight.data.copy_(model.model.embed_tokens.weight.bfloat16().float())
    model.model.embed_tokens.weight.data.copy_(model.lm_head.weight)
    assert adapter.embeddings_tied(model) is True
    model.lm_head.weight.data[-1, 0] *= 1.0 + 2.0 ** -12  # last block only, below bf16's resolution
    assert adapter.embeddings_tied(model) is False
    assert adapter.embeddings_tied(model, torch.bfloat16) is True
    model.lm_head.weight.data[-1, 0] *= 2.0
    assert adapter.embeddings_tied(model, torch.bfloat16) is False


def test_a_head_with_a_bias_or_another_shape_is_not_tied():
    model = tiny_llama(num_hidden_layers=1, tie_word_embeddings=False)
    adapter = adapter_for(model)
    model.lm_head.weight = torch.nn.Parameter(model.model.embed_tokens.weight.detach().clone())
    model.lm_head.bias = torch.nn.Parameter(torch.zeros(model.lm_head.weight.shape[0]))
    assert adapter.embeddings_tied(model) is False
    model.lm_head.bias = None
    assert adapter.embeddings_tied(model) is True
    model.lm_head.weight = torch.nn.Parameter(model.model.embed_tokens.weight.detach()[:, :-1].clone())
    assert adapter.embeddings_tied(model) is False
