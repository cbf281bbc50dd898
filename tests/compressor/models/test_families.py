"""Every family the adapters cover, on a tiny random model, through every method.

Each test records `family` and `method` (pytest properties), so `bench/family_table.py` can build
the README's family × method table from a run of this file; a method a family's layer blocks is
tested as a refusal that names the reason, the same reason `compatibility.model_support` gives.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from compressor.context import CompressionContext
from compressor.eval.resources import CostMeter
from compressor.export.compressed_tensors_format import export_compressed_tensors
from compressor.models.adapter import UnsupportedTransformError, adapter_for
from compressor.models.adapters.fused import ConcatProjections
from compressor.models.compatibility import check_recipe_against_model, model_support
from compressor.pipeline import run_stages
from compressor.progress import Progress
from compressor.quant.compressed_linear import FakeQuantLinear
from compressor.spec import AffineQuantConfig, HadamardConfig, OSTQuantConfig, ProSparseConfig, Recipe
from compressor.transforms.affinequant.merge import merge_layer_transforms
from compressor.transforms.affinequant.reconstruction import affinequant_quantize
from compressor.transforms.fusion import fold_norms_into_linears, fuse_query_key_transforms, rotate_residual_stream
from compressor.transforms.hadamard import random_hadamard_matrix
from compressor.transforms.ostquant.effective import fuse_ost_transforms
from compressor.transforms.ostquant.parameters import OSTParameters
from compressor.transforms.quarot import apply_hadamard_rotations
from tests.random_models import FAMILY_BUILDERS

FAMILIES = list(FAMILY_BUILDERS)
QK_NORM = {"qwen3", "gemma3"}
POST_NORMS = {"gemma2", "gemma3"}
SOFTCAPPED = {"gemma2"}
W4G16 = {"bits": 4, "strategy": "group", "group_size": 16}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class NoTokenizer:
    def save_pretrained(self, _folder: Path) -> None:
        pass


def tag(record_property, family: str, method: str) -> None:
    record_property("family", family)
    record_property("method", method)


def build(family: str, **overrides):
    model = FAMILY_BUILDERS[family](**overrides)
    adapter = adapter_for(model)
    adapter.untie_embeddings(model)  # as the store loads every model
    return model, adapter


def config_json(model) -> dict:
    return {**model.config.to_dict(), "architectures": [type(model).__name__]}


def tokens(n: int = 2, seq: int = 40, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, 256, (n, seq), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def logits(model, toks: torch.Tensor) -> torch.Tensor:
    return model(toks).logits.float()


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max()).item()


def context(model, adapter, stages: list, calibration: torch.Tensor | None = None) -> CompressionContext:
    ctx = CompressionContext(model, None, adapter, Recipe.model_validate({"stages": stages}), Progress(), data_dir=Path("."))
    ctx._calibration = calibration
    return ctx


# --------------------------------------------------------------------------- the adapter


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_finds_every_part(family, record_property):
    tag(record_property, family, "adapter")
    model, adapter = build(family)
    toks = tokens()
    before = logits(model, toks)
    parts = adapter.layer_parts(model, 0)
    heads, kv, d = adapter.num_heads, adapter.num_kv_heads, adapter.head_dim
    assert (parts.q_proj.out_features, parts.k_proj.out_features, parts.v_proj.out_features) == (heads * d, kv * d, kv * d)
    assert parts.o_proj.in_features == heads * d and parts.down_proj.in_features == adapter.intermediate_size
    assert parts.gate_proj.out_features == parts.up_proj.out_features == adapter.intermediate_size
    assert (parts.q_norm is not None) == (family in QK_NORM)
    assert (parts.attn_output_norm is not None) == (parts.mlp_output_norm is not None) == (family in POST_NORMS)
    if family in POST_NORMS:
        assert parts.post_attention_norm is parts.layer.pre_feedforward_layernorm
    assert torch.equal(logits(model, toks), before)  # walking the layer (Phi-3: splitting it) changes nothing
    if family == "phi3":
        assert isinstance(parts.layer.self_attn.qkv_proj, ConcatProjections)
        adapter.restore_checkpoint_layout(model)
        keys = set(model.state_dict())
        assert "model.layers.0.self_attn.qkv_proj.weight" in keys and "model.layers.0.mlp.gate_up_proj.weight" in keys
        assert not any(".q_proj." in k or ".gate_proj." in k for k in keys)
    support = model_support(config_json(model))
    assert support.supported and support.family == family and support.head_dim == d


@pytest.mark.parametrize("family", FAMILIES)
def test_layer_by_layer_walk_reproduces_the_model(family, record_property):
    """GPTQ and AffineQuant walk one layer at a time with captured kwargs: each layer must get its own
    (sliding-window vs full-attention masks, Gemma 3's local vs global RoPE), at a length past the window."""
    from compressor.execution.layer_inputs import capture_layer0_inputs, layer_outputs

    tag(record_property, family, "calibration")
    model, adapter = build(family)
    toks = tokens(4, 40, seed=3)
    with torch.no_grad():
        expected = model.model(toks).last_hidden_state  # after the final norm
        inputs = capture_layer0_inputs(model, adapter, toks, batch_size=2)
        for layer in adapter.decoder_layers(model):
            inputs.hidden = layer_outputs(layer, inputs)
        walked = adapter.final_norm(model)(inputs.hidden)
    assert max_rel_diff(expected, walked) < 1e-5


def test_mixture_of_experts_is_refused_with_the_reason():
    from transformers import MixtralConfig, MixtralForCausalLM

    from compressor.models.adapter import UnsupportedArchitectureError

    model = MixtralForCausalLM(MixtralConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                             num_attention_heads=4, num_key_value_heads=2, num_local_experts=4))
    with pytest.raises(UnsupportedArchitectureError, match="mixture-of-experts"):
        adapter_for(model)
    support = model_support(config_json(model))
    assert not support.supported and "mixture-of-experts" in support.reason
    assert all(not s.ok and "mixture-of-experts" in s.reason for s in support.methods.values())


