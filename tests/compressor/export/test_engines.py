"""The engine rule table for each ready-made recipe's checkpoint, and the reasons it gives."""

from __future__ import annotations


import pytest

from compressor.export.engines import engine_support, recipe_engine_tables
from compressor.export.recipe_engines import exported_manifest
from compressor.spec.files import ready_made_recipes

T, F = True, False
# recipe: (transformers, vllm-ampere, vllm-hopper, vllm-blackwell)
EXPECTED = {
    "w8a8-fp8-dynamic": (T, T, T, T),
    "w8a8-fp8-static": (T, T, T, T),
    "w4a8-fp8-gptq": (T, F, T, F),
    "w4a16-nvfp4": (T, T, T, T),
    "w4a4-nvfp4-hadamard": (F, T, T, T),
    "w4a4-mxfp4": (T, F, F, T),
    "w4a16-hadamard-fused-gptq": (T, T, T, T),
    "w4a16-gptq": (T, T, T, T),
    "w8a8-rtn": (T, T, T, T),
    "w4a4kv4-hadamard-gptq": (F, F, F, F),
}


TRAINED = sorted(set(ready_made_recipes()) - set(EXPECTED))  # end-to-end training: heavy even when shortened


@pytest.mark.parametrize("recipe_name", sorted(EXPECTED) + [pytest.param(n, marks=pytest.mark.heavy) for n in TRAINED])
def test_engine_table_of_each_recipe(recipe_name, tmp_path):
    manifest = exported_manifest(recipe_name, tmp_path)
    table = manifest["engine_support"]
    got = tuple(table[e]["serves"] for e in ("transformers", "vllm-ampere", "vllm-hopper", "vllm-blackwell"))
    if recipe_name in EXPECTED:
        assert got == EXPECTED[recipe_name], table
    # what the API shows before a job runs is what the export writes (python -m compressor.export.recipe_engines)
    assert recipe_engine_tables()[recipe_name] == table, "compressor/recipes/engines.json is stale: regenerate it"
    refusals = [row for row in table.values() if not row["serves"]]
    assert all(row["reason"] for row in refusals), refusals  # every refusal says why
    assert manifest["engines"] == {"transformers": got[0], "vllm": any(got[1:])}


def test_fp4_w4a4_off_blackwell_is_a_weight_only_fallback(tmp_path):
    table = exported_manifest("w4a4-nvfp4-hadamard", tmp_path)["engine_support"]
    assert table["vllm-blackwell"]["path"].startswith("W4A4Fp4")
    assert table["vllm-hopper"]["path"].startswith("W4A16Fp4 (Marlin) fallback")
    assert "transform_config" in table["transformers"]["reason"]


def w4a8_config(group_size: int) -> dict:
    return {"format": "pack-quantized", "config_groups": {"group_0": {
        "targets": ["Linear"], "format": "pack-quantized",
        "weights": {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": group_size},
        "input_activations": {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "token", "dynamic": True}}}}


def test_w4a8_needs_group_128_on_hopper():
    hopper = {r.engine: r for r in engine_support(w4a8_config(64), [])}["vllm-hopper"]
    assert not hopper.serves and "group_size 128" in hopper.reason
    assert {r.engine: r for r in engine_support(w4a8_config(128), [])}["vllm-hopper"].serves


def test_int_kv_cache_is_not_a_checkpoint_scheme_for_vllm():
    qcfg = {"format": "dense", "config_groups": {},
            "kv_cache_scheme": {"num_bits": 8, "type": "int", "symmetric": False, "strategy": "attn_head", "dynamic": True}}
    rows = {r.engine: r for r in engine_support(qcfg, [])}
    assert rows["transformers"].serves
    assert not rows["vllm-hopper"].serves and "serving flag" in rows["vllm-hopper"].reason


def test_every_ready_made_recipe_has_its_engine_table():
    tables = recipe_engine_tables()
    assert set(tables) == set(ready_made_recipes())
    assert all(set(t) == {"transformers", "vllm-ampere", "vllm-hopper", "vllm-blackwell"} for t in tables.values())
