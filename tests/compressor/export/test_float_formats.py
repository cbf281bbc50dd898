"""Each serving format: export → compressed-tensors' own reload → the in-memory model's logits.

Tiny random Llamas (widths 64/128, so every format's block fits). The in-memory model's dense
tensors are rounded to bf16 (what the checkpoint stores, as the pipeline does) before comparing, so what is left is
the format itself: weight-only formats must match to float rounding; formats that quantize
activations may flip a code where a float rounding difference lands on a boundary, so they are
held to a small mean difference instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compressor.context import CompressionContext
from compressor.eval.resources import CostMeter
from compressor.execution.residency import ResidentLayers
from compressor.export.compressed_tensors_format import export_compressed_tensors
from compressor.export.stored_precision import round_to_stored_precision
from compressor.inference.compressed_tensors_reload import load_with_compressed_tensors
from compressor.inference.loader import load
from compressor.models.adapter import adapter_for
from compressor.pipeline import run_stages
from compressor.progress import Progress
from compressor.spec import Recipe
from tests.random_models import tiny_llama

FP8 = {"format": "fp8", "bits": 8, "symmetric": True}
NVFP4 = {"format": "nvfp4", "bits": 4, "symmetric": True, "strategy": "group", "group_size": 16}
MXFP4 = {"format": "mxfp4", "bits": 4, "symmetric": True, "strategy": "group", "group_size": 32}
INT4_G16 = {"bits": 4, "symmetric": True, "strategy": "group", "group_size": 16}
HAD = {"hadamard": {"seed": 0, "online_qk": "off"}}

# name: (stages, config.json format, activations quantized)
CASES = {
    "fp8-dynamic": ([{"quantize": {"weights": {**FP8, "strategy": "channel"}, "activations": {**FP8, "strategy": "token"}}}], "float-quantized", True),
    "fp8-static-kv": ([{"quantize": {"weights": {**FP8, "strategy": "tensor"}, "activations": {**FP8, "strategy": "tensor"},
                                     "kv_cache": FP8}}], "float-quantized", True),
    "w4a8-fp8": ([{"quantize": {"weights": {**INT4_G16, "method": "gptq"}, "activations": {**FP8, "strategy": "token"}}}], "pack-quantized", True),
    "nvfp4-a16": ([{"quantize": {"weights": NVFP4}}], "nvfp4-pack-quantized", False),
    "nvfp4-w4a4": ([{"quantize": {"weights": NVFP4, "activations": NVFP4}}], "nvfp4-pack-quantized", True),
    "mxfp4-a16": ([{"quantize": {"weights": MXFP4}}], "mxfp4-pack-quantized", False),
    "mxfp4-w4a4": ([{"quantize": {"weights": MXFP4, "activations": MXFP4}}], "mxfp4-pack-quantized", True),
    "hadamard-nvfp4-a16": ([HAD, {"quantize": {"weights": NVFP4}}], "nvfp4-pack-quantized", False),
    "hadamard-nvfp4-w4a4": ([HAD, {"quantize": {"weights": NVFP4, "activations": NVFP4}}], "nvfp4-pack-quantized", True),
    "hadamard-w4a8-fp8": ([HAD, {"quantize": {"weights": INT4_G16, "activations": {**FP8, "strategy": "token"}}}], "pack-quantized", True),
    "fused-only-int4": ([{"hadamard": {"seed": 0, "online_down_proj": False, "online_qk": "off"}}, {"quantize": {"weights": INT4_G16}}],
                        "pack-quantized", False),
}


class NoTokenizer:
    def save_pretrained(self, _folder: Path) -> None:
        pass


def compress_and_export(stages: list, folder: Path) -> torch.nn.Module:
    model = tiny_llama(hidden_size=64, intermediate_size=128, num_attention_heads=8, num_key_value_heads=2, head_dim=8)
    ctx = CompressionContext(model, None, adapter_for(model), Recipe.model_validate({"stages": stages}), Progress(), data_dir=folder)
    ctx._calibration = torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(1))
    run_stages(ctx, CostMeter())
    round_to_stored_precision(model, ResidentLayers(model, ctx.adapter))  # as the pipeline does before it exports
    export_compressed_tensors(model, NoTokenizer(), folder, {"model": "tiny"})
    return model


def tokens() -> torch.Tensor:
    return torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(2))


def assert_close_for_format(out: torch.Tensor, ref: torch.Tensor, activations_quantized: bool) -> None:
    diff = (out - ref).abs()
    if activations_quantized:
        assert diff.mean().item() < 2e-3 * ref.abs().mean().item() + 1e-4, diff.mean().item()
        assert diff.max().item() < 0.1 * ref.abs().max().item(), diff.max().item()
    else:
        assert diff.max().item() < 1e-4, diff.max().item()


@pytest.mark.parametrize("case", sorted(CASES))
def test_export_reloads_with_compressed_tensors_to_equal_logits(case, tmp_path):
    stages, fmt, activations_quantized = CASES[case]
    model = compress_and_export(stages, tmp_path)
    qcfg = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert qcfg["format"] == fmt
    assert all(g["format"] == fmt for g in qcfg["config_groups"].values())
    x = tokens()
    with torch.no_grad():
        ref = model(x, use_cache=False).logits.float()
        out = load_with_compressed_tensors(tmp_path)(x, use_cache=False).logits.float()
    assert_close_for_format(out, ref, activations_quantized)


@pytest.mark.parametrize("case", ["nvfp4-w4a4", "mxfp4-w4a4", "hadamard-nvfp4-w4a4"])
def test_fp4_activation_reload_is_the_same_computation(case, tmp_path):
    """FP4 activations flip codes on a last-bit difference, so the reload must compute exactly what the pipeline scored.

    With a rotation this holds only because the online Hadamard runs in compressed-tensors' float order.
    """
    model = compress_and_export(CASES[case][0], tmp_path)
    x = tokens()
    with torch.no_grad():
        ref = model(x, use_cache=False).logits
        reference_reload = load_with_compressed_tensors(tmp_path)(x, use_cache=False).logits
        ours = load(tmp_path, dtype=torch.float32)(x, use_cache=False).logits
    assert torch.equal(reference_reload, ref)
    assert torch.equal(ours, ref)


def test_rotated_fp4_down_proj_reads_its_input_as_the_reload_does(tmp_path):
    """On 2M activations a last-bit difference in the online Hadamard flips FP4 codes; here none may differ."""
    model = compress_and_export(CASES["hadamard-nvfp4-w4a4"][0], tmp_path)
    reloaded = load_with_compressed_tensors(tmp_path)
    x = torch.randn(1, 16384, 128, generator=torch.Generator().manual_seed(3)) * torch.logspace(-1, 1, 128)
    with torch.no_grad():
        for ours, theirs in ((model.model.layers[i].mlp.down_proj, reloaded.model.layers[i].mlp.down_proj) for i in range(2)):
            assert torch.equal(theirs(x), ours(x))


@pytest.mark.parametrize("case", ["fp8-dynamic", "fp8-static-kv", "w4a8-fp8", "nvfp4-w4a4", "mxfp4-a16", "hadamard-w4a8-fp8", "fused-only-int4"])
def test_compressor_load_runs_the_float_formats_and_rotations(case, tmp_path):
    stages, _, activations_quantized = CASES[case]
    model = compress_and_export(stages, tmp_path)
    x = tokens()
    with torch.no_grad():
        ref = model(x, use_cache=False).logits.float()
        out = load(tmp_path, dtype=torch.float32)(x, use_cache=False).logits.float()
    assert_close_for_format(out, ref, activations_quantized)


def test_online_rotation_is_a_transform_config_input_transform(tmp_path):
    compress_and_export(CASES["hadamard-nvfp4-a16"][0], tmp_path)
    qcfg = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    (scheme,) = qcfg["transform_config"]["config_groups"].values()
    assert scheme["type"] == "random-hadamard"
    (apply,) = scheme["apply"]
    assert apply["location"] == "input" and apply["targets"] == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        stored = [k for k in f.keys() if k.endswith("_input.weight")]
        assert stored == ["model.layers.0.mlp.down_proj.online_input_0_input.weight"]  # shared: stored once
        assert set(f.get_tensor(stored[0]).float().abs().unique().tolist()) == {1.0}
    assert not (tmp_path / "online_rotations.safetensors").exists()


def test_fused_only_rotation_has_no_transform_config(tmp_path):
    compress_and_export(CASES["fused-only-int4"][0], tmp_path)
    qcfg = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert "transform_config" not in qcfg
    assert all(row["serves"] for row in manifest["engine_support"].values())


def test_reloaded_fp8_kv_cache_is_quantized_with_the_stored_scales(tmp_path):
    model = compress_and_export(CASES["fp8-static-kv"][0], tmp_path)
    reloaded = load_with_compressed_tensors(tmp_path)
    attn = reloaded.model.layers[0].self_attn
    assert torch.equal(attn.k_scale.float().reshape(1), model.model.layers[0].self_attn.kv_scales["k"].reshape(1))
    calls = []
    attn.kv_cache.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        reloaded(tokens(), use_cache=False)
    assert calls  # compressed-tensors' QuantizedKVCache ran in the forward


@pytest.mark.model
@pytest.mark.heavy
@pytest.mark.parametrize("recipe_name", ["w8a8-fp8-dynamic", "w4a16-nvfp4"])
def test_bundled_model_reload_reproduces_in_memory_perplexity(recipe_name, model_store, tmp_path):
    """On SmolLM2-135M: compressed-tensors' reload within 0.5% of the job's own wiki perplexity (4,096 tokens)."""
    from compressor.data.corpus import load_text
    from compressor.data.tokens import eval_windows
    from compressor.eval.perplexity import score_windows
    from compressor.inference.loader import load_tokenizer
    from compressor.pipeline import run
    from compressor.spec import JobSpec, load_recipe

    recipe = load_recipe(recipe_name).model_dump(mode="json")
    recipe["eval"] = {"datasets": ["wiki"], "max_tokens": 4096, "window": 512, "kl": False, "original": False}
    result = run(JobSpec.model_validate({"model": "smollm2-135m", "recipe": recipe}), tmp_path)
    checkpoint = result.artifacts[0].parent
    windows = eval_windows(load_tokenizer(checkpoint), load_text("wiki", "eval"), 4096, 512)
    reloaded = score_windows(load_with_compressed_tensors(checkpoint), windows).perplexity
    assert abs(reloaded / result.report["perplexity"]["compressed"]["wiki"] - 1) < 0.005