# --------------------------------------------------------------------------- RTN and GPTQ, exported and reloaded


def _round_to_export_precision(model) -> None:
    """Round what export stores in bf16 (scales, unquantized tensors), so reloaded logits can be compared exactly."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, FakeQuantLinear) and module.quantized_weight is not None:
                q = module.quantized_weight
                q.scale = q.scale.to(torch.bfloat16).float()
                module.linear.weight.data.copy_(q.dequantize())
        quantized = {id(m.linear.weight) for m in model.modules() if isinstance(m, FakeQuantLinear) and m.quantized_weight is not None}
        for p in model.parameters():
            if id(p) not in quantized:
                p.data.copy_(p.data.to(torch.bfloat16).float())


@pytest.mark.parametrize("method", ["rtn", "gptq"])
@pytest.mark.parametrize("family", FAMILIES)
def test_quantized_export_reloads_in_plain_transformers(family, method, tmp_path, record_property):
    from transformers import AutoModelForCausalLM

    tag(record_property, family, method)
    model, adapter = build(family)
    ctx = context(model, adapter, [{"quantize": {"weights": {**W4G16, "method": method}}}], calibration=tokens(4, 32, seed=2))
    run_stages(ctx, CostMeter())
    assert len(ctx.layer_errors) == 7 * adapter.num_layers and all(e["rel_error"] > 0 for e in ctx.layer_errors)
    adapter.restore_checkpoint_layout(model)
    _round_to_export_precision(model)
    toks = tokens()
    compressed = logits(model, toks)
    export_compressed_tensors(model, NoTokenizer(), tmp_path, {"model": family})
    qcfg = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    targets = {t.rsplit(".", 1)[1] for g in qcfg["config_groups"].values() for t in g["targets"]}
    expected = {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"} if family == "phi3" else \
        {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert targets == expected  # Phi-3's fused linears are stored fused, as its checkpoints are
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert type(reloaded).__name__ == type(model).__name__
    assert max_rel_diff(compressed, logits(reloaded, toks)) < 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_gptq_beats_rtn_on_its_calibration_data(family, record_property):
    tag(record_property, family, "gptq")
    reference, adapter = build(family)
    cal = tokens(8, 32, seed=4)
    errors = {}
    for method in ("rtn", "gptq"):
        model = copy.deepcopy(reference)
        ctx = context(model, adapter_for(model), [{"quantize": {"weights": {"bits": 3, "strategy": "channel", "method": method}}}], cal)
        run_stages(ctx, CostMeter())
        errors[method] = (logits(model, cal) - logits(reference, cal)).pow(2).mean().item()
    assert errors["gptq"] < errors["rtn"]


# --------------------------------------------------------------------------- Hadamard (QuaRot-style) rotations


def hadamard_config(family: str) -> tuple[HadamardConfig, bool]:
    """The rotations the family's layer lets through, and whether R3 (Q/K after RoPE) is on."""
    return HadamardConfig(seed=3, r1=family not in POST_NORMS), family not in SOFTCAPPED


