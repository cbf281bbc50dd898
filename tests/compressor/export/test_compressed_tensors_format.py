"""The exported `kv_cache_scheme` describes the model's attention modules, not a recipe stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compressor.context import CompressionContext
from compressor.eval.resources import CostMeter
from compressor.export.compressed_tensors_format import export_compressed_tensors
from compressor.models.adapter import adapter_for
from compressor.pipeline import run_stages
from compressor.progress import Progress
from compressor.quant.attention import kv_cache_quant
from compressor.spec import Recipe
from tests.random_models import tiny_llama

KV4 = {"bits": 4, "symmetric": False}
W4 = {"weights": {"bits": 4, "strategy": "group", "group_size": 16}}


class NoTokenizer:
    def save_pretrained(self, _folder: Path) -> None:
        pass


def _export(stages: list, folder: Path) -> tuple[dict, object]:
    model = tiny_llama(hidden_size=64, intermediate_size=128, num_attention_heads=8, num_key_value_heads=2, head_dim=8)
    ctx = CompressionContext(model, None, adapter_for(model), Recipe.model_validate({"stages": stages}), Progress(), data_dir=folder)
    run_stages(ctx, CostMeter())
    export_compressed_tensors(model, NoTokenizer(), folder, {"model": "tiny"})
    return json.loads((folder / "config.json").read_text())["quantization_config"], model


def test_kv_quantized_then_weights_only_writes_no_kv_scheme(tmp_path):
    """quantize{kv_cache} → quantize{weights}: the second stage replaced the KV quantizer, so none is exported."""
    qcfg, model = _export([{"quantize": {"weights": None, "kv_cache": KV4}}, {"quantize": W4}], tmp_path)
    assert kv_cache_quant(model) is None
    assert qcfg["kv_cache_scheme"] is None
    assert qcfg["config_groups"]["group_0"]["weights"]["group_size"] == 16


@pytest.mark.parametrize("stages", [[{"quantize": {**W4, "kv_cache": KV4}}],
                                    [{"quantize": W4}, {"quantize": {"weights": None, "kv_cache": KV4}}]])
def test_kv_quantized_last_writes_its_scheme(stages, tmp_path):
    qcfg, _ = _export(stages, tmp_path)
    # per token and head: compressed-tensors' dynamic group quantization over head_dim (8 here)
    assert qcfg["kv_cache_scheme"] == {"num_bits": 4, "type": "int", "symmetric": False, "strategy": "group", "group_size": 8,
                                       "dynamic": True, "observer": None}
