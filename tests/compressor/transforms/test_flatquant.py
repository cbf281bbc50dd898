"""FlatQuant-style layer-wise transforms: exact fusion, the condition guard, clipping ranges, training, resume, the online path."""

from __future__ import annotations

import json
import math

import pytest
import torch
from pydantic import ValidationError

from compressor.checkpoints import CheckpointStore
from compressor.models.adapter import adapter_for
from compressor.progress import JobCancelled, Progress
from compressor.quant.compressed_linear import FakeQuantLinear
from compressor.spec import FlatQuantConfig, QuantizeConfig, Recipe
from compressor.transforms.flatquant.block import FlatQuantBlock
from compressor.transforms.flatquant.reconstruction import flatquant_calibrate
from compressor.transforms.flatquant.transforms import ActivationClip, InputTransform, clamp_condition
from tests.random_models import tiny_llama


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def perturbed(t: InputTransform, seed: int) -> InputTransform:
    """Move a transform far from its orthogonal start: non-orthogonal factors, scales over two decades."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        t.left.add_(0.3 * torch.randn(t.left.shape, generator=g))
        t.right.add_(0.3 * torch.randn(t.right.shape, generator=g))
        t.log_scale.copy_(torch.empty(t.n).uniform_(-2.3, 2.3, generator=g))
    return t


TARGET_W4A4KV4 = QuantizeConfig(weights={"bits": 4, "method": "gptq"}, activations={"bits": 4}, kv_cache={"bits": 4})


def test_online_side_times_weight_side_is_the_identity_in_float64():
    t = perturbed(InputTransform(48, torch.rand(48) + 0.5, kronecker=True, seed=0), 1).double()
    x, w = torch.randn(5, 48, dtype=torch.float64), torch.randn(7, 48, dtype=torch.float64)
    online = x @ t.dense()
    torch.testing.assert_close(online @ t.fused_weight(w).T, x @ w.T, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(online @ t.weight_side(w).T, x @ w.T, rtol=1e-10, atol=1e-10)


def test_fused_layers_reproduce_the_unquantized_logits():
    model = tiny_llama(seed=3, num_hidden_layers=2)
    adapter = adapter_for(model)
    tokens = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(tokens).logits
    for parts in adapter.all_layer_parts(model):
        transforms = {key: perturbed(InputTransform(n, torch.rand(n) + 0.5, True, seed=parts.index), 7 + parts.index)
                      for key, n in (("attn_in", 48), ("o_in", 48), ("mlp_in", 48), ("down_in", 96))}
        FlatQuantBlock(parts, transforms, None, None).fuse()
        down = parts.layer.mlp.down_proj
        assert isinstance(down, FakeQuantLinear) and down.input_kron_left is not None
    with torch.no_grad():
        fused = model(tokens).logits
    assert rel(fused, reference) < 1e-4


def test_condition_guard_clamps_to_the_limit_and_leaves_good_factors_alone():
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    bad = torch.nn.Parameter(u @ torch.diag(torch.logspace(0, -6, 8)) @ u.T)
    assert clamp_condition(bad, 100.0)
    assert torch.linalg.cond(bad.double()).item() == pytest.approx(100.0, rel=1e-3)
    assert not clamp_condition(bad, 200.0)
    t = InputTransform(64, None, kronecker=True, seed=0)
    with torch.no_grad():
        t.left.mul_(torch.linspace(1e-5, 1, 8).unsqueeze(1))
    assert t.condition() > 1e4
    assert t.guard(1e4) == 1  # the left factor only
    assert t.condition() <= 1e4 * 1.001
    assert math.isfinite(torch.linalg.inv(t.left.double()).abs().max().item())


def test_activation_clip_starts_at_the_configured_ratio_and_stays_in_zero_one():
    clip = ActivationClip(0.9, True)
    assert clip.factor().item() == pytest.approx(0.9, rel=1e-6)
    with torch.no_grad():
        clip.theta.fill_(50.0)
    assert 0.0 < clip.factor().item() <= 1.0
    assert ActivationClip(1.0, True).factor().item() == pytest.approx(0.995, rel=1e-6)


def _calibrate(model, cfg, target, checkpoints=None, progress=None):
    adapter = adapter_for(model)
    tokens = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(5))
    return flatquant_calibrate(model, adapter, tokens, cfg, target, qk=target.kv_cache is not None, progress=progress,
                               checkpoints=checkpoints)


def test_training_lowers_the_first_layers_loss_and_leaves_what_the_quantize_stage_expects():
    model = tiny_llama(seed=0)
    cfg = FlatQuantConfig(epochs=4, batch_size=2, qsur_samples=2)
    log = _calibrate(model, cfg, TARGET_W4A4KV4)
    first = log["layers"][0]["epoch_loss"]
    assert first[-1] < first[0]
    assert len(log["layers"]) == 2 and all(r["condition"]["down_in"] < cfg.max_condition for r in log["layers"])
    for r in log["layers"]:
        assert all(0.0 < v < 1.0 for v in r["activation_clip"].values())
    assert {row["kind"] for row in log["qsur"]} == {"attn_in", "o_in", "mlp_in", "down_in"}
    for parts in adapter_for(model).all_layer_parts(model):
        for name, module in parts.linears().items():
            assert isinstance(module, FakeQuantLinear) and module.input_kron_left is not None, name
            assert not module.input_kron_left.requires_grad and isinstance(module.input_clip, float)
            assert module.quantized_weight is None  # the next quantize stage quantizes the fused weights
    assert all(p.requires_grad for p in model.parameters())


def test_a_resumed_calibration_gives_the_same_weights_and_transforms(tmp_path):
    cfg = FlatQuantConfig(epochs=2, batch_size=2, qsur_samples=0)
    fresh = tiny_llama(seed=1)
    _calibrate(fresh, cfg, TARGET_W4A4KV4, CheckpointStore(tmp_path / "a"))
    store = CheckpointStore(tmp_path / "b")
    done: list[int] = []
    stop_after_layer0 = Progress(lambda e: done.append(e.layer) if e.kind == "layer" else None, lambda: bool(done))
    with pytest.raises(JobCancelled):  # stopped right after layer 0's unit is saved
        _calibrate(tiny_llama(seed=1), cfg, TARGET_W4A4KV4, store, stop_after_layer0)
    assert store.has("flatquant:layer:00000") and not store.has("flatquant:layer:00001")
    resumed = tiny_llama(seed=1)  # a fresh process loads the stored model again
    log = _calibrate(resumed, cfg, TARGET_W4A4KV4, store)
    assert len(log["layers"]) == 2 and store.info.units_reused == 1
    for (name, a), (_, b) in zip(fresh.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    for a, b in zip(fresh.modules(), resumed.modules()):
        if isinstance(a, FakeQuantLinear):
            assert torch.equal(a.input_kron_right, b.input_kron_right) and a.input_clip == b.input_clip


def test_recipe_rules():
    with pytest.raises(ValidationError, match="later quantize stage"):
        Recipe.model_validate({"stages": [{"flatquant": {}}]})
    with pytest.raises(ValidationError, match="int quantizers"):
        Recipe.model_validate({"stages": [{"flatquant": {}}, {"quantize": {"weights": {"format": "nvfp4", "bits": 4, "strategy": "group", "group_size": 16}}}]})
    with pytest.raises(ValidationError, match="at most one rotation stage"):
        Recipe.model_validate({"stages": [{"hadamard": {}}, {"flatquant": {}}, {"quantize": {}}]})
    with pytest.raises(ValidationError, match="transforms"):
        FlatQuantConfig(transforms=["qkv"])
    Recipe.model_validate({"stages": [{"flatquant": {}}, {"quantize": {"weights": {"method": "gptq"}}}], "execution": {"layers": "sequential"}})


def test_stage_then_gptq_exports_a_checkpoint_whose_online_transforms_compressor_load_runs(tmp_path):
    """The recipe path: flatquant, then GPTQ on the fused weights; export writes the online side, `load` runs it."""
    from compressor.context import CompressionContext
    from compressor.export.compressed_tensors_format import export_compressed_tensors
    from compressor.inference import load
    from compressor.inference.modules import InputKronecker
    from compressor.inference.compressed_tensors_reload import load_with_compressed_tensors
    from compressor.export.format import UnsupportedArtifactError
    from compressor.quant.stage import run_quantize
    from compressor.transforms.flatquant.stage import run_flatquant
    from tests.compressor.inference.test_loader import TINY, NoTokenizer, logits, rel_err

    model = tiny_llama(**TINY)  # hidden 64 = 8 × 8, intermediate 128 = 8 × 16
    recipe = Recipe.model_validate({"stages": [{"flatquant": {"epochs": 2, "batch_size": 2, "qsur_samples": 2}},
                                               {"quantize": {"weights": {"bits": 4, "method": "gptq"}}}]})
    ctx = CompressionContext(model, None, adapter_for(model), recipe, Progress(), data_dir=tmp_path)
    ctx._calibration = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(2))
    flat, quantize = recipe.stage_configs()
    log = run_flatquant(ctx, flat)
    assert len(log["layers"]) == 2 and ctx.report_sections["qsur"]
    ctx.stage_index = 1
    run_quantize(ctx, quantize)
    q = model.model.layers[0].mlp.down_proj
    assert q.quantized_weight is not None and q.input_kron_left is not None
    folder = tmp_path / "checkpoint"
    export_compressed_tensors(model, NoTokenizer(), folder, {"model": "tiny"})
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "online_input_kronecker" in manifest["runtime_requirements"]
    assert manifest["engines"] == {"transformers": False, "vllm": False}
    entries = manifest["online_transforms"]
    assert len(entries) == 8  # 4 inputs per layer, q/k/v and gate/up each sharing theirs
    assert sorted(len(e["targets"]) for e in entries) == [1, 1, 1, 1, 2, 2, 3, 3]
    config = json.loads((folder / "config.json").read_text())
    assert "transform_config" not in config["quantization_config"]  # the factors, not n x n matrices
    assert (folder / "online_rotations.safetensors").stat().st_size < 2 * 8 * (64 + 2 * 8 * 8 + 2 * 16 * 16) * 4
    loaded = load(folder, dtype=torch.float32)
    assert isinstance(loaded.model.layers[0].mlp.down_proj, InputKronecker)
    assert len(loaded.artifact.online_rotations) == 14  # every linear reads its input through its layer's transform
    tokens = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))
    assert rel_err(logits(loaded, tokens), logits(model, tokens)) < 1e-2
    with pytest.raises(UnsupportedArtifactError, match="compressed-tensors cannot run this artifact: it needs online_input_kronecker"):
        load_with_compressed_tensors(folder)
