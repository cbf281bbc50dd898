"""Both rotation stages give `online_qk: auto` one meaning and install the same seeded rotations."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compressor.context import CompressionContext
from compressor.eval.resources import CostMeter
from compressor.models.adapter import adapter_for
from compressor.pipeline import run_stages
from compressor.progress import Progress
from compressor.spec import KVCacheQuantConfig, Recipe
from compressor.transforms.hadamard import random_hadamard_matrix
from compressor.transforms.online_rotations import DOWN_SEED_OFFSET, QK_SEED_OFFSET, resolve_online_qk
from tests.random_models import tiny_llama

KV4 = {"bits": 4}
ROTATION = {"hadamard": {"seed": 5}, "ostquant": {"seed": 5, "steps": 0, "qsur_samples": 0}}


@pytest.mark.parametrize(
    ("setting", "kv", "expected"),
    [("auto", None, False), ("auto", KVCacheQuantConfig(), True), ("on", None, True), ("off", KVCacheQuantConfig(), False)],
)
def test_resolve_online_qk(setting, kv, expected):
    assert resolve_online_qk(setting, kv) is expected


def _run(stages: list) -> CompressionContext:
    model = tiny_llama()
    adapter = adapter_for(model)
    adapter.untie_embeddings(model)
    ctx = CompressionContext(model, None, adapter, Recipe.model_validate({"stages": stages}), Progress(), data_dir=Path("."))
    ctx._calibration = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    run_stages(ctx, CostMeter())
    return ctx


@pytest.mark.parametrize("stage", ["hadamard", "ostquant"])
@pytest.mark.parametrize(
    ("later", "qk"),
    [
        # the KV quantizer of an earlier quantize stage is replaced by the last one: no R3
        ([{"quantize": {"kv_cache": KV4}}, {"quantize": {}}], False),
        ([{"quantize": {"kv_cache": KV4}}], True),
        ([{"quantize": {}}, {"quantize": {"weights": None, "kv_cache": KV4}}], True),
    ],
)
def test_auto_means_the_kv_cache_the_model_ends_with(stage, later, qk):
    ctx = _run([{stage: ROTATION[stage]}, *later])
    attn = ctx.model.model.layers[0].self_attn
    assert (getattr(attn, "qk_rotation", None) is not None) is qk
    if qk:
        expected = random_hadamard_matrix(attn.head_dim, seed=5 + QK_SEED_OFFSET).float()
        torch.testing.assert_close(attn.qk_rotation, expected)


@pytest.mark.parametrize("stage", ["hadamard", "ostquant"])
def test_down_proj_rotation_uses_the_shared_seed(stage):
    ctx = _run([{stage: ROTATION[stage]}, {"quantize": {}}])
    down = ctx.model.model.layers[1].mlp.down_proj
    expected = random_hadamard_matrix(ctx.adapter.intermediate_size, seed=5 + DOWN_SEED_OFFSET).float()
    torch.testing.assert_close(down.input_rotation, expected)
