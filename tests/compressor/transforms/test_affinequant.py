"""AffineQuant: exact merges (GQA, RoPE, dense LN), the gradual mask, the dominance guard, KL-Top, the stage."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from compressor.models.adapter import adapter_for
from compressor.execution.layer_inputs import capture_layer0_inputs
from compressor.quant.compressed_linear import FakeQuantLinear
from compressor.quant.kl_top import kl_top_loss
from compressor.quant.quantizer import quantize_weight_rtn
from compressor.spec import AffineQuantConfig, WeightQuantConfig, load_recipe
from compressor.transforms.affinequant.block import TransformedBlock
from compressor.transforms.affinequant.clipping import LearnableClipping
from compressor.transforms.affinequant.initialization import (
    ActivationMaxima,
    initial_transforms,
)
from compressor.transforms.affinequant.mask import (
    band_count,
    band_mask,
    dominance_margins,
)
from compressor.transforms.affinequant.matrices import (
    MaskedMatrix,
    RopePairMatrix,
    rope_pair_matrix,
)
from compressor.transforms.affinequant.merge import merge_layer_transforms
from compressor.transforms.affinequant.reconstruction import affinequant_quantize
from compressor.transforms.fusion import runtime_transform_reasons
from tests.random_models import tiny_llama


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max()).item()


def random_transforms(parts, adapter, cfg: AffineQuantConfig, seed: int):
    """Transforms far from identity: random SmoothQuant statistics, then off-diagonals up to half the diagonal per row."""
    g = torch.Generator().manual_seed(seed)
    maxima = ActivationMaxima()
    hidden, heads_width = adapter.hidden_size, adapter.num_heads * adapter.head_dim
    maxima.maxima = {"ln_attn": torch.rand(hidden, generator=g) * 4 + 0.1, "ln_mlp": torch.rand(hidden, generator=g) * 4 + 0.1,
                     "vo": torch.rand(heads_width, generator=g) * 4 + 0.1}
    transforms = initial_transforms(parts, adapter, maxima, cfg)
    with torch.no_grad():
        for module in transforms.transforms.values():
            if isinstance(module, MaskedMatrix):
                w = module.weight
                diag = w.diagonal(dim1=-2, dim2=-1).abs()
                noise = (torch.rand(w.shape, generator=g) * 2 - 1) * diag.unsqueeze(-1) / w.shape[-1]
                w.add_(noise - torch.diag_embed(noise.diagonal(dim1=-2, dim2=-1)))
            elif isinstance(module, RopePairMatrix):
                module.scale.uniform_(0.5, 2.0, generator=g)
                module.mix.copy_((torch.rand(module.mix.shape, generator=g) * 2 - 1) * module.scale)
    return transforms


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("ln_matrix", ["diagonal", "dense"])
@pytest.mark.parametrize("kv_heads", [2, 6])
def test_merged_matrices_leave_logits_unchanged(ln_matrix, kv_heads):
    model = tiny_llama(num_key_value_heads=kv_heads)
    adapter = adapter_for(model)
    tokens = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(1))
    cfg = AffineQuantConfig(epochs=4, stability_factor=1.0, ln_matrix=ln_matrix)
    with torch.no_grad():
        before = model(tokens).logits
        q_before = model.model.layers[0].self_attn.q_proj.weight.clone()
        for parts in adapter.all_layer_parts(model):
            merge_layer_transforms(parts, adapter, random_transforms(parts, adapter, cfg, seed=parts.index).final(cfg.epochs - 1))
        after = model(tokens).logits
    assert max_rel_diff(before, after) < 1e-4
    assert max_rel_diff(q_before, model.model.layers[0].self_attn.q_proj.weight) > 0.1  # not a no-op
    reasons = runtime_transform_reasons(model)
    if ln_matrix == "dense":  # the inverse after each norm stays a run-time matmul: flagged for export
        assert len(reasons) == 1 and "(4 modules)" in reasons[0]
    else:
        assert reasons == []


def test_training_forward_with_quantization_off_matches_the_layer():
    """The differentiable path trained on computes the same function as the original layer."""
    model = tiny_llama()
    adapter = adapter_for(model)
    inputs = capture_layer0_inputs(model, adapter, torch.randint(0, 256, (2, 24)))
    cfg = AffineQuantConfig(epochs=3, stability_factor=1.0, ln_matrix="dense")
    parts = adapter.layer_parts(model, 0)
    with torch.no_grad():
        reference = parts.layer(inputs.hidden, **inputs.kwargs)
        reference = reference[0] if isinstance(reference, tuple) else reference
        block = TransformedBlock(parts, adapter, random_transforms(parts, adapter, cfg, seed=3), clips=None)
        with block.norm_hooks():
            out = block.forward(inputs.hidden, inputs.kwargs, epoch=cfg.epochs - 1, quantize=False)
    assert max_rel_diff(reference, out) < 1e-4


def test_rope_pair_form_commutes_with_rope_and_a_generic_matrix_does_not():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    model = tiny_llama()
    d = adapter_for(model).head_dim
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 30, d, generator=g), torch.randn(1, 1, 30, d, generator=g)
    cos, sin = model.model.rotary_emb(q, torch.arange(30)[None])

    def scores(a: torch.Tensor) -> torch.Tensor:
        qr, kr = apply_rotary_pos_emb(q @ torch.linalg.inv(a), k @ a.T, cos, sin)
        return qr @ kr.transpose(-1, -2)

    reference = scores(torch.eye(d))
    pair = rope_pair_matrix(torch.rand(d // 2, generator=g) + 0.5, torch.randn(d // 2, generator=g))
    assert max_rel_diff(reference, scores(pair)) < 1e-5
    generic = torch.eye(d) + 0.3 * torch.randn(d, d, generator=g)
    assert max_rel_diff(reference, scores(generic)) > 1e-2


# --------------------------------------------------------------------------- mask and dominance


def test_gradual_mask_grows_from_diagonal_to_dense():
    epochs, size, sf = 5, 9, 0.1
    assert [band_count(e, epochs, size) for e in range(epochs)] == [1, 3, 5, 7, 9]  # ⌊8e/4⌋ + 1
    assert torch.equal(band_mask(size, 0, epochs, sf), torch.eye(size))
    last = band_mask(size, epochs - 1, epochs, sf)
    assert torch.equal(last, torch.full((size, size), sf).fill_diagonal_(1.0))
    middle = band_mask(size, 2, epochs, sf)  # |i − j| < 5 unlocked
    assert middle[0, 4] == sf and middle[0, 5] == 0 and middle[8, 4] == sf and middle[3, 3] == 1
    assert torch.equal(band_mask(size, epochs - 1, epochs, sf, gradual=False), torch.eye(size))


def test_matrix_pushed_out_of_dominance_is_detected_and_repaired():
    m = MaskedMatrix(torch.tensor([[1.0, 2.0, 0.5, 1.0]]), epochs=2, stability_factor=1.0, gradual=True)
    with torch.no_grad():
        m.weight[0, 1] += torch.tensor([3.0, 0.0, 1.0, 1.0])  # row 1: |2| < 3 + 1 + 1
        m.weight[0, 2, 0] = 0.5  # row 2: |0.5| = 0.5, dominant but not strictly
    check = m.check(epoch=1, min_margin=0.01)
    assert check.lost_dominance and check.min_margin == pytest.approx(-1.5) and check.rows_repaired == 2
    margins = dominance_margins(m.matrix(1))
    assert margins.min().item() == pytest.approx(0.01, abs=1e-6)
    assert torch.equal(m.weight.diagonal(dim1=-2, dim2=-1), torch.tensor([[1.0, 2.0, 0.5, 1.0]]))  # diagonal untouched
    assert torch.isfinite(torch.linalg.inv(m.matrix(1).double())).all()

    pair = RopePairMatrix(1, 4, epochs=2, stability_factor=1.0, gradual=True)
    with torch.no_grad():
        pair.mix.fill_(1.0)  # |b| = |a|: [[1, 1], [−1, 1]] is invertible but not strictly dominant
    check = pair.check(epoch=1, min_margin=0.05)
    assert check.lost_dominance and check.rows_repaired == 4
    assert dominance_margins(pair.matrix(1)).min().item() == pytest.approx(0.05, abs=1e-6)


def test_training_pushed_out_of_dominance_is_repaired_and_stays_finite():
    """A learning rate of 1 with undamped off-diagonals breaks dominance within steps; the guard repairs it."""
    model = tiny_llama()
    adapter = adapter_for(model)
    tokens = torch.randint(0, 256, (4, 24), generator=torch.Generator().manual_seed(2))
    cfg = AffineQuantConfig(epochs=3, stability_factor=1.0, transform_lr=1.0, ln_matrix="dense", activations={"bits": 4})
    log = affinequant_quantize(model, adapter, tokens, cfg)
    assert log["rows_repaired"] > 0 and sum(r["epochs_lost_dominance"] for r in log["layers"]) > 0
    assert log["min_dominance_margin"] < 0  # what the check saw before repairing
    assert log["skipped_steps"] == 0
    assert all(math.isfinite(x) for r in log["layers"] for x in r["epoch_loss"])
    with torch.no_grad():
        assert torch.isfinite(model(tokens).logits).all()


# --------------------------------------------------------------------------- parts


def test_smoothquant_initial_diagonal():
    model = tiny_llama()
    adapter = adapter_for(model)
    parts = adapter.layer_parts(model, 0)
    x = torch.randn(2, 10, adapter.hidden_size)
    maxima = ActivationMaxima()
    with maxima.recording(parts), torch.no_grad():
        parts.input_norm(x)
    maxima.maxima["ln_mlp"] = maxima.maxima["ln_attn"]
    maxima.maxima["vo"] = torch.ones(adapter.num_heads * adapter.head_dim)
    cfg = AffineQuantConfig(alpha=0.75)
    transforms = initial_transforms(parts, adapter, maxima, cfg)
    with torch.no_grad():
        act = parts.input_norm(x).abs().amax(dim=(0, 1))
    w = torch.cat([parts.q_proj.weight, parts.k_proj.weight, parts.v_proj.weight]).abs().amax(dim=0)
    torch.testing.assert_close(transforms.transforms["ln_attn"].scale, act**0.75 / w**0.25)


@pytest.mark.parametrize("weights", [
    WeightQuantConfig(bits=4), WeightQuantConfig(bits=4, symmetric=False),
    WeightQuantConfig(bits=3, strategy="group", group_size=16), WeightQuantConfig(bits=4, symmetric=False, strategy="group", group_size=20),
])
def test_clipping_at_full_range_is_rtn_and_fake_quant_matches_the_codes(weights):
    w = torch.randn(12, 48, generator=torch.Generator().manual_seed(0))
    full = LearnableClipping(w.shape, weights, learnable=False).quantize(w)
    rtn = quantize_weight_rtn(w, weights)
    assert torch.equal(full.codes, rtn.codes) and torch.equal(full.scale, rtn.scale) and torch.equal(full.zero, rtn.zero)
    clip = LearnableClipping(w.shape, weights)
    torch.testing.assert_close(clip.fake_quantize(w), clip.quantize(w).dequantize(), rtol=0, atol=1e-6)
    assert (clip.quantize(w).scale < rtn.scale).all()  # σ(4) ≈ 0.98 of the range
    clip.fake_quantize(w).sum().backward()
    assert clip.upper.grad is not None and clip.upper.grad.abs().sum() > 0


def test_kl_top_matches_the_direct_formula():
    g = torch.Generator().manual_seed(0)
    teacher, student = torch.randn(2, 3, 50, generator=g) * 3, torch.randn(2, 3, 50, generator=g) * 3
    k = 7
    for renormalize in (False, True):
        total = 0.0
        for t, s in zip(teacher.reshape(-1, 50).tolist(), student.reshape(-1, 50).tolist()):
            top = sorted(range(50), key=lambda i: -t[i])[:k]
            pool = top if renormalize else range(50)
            zt, zs = sum(math.exp(t[i]) for i in pool), sum(math.exp(s[i]) for i in pool)
            total += sum(math.exp(t[i]) / zt * ((t[i] - math.log(zt)) - (s[i] - math.log(zs))) for i in top)
        assert kl_top_loss(teacher, student, k, renormalize).item() == pytest.approx(total / 6, rel=1e-5)
    full = F.kl_div(F.log_softmax(student, -1).reshape(-1, 50), F.log_softmax(teacher, -1).reshape(-1, 50), log_target=True, reduction="batchmean")
    assert kl_top_loss(teacher, student, k=50).item() == pytest.approx(full.item(), rel=1e-5)


# --------------------------------------------------------------------------- the stage


@pytest.mark.parametrize(("loss", "aug_loss"), [("mse", True), ("kl_top", False)])
def test_block_loop_leaves_the_quantized_state_export_expects(loss, aug_loss):
    model = tiny_llama()
    adapter = adapter_for(model)
    tokens = torch.randint(0, 256, (4, 24), generator=torch.Generator().manual_seed(5))
    cfg = AffineQuantConfig(epochs=4, stability_factor=0.1, transform_lr=1e-2, activations={"bits": 4}, loss=loss, kl_top_k=20,
                            kl_top_positions=8, aug_loss=aug_loss, weights={"bits": 4, "symmetric": False})
    log = affinequant_quantize(model, adapter, tokens, cfg)
    for parts in adapter.all_layer_parts(model):
        for name, module in parts.linears().items():
            assert isinstance(module, FakeQuantLinear), name
            assert module.input_quant is not None and module.input_quant.bits == 4
            q = module.quantized_weight
            assert q is not None and q.bits == 4 and not q.symmetric
            assert torch.equal(module.linear.weight.data, q.dequantize())
    assert len(log["layers"]) == 2 and len(log["weight_errors"]) == 14
    assert all(len(r["epoch_min_margin"]) == cfg.epochs and math.isfinite(r["epoch_loss"][-1]) for r in log["layers"])
    first = log["layers"][0]["epoch_loss"]  # layer 0 sees exact inputs: training must lower its loss
    assert first[-1] < first[0]
    assert not any(p.requires_grad is False for p in model.parameters())  # flags restored


def test_affinequant_recipes_and_config_validation():
    for name in ("w4a16-affinequant", "w4a4-affinequant"):
        recipe = load_recipe(name)
        (cfg,) = recipe.stage_configs()
        assert isinstance(cfg, AffineQuantConfig) and cfg.weights.strategy == "channel"
    assert load_recipe("w4a4-affinequant").stage_configs()[0].activations.bits == 4
    import compressor.stages  # noqa: F401
    from compressor.registry import stage_handler

    assert stage_handler(AffineQuantConfig())[0] == "affinequant"
    with pytest.raises(ValidationError, match="epochs >= 2"):
        AffineQuantConfig(epochs=1)
    AffineQuantConfig(epochs=1, mask="diagonal")
    with pytest.raises(ValidationError, match="later quantize stage"):
        AffineQuantConfig(weights={"method": "gptq"})
    with pytest.raises(ValidationError, match="affinequant"):
        load_recipe.__globals__["Recipe"].model_validate({"stages": [{"affinequnt": {}}]})
    json.dumps(AffineQuantConfig().model_dump(mode="json"))


# --------------------------------------------------------------------------- the real model


@pytest.mark.model
def test_affinequant_job_on_smollm_exports_a_checkpoint(model_store, tmp_path):
    from compressor.pipeline import run
    from compressor.spec import JobSpec

    recipe = {
        "stages": [{"affinequant": {"epochs": 2, "batch_size": 2, "weights": {"bits": 4}}}],
        "calibration": {"dataset": "wiki", "samples": 2, "seqlen": 32},
        "eval": {"datasets": ["wiki"], "max_tokens": 128, "window": 64, "kl": False, "original": False},
    }
    result = run(JobSpec.model_validate({"model": "smollm2-135m", "recipe": recipe}), tmp_path)
    stage = result.report["stages"][1]
    assert stage["name"].endswith("affinequant") and len(stage["details"]["layers"]) == 30
    assert math.isfinite(result.report["perplexity"]["compressed"]["wiki"])
    manifest = json.loads((tmp_path / "checkpoint" / "manifest.json").read_text())
    assert manifest["format"] == "compressed-tensors/pack-quantized" and manifest["engines"]["vllm"] is True
    assert result.report["size"]["bits_per_weight"] < 4.1
