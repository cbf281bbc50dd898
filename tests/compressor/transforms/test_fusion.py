"""Weight fusion: folding the norms into the next linears leaves the model's function unchanged."""

import torch

from compressor.models.adapter import adapter_for
from compressor.transforms.fusion import fold_norms_into_linears
from tests.random_models import tiny_llama


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max()).item()


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
