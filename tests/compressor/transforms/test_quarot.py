"""The hadamard stage's fused rotations leave the model's function unchanged (quantization off)."""

import pytest
import torch

from compressor.models.adapter import adapter_for
from compressor.spec import HadamardConfig
from compressor.transforms.quarot import apply_hadamard_rotations
from tests.random_models import tiny_llama


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
