"""The Llama-family adapter: untying the head, refusing architectures it does not know."""

import pytest
import torch

from compressor.models.adapter import adapter_for
from tests.random_models import tiny_llama


def test_untie_gives_the_head_its_own_weight():
    model = tiny_llama()
    adapter_for(model).untie_embeddings(model)
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    torch.testing.assert_close(model.lm_head.weight, model.model.embed_tokens.weight)


def test_unsupported_architecture_is_refused():
    from transformers import GPT2Config, GPT2LMHeadModel

    from compressor.models.adapter import UnsupportedArchitectureError

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(UnsupportedArchitectureError, match="LlamaForCausalLM"):
        adapter_for(gpt2)
