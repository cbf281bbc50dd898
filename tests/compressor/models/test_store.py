"""What only the real model shows: massive activation outliers, and rotations that tame them exactly."""

from __future__ import annotations

import copy

import pytest
import torch

from compressor.data import eval_windows, load_text
from compressor.models.adapter import adapter_for
from compressor.models.store import ModelStore
from compressor.spec import HadamardConfig
from compressor.transforms.quarot import apply_hadamard_rotations

pytestmark = pytest.mark.model


def test_store_holds_the_bundled_llama(model_store):
    info = {m["name"]: m for m in ModelStore(model_store).list()}["smollm2-135m"]
    assert info["architecture"] == "LlamaForCausalLM" and info["num_layers"] == 30 and info["hidden_size"] == 576
    assert info["params"] == 134_515_008


def down_proj_input_peakiness(model, tokens) -> float:
    """max |x| / RMS(x) of the down_proj inputs (after any online rotation), over all layers."""
    peaks = []

    def hook(module, args, _out):
        x = args[0]
        peaks.append((x.abs().max() / x.pow(2).mean().sqrt()).item())

    linears = [layer.mlp.down_proj for layer in model.model.layers]
    handles = [getattr(m, "linear", m).register_forward_hook(hook) for m in linears]
    with torch.no_grad():
        model(tokens)
    for h in handles:
        h.remove()
    return max(peaks)


def test_hadamard_rotation_is_exact_and_spreads_outliers(smollm):
    model, tok = copy.deepcopy(smollm[0]), smollm[1]
    tokens = eval_windows(tok, load_text("wiki", "eval"), 256, 256)
    with torch.no_grad():
        before = model(tokens).logits
    peaky_before = down_proj_input_peakiness(model, tokens)
    apply_hadamard_rotations(model, adapter_for(model), HadamardConfig(), qk_rotation=True)
    with torch.no_grad():
        after = model(tokens).logits
    assert ((after - before).abs().max() / before.abs().max()).item() < 1e-4
    peaky_after = down_proj_input_peakiness(model, tokens)
    assert peaky_before > 100  # the real model's massive activations
    assert peaky_after < peaky_before / 5