@pytest.mark.parametrize("family", FAMILIES)
def test_fused_hadamard_rotations_are_equivalent(family, record_property):
    tag(record_property, family, "hadamard")
    model, adapter = build(family)
    toks = tokens()
    before = logits(model, toks)
    v_before = adapter.layer_parts(model, 0).v_proj.weight.detach().clone()
    cfg, qk = hadamard_config(family)
    apply_hadamard_rotations(model, adapter, cfg, qk_rotation=qk)
    assert max_rel_diff(before, logits(model, toks)) < 1e-4
    assert max_rel_diff(v_before, adapter.layer_parts(model, 0).v_proj.weight) > 0.1  # R2 really rotated v


@pytest.mark.parametrize("family", sorted(POST_NORMS))
def test_residual_rotation_is_refused_where_norms_follow_each_block(family, record_property):
    tag(record_property, family, "hadamard-r1")
    model, adapter = build(family)
    with pytest.raises(UnsupportedTransformError, match="residual rotation"):
        rotate_residual_stream(model, adapter, random_hadamard_matrix(adapter.hidden_size, seed=0))
    assert "r1: false" in model_support(config_json(model)).methods["hadamard"].reason


# --------------------------------------------------------------------------- OSTQuant


def perturbed_ost_parameters(model, adapter, cfg: OSTQuantConfig, seed: int = 0) -> OSTParameters:
    params = OSTParameters(model, adapter, cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for r in params.rotations():
            r.copy_(torch.linalg.qr(torch.randn(r.shape, generator=g, dtype=torch.float64))[0])
        for s in params.scales():
            s.copy_(torch.randn(s.shape, generator=g) * 0.5)
    return params


@pytest.mark.parametrize("family", FAMILIES)
def test_ostquant_fused_transforms_are_equivalent(family, record_property):
    tag(record_property, family, "ostquant")
    model, adapter = build(family)
    toks = tokens()
    before = logits(model, toks)
    if family in POST_NORMS:
        with pytest.raises(UnsupportedTransformError):
            OSTParameters(model, adapter, OSTQuantConfig())
        problems = check_recipe_against_model(config_json(model), {"stages": [{"ostquant": {}}, {"quantize": {}}]})
        assert any(p.startswith("recipe.stages[0].ostquant: ") and "soft-capping" in p for p in problems), problems
        cfg = OSTQuantConfig(rotations=["r2"], scales=False)  # R2 alone still fuses exactly
    else:
        cfg = OSTQuantConfig()
    fold_norms_into_linears(model, adapter)
    params = perturbed_ost_parameters(model, adapter, cfg)
    if family in QK_NORM and cfg.scales:
        assert all(p is not params.log_qk for p in params.scales())  # held at 1: the q/k norms would undo it
    from compressor.quant.compressed_linear import wrap_linear

    for parts in adapter.all_layer_parts(model):
        wrap_linear(parts.layer.mlp, "down_proj").set_input_rotation(random_hadamard_matrix(adapter.intermediate_size, seed=7))
    fuse_ost_transforms(model, adapter, params, down_hadamard_seed=7)
    assert max_rel_diff(before, logits(model, toks)) < 1e-4


# --------------------------------------------------------------------------- AffineQuant


@pytest.mark.parametrize("family", FAMILIES)
def test_affinequant_merges_exactly_and_leaves_quantized_layers(family, record_property):
    from tests.compressor.transforms.test_affinequant import random_transforms

    tag(record_property, family, "affinequant")
    model, adapter = build(family)
    toks = tokens()
    before = logits(model, toks)
    cfg = AffineQuantConfig(epochs=4, stability_factor=1.0, qk_matrix=family not in QK_NORM)
    if family in QK_NORM:
        parts = adapter.layer_parts(model, 0)
        with pytest.raises(UnsupportedTransformError, match="RMSNorm per head"):
            fuse_query_key_transforms(parts, adapter, torch.eye(adapter.head_dim).expand(adapter.num_kv_heads, -1, -1))
    merged = copy.deepcopy(model)
    merged_adapter = adapter_for(merged)
    with torch.no_grad():
        for parts in merged_adapter.all_layer_parts(merged):
            merge_layer_transforms(parts, merged_adapter, random_transforms(parts, merged_adapter, cfg, seed=parts.index).final(cfg.epochs - 1))
    assert max_rel_diff(before, logits(merged, toks)) < 1e-4

    train_cfg = AffineQuantConfig(epochs=2, stability_factor=0.1, qk_matrix=family not in QK_NORM, weights={"bits": 4})
    log = affinequant_quantize(model, adapter, tokens(4, 24, seed=5), train_cfg)
    for parts in adapter.all_layer_parts(model):
        for name, module in parts.linears().items():
            assert isinstance(module, FakeQuantLinear) and module.quantized_weight is not None, name
    assert all(math.isfinite(r["epoch_loss"][-1]) for r in log["layers"])


# --------------------------------------------------------------------------- ProSparse


@pytest.mark.parametrize("family", FAMILIES)
def test_prosparse_relu_gate_trains_and_exports_for_plain_transformers(family, tmp_path, record_property):
    from transformers import AutoModelForCausalLM

    from compressor.sparsity.activation import gate_threshold, set_gate_activation
    from compressor.sparsity.metrics import activation_sparsity
    from compressor.sparsity.training import finetune

    tag(record_property, family, "prosparse")
    model, adapter = build(family)
    set_gate_activation(model, 0.0)
    assert gate_threshold(model) == 0.0
    log = finetune(model, tokens(4, 24, seed=6), ProSparseConfig(lambdas=[0.0, 1.0], stage_steps=[1, 2], warmup_steps=0, lr=1e-3,
                                                                     finetune="hft"))  # HFT freezes by role: Phi-3 split
    assert len(log) == 3 and all(math.isfinite(e["loss"]) for e in log)
    model.eval()
    toks = tokens()
    assert 0.2 < sum(activation_sparsity(model, toks)) / adapter.num_layers < 1.0
    adapter.restore_checkpoint_layout(model)
    with torch.no_grad():
        for p in model.parameters():
            p.data.copy_(p.data.to(torch.bfloat16).float())
    expected = logits(model, toks)
    export_compressed_tensors(model, NoTokenizer(), tmp_path, {"model": family})
    config = json.loads((tmp_path / "config.json").read_text())
    assert config[adapter.family.activation_field] == "relu"  # Gemma reads hidden_activation, the others hidden_act
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert max_rel_diff(expected, logits(reloaded, toks)) < 1e-4


# --------------------------------------------------------------------------- Phi-3's fused linears


@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_phi3_split_quantization_equals_quantizing_the_fused_linear(method, record_property):
    """Every quantizer here is per row (or row × group), so quantizing q/k/v and gate/up apart and
    stacking the codes gives exactly what quantizing the checkpoint's fused linear would."""
    from compressor.execution.layer_inputs import capture_layer0_inputs
    from compressor.quant.gptq import HessianAccumulator, gptq_quantize
    from compressor.quant.quantizer import quantize_weight_rtn
    from compressor.spec import WeightQuantConfig

    tag(record_property, "phi3", method)
    reference, _ = build("phi3")
    fused = {name: getattr(reference.model.layers[0], parent).get_submodule(name).weight.detach().clone()
             for parent, name in (("self_attn", "qkv_proj"), ("mlp", "gate_up_proj"))}
    cal = tokens(4, 32, seed=2)
    cfg = {"bits": 4, "strategy": "group", "group_size": 16, "method": method}
    model = copy.deepcopy(reference)
    adapter = adapter_for(model)
    run_stages(context(model, adapter, [{"quantize": {"weights": cfg}}], cal), CostMeter())
    adapter.restore_checkpoint_layout(model)
    layer = model.model.layers[0]
    wcfg = WeightQuantConfig(**cfg)
    hidden = capture_layer0_inputs(reference, adapter_for(reference), cal).hidden
    normed = reference.model.layers[0].input_layernorm(hidden)
    for parent, name in (("self_attn", "qkv_proj"), ("mlp", "gate_up_proj")):
        ours = getattr(layer, parent).get_submodule(name).quantized_weight
        if method == "rtn":
            direct = quantize_weight_rtn(fused[name], wcfg)
        else:
            if name == "gate_up_proj":  # layer 0's FFN input: the attention block's output, normalised
                with torch.no_grad():
                    block = reference.model.layers[0]
                    kwargs = capture_layer0_inputs(reference, adapter_for(reference), cal).kwargs
                    attn = block.self_attn(hidden_states=normed, **{k: v for k, v in kwargs.items() if k != "use_cache"})[0]
                    x = block.post_attention_layernorm(hidden + attn)
            else:
                x = normed
            h = HessianAccumulator(fused[name].shape[1])
            h.add(x.detach())
            direct = gptq_quantize(fused[name], h.hessian, wcfg)
        if method == "rtn":
            assert torch.equal(ours.codes, direct.codes), name
        else:  # same Hessian up to float summation order (batches of 8 vs one), which may flip a rare rounding
            assert (ours.codes == direct.codes).float().mean().item() > 0.99, name
        torch.testing.assert_close(ours.scale, direct.scale)


def test_partial_rotary_phi3_holds_qk_scales_and_refuses_the_qk_matrix(record_property):
    """Phi-4-mini-style Phi3 configs rotate 3/4 of each head: pairs (i, i + d/2) are not RoPE's pairs there."""
    tag(record_property, "phi3", "ostquant")
    model, adapter = build("phi3", rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5})
    toks = tokens()
    before = logits(model, toks)
    fold_norms_into_linears(model, adapter)
    params = perturbed_ost_parameters(model, adapter, OSTQuantConfig())
    assert all(p is not params.log_qk for p in params.scales())
    fuse_ost_transforms(model, adapter, params, down_hadamard_seed=None)
    assert max_rel_diff(before, logits(model, toks)) < 1e-4
    with pytest.raises(UnsupportedTransformError, match="partial_rotary_factor"):
        adapter.require_query_key_transform()
    problems = check_recipe_against_model(config_json(model), {"stages": [{"affinequant": {}}]})
    assert [p.split(":")[0] for p in problems] == ["recipe.stages[0].affinequant.qk_matrix"]
