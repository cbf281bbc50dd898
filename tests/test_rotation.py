"""Fused rotations leave the model's function unchanged (quantization off)."""

import pytest
import torch

from compressor.models.adapter import adapter_for, tiny_llama
from compressor.spec import HadamardConfig
from compressor.transforms.fusion import fold_norms_into_linears
from compressor.transforms.quarot import apply_hadamard_rotations


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max()).item()


@pytest.mark.parametrize("qk", [False, True])
@pytest.mark.parametrize("kv_heads", [2, 6])
def test_fused_hadamard_rotation_is_equivalent(qk, kv_heads):
    model = tiny_llama(num_key_value_heads=kv_heads)  # hidden 48 = 12·4, intermediate 96 = 12·8: not powers of two
    adapter = adapter_for(model)
    adapter.untie_embeddings(model)
    tokens = torch.randint(0, 256, (2, 40))
    with torch.no_grad():
        before = model(tokens).logits
        apply_hadamard_rotations(model, adapter, HadamardConfig(seed=3), qk_rotation=qk)
        after = model(tokens).logits
    assert max_rel_diff(before, after) < 1e-4
    # the weights really changed (a no-op would also pass the check above)
    assert not torch.allclose(model.model.embed_tokens.weight, tiny_llama(num_key_value_heads=kv_heads).model.embed_tokens.weight)


def test_norm_folding_is_equivalent_and_sets_unit_norms():
    model = tiny_llama()
    adapter = adapter_for(model)
    adapter.untie_embeddings(model)
    tokens = torch.randint(0, 256, (1, 30))
    with torch.no_grad():
        before = model(tokens).logits
        fold_norms_into_linears(model, adapter)
        after = model(tokens).logits
    assert max_rel_diff(before, after) < 1e-5
    assert torch.all(model.model.norm.weight == 1)


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
