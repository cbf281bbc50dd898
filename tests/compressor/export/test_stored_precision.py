"""The pipeline rounds what the checkpoint stores in bf16 before it evaluates: the report scores the checkpoint."""

from __future__ import annotations

import torch

from compressor.context import CompressionContext
from compressor.eval.resources import CostMeter
from compressor.execution.residency import ResidentLayers
from compressor.export.stored_precision import round_to_stored_precision
from compressor.models.adapter import adapter_for
from compressor.pipeline import run_stages
from compressor.progress import Progress
from compressor.quant.compressed_linear import FakeQuantLinear
from compressor.spec import Recipe
from tests.random_models import tiny_llama


def rotated_w4(tmp_path) -> torch.nn.Module:
    model = tiny_llama(hidden_size=64, intermediate_size=128, num_attention_heads=8, num_key_value_heads=2, head_dim=8)
    recipe = Recipe.model_validate({"stages": [{"hadamard": {"seed": 0, "online_qk": "off"}},
                                               {"quantize": {"weights": {"bits": 4, "method": "rtn", "strategy": "group", "group_size": 32}}}]})
    ctx = CompressionContext(model, None, adapter_for(model), recipe, Progress(), data_dir=tmp_path)
    run_stages(ctx, CostMeter())
    return model


def test_dense_tensors_become_bf16_values_and_quantized_weights_stay(tmp_path):
    model = rotated_w4(tmp_path)
    quantized = {name: m.linear.weight.clone() for name, m in model.named_modules()
                 if isinstance(m, FakeQuantLinear) and m.quantized_weight is not None}
    embed = model.model.embed_tokens.weight
    assert not torch.equal(embed, embed.bfloat16().float())  # the rotation left float32 products
    inexact = [name for name, p in model.named_parameters()
               if name.removesuffix(".linear.weight") not in quantized and not torch.equal(p, p.bfloat16().float())]
    changed = round_to_stored_precision(model, ResidentLayers(model, adapter_for(model)))
    assert changed == len(inexact) and "model.embed_tokens.weight" in inexact
    for name, p in model.named_parameters():
        if name.removesuffix(".linear.weight") in quantized:
            assert torch.equal(p, quantized[name.removesuffix(".linear.weight")]), name
        else:
            assert torch.equal(p, p.bfloat16().float()), name
    assert round_to_stored_precision(model, ResidentLayers(model, adapter_for(model))) == 0  # idempotent


def test_sequential_rounding_writes_back_only_the_layers_it_changed(tmp_path):
    """A model stored in bf16 with one layer a stage left in float32: rounding rewrites that layer's file alone."""
    from compressor.execution.skeleton import load_skeleton

    tiny_llama(num_hidden_layers=3).to(torch.bfloat16).save_pretrained(tmp_path / "model")
    skeleton, layers = load_skeleton(tmp_path / "model", tmp_path / "work", torch.device("cpu"), torch.float32)

    def stage(parts) -> int:  # a stage that changes layer 1 only, off the bf16 grid
        if parts.index != 1:
            return 0
        parts.down_proj.weight.data.mul_(1.0 + 2.0 ** -12)
        return 1

    assert layers.update_each(stage) == 1
    assert sorted(p.name for p in (tmp_path / "work").glob("layer-*.safetensors")) == ["layer-00001.safetensors"]
    assert round_to_stored_precision(skeleton, layers) == 1
    assert sorted(p.name for p in (tmp_path / "work").glob("layer-*.safetensors")) == ["layer-00001.safetensors"]
    parts = layers.onload(1)
    assert torch.equal(parts.down_proj.weight, parts.down_proj.weight.bfloat16().float())  # the rounded values were kept
    layers.offload(1, save=False)
    assert layers.embeddings_tied() is True  # nothing rewrote the embedding or head


def test_sequential_tie_is_judged_by_the_tensors_a_stage_left(tmp_path):
    """Rounding a tied pair alike keeps one tensor; rewriting the head alone unties it."""
    from compressor.execution.skeleton import load_skeleton

    tiny_llama(num_hidden_layers=1, tie_word_embeddings=True).save_pretrained(tmp_path / "model")
    skeleton, layers = load_skeleton(tmp_path / "model", tmp_path / "work", torch.device("cpu"), torch.float32)
    assert round_to_stored_precision(skeleton, layers) > 0  # float32 source: the embedding (and its tied head) round
    assert layers.embeddings_tied() is True
    with layers.outer("head", save=True):
        skeleton.lm_head.weight.data.mul_(2.0)
    assert layers.embeddings_tied() is False


def test_sequential_tie_is_compared_as_the_checkpoint_stores_it(tmp_path):
    """A head a stage left off the bf16 grid but equal to the embedding in bf16: tied for the bf16 export, not in float32."""
    from compressor.execution.skeleton import load_skeleton

    tiny_llama(num_hidden_layers=1, tie_word_embeddings=True).to(torch.bfloat16).save_pretrained(tmp_path / "model")
    skeleton, layers = load_skeleton(tmp_path / "model", tmp_path / "work", torch.device("cpu"), torch.float32)
    with layers.outer("head", save=True):
        skeleton.lm_head.weight.data.mul_(1.0 + 2.0 ** -12)  # below bf16's resolution: the stored bytes stay
    assert layers.embeddings_tied() is False
    assert layers.embeddings_tied(torch.bfloat16) is True
    with layers.outer("head", dtype=torch.bfloat16):  # a written part is read in the asked dtype
        assert skeleton.lm_head.weight.dtype == torch.bfloat16
