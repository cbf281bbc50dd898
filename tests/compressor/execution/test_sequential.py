"""Sequential (one decoder layer at a time) execution gives resident execution's checkpoint and scores.

Identical bytes are expected, not just close values: both walk the same layer code on the
same calibration activations, and the weights read from the shards are the stored values.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compressor.execution.layer_forward import final_hidden_states
from compressor.execution.residency import ResidentLayers
from compressor.execution.skeleton import load_skeleton
from compressor.export.format import sha256_file
from compressor.export.shard_writer import ShardWriter
from compressor.models.adapter import adapter_for
from compressor.models.shards import INDEX_FILE, open_shards
from compressor.pipeline import run
from compressor.spec import JobSpec, Recipe
from tests.random_models import tiny_llama


def _job(weights: dict, layers: str, **recipe) -> JobSpec:
    return JobSpec.model_validate({"model": "tiny4", "recipe": {
        "stages": [{"quantize": {"weights": weights, **recipe.pop("quantize", {})}}],
        "calibration": {"samples": 4, "seqlen": 64},
        "eval": {"datasets": ["wiki"], "max_tokens": 512, "window": 128},
        "execution": {"layers": layers}, **recipe}})


@pytest.mark.parametrize("weights", [
    {"bits": 4, "strategy": "group", "group_size": 16, "method": "rtn"},
    {"bits": 4, "strategy": "group", "group_size": 16, "method": "gptq"},
], ids=["rtn", "gptq"])
def test_sequential_and_resident_jobs_write_identical_checkpoints(tiny4_store, tmp_path, weights):
    reports = {}
    for mode in ("resident", "sequential"):
        reports[mode] = run(_job(weights, mode), tmp_path / mode, home=tiny4_store).report
    for name in ("model.safetensors", "config.json"):
        assert sha256_file(tmp_path / "resident" / "checkpoint" / name) == sha256_file(tmp_path / "sequential" / "checkpoint" / name)
    assert reports["sequential"]["perplexity"] == reports["resident"]["perplexity"]
    assert reports["sequential"]["kl"] == reports["resident"]["kl"] and reports["sequential"]["kl"]["wiki"] > 0
    assert [r["execution"]["layers"] for r in reports.values()] == ["resident", "sequential"]
    assert not (tmp_path / "sequential" / ".layers").exists()  # the finished layers' states are gone with the job


W4A4KV4_GPTQ = {"quantize": {"weights": {"bits": 4, "symmetric": True, "strategy": "channel", "method": "gptq"},
                             "activations": {"bits": 4, "symmetric": False}, "kv_cache": {"bits": 4, "symmetric": False}}}


def _stages_job(stages: list[dict], layers: str, max_tokens: int = 512) -> JobSpec:
    return JobSpec.model_validate({"model": "tiny4", "recipe": {
        "stages": stages, "calibration": {"samples": 4, "seqlen": 64},
        "eval": {"datasets": ["wiki"], "max_tokens": max_tokens, "window": 128}, "execution": {"layers": layers}}})


def test_sequential_hadamard_w4a4kv4_job_matches_resident(tiny4_store, tmp_path):
    """Rotations fused a layer at a time, embedding and head rewritten on their own, online R3/R4 exported from the walk;
    KL against the original head read back from the shards."""
    job = lambda mode: _stages_job([{"hadamard": {"seed": 0}}, W4A4KV4_GPTQ], mode)  # noqa: E731
    a = run(job("resident"), tmp_path / "a", home=tiny4_store).report
    b = run(job("sequential"), tmp_path / "b", home=tiny4_store).report
    for name in ("model.safetensors", "config.json"):
        assert sha256_file(tmp_path / "a" / "checkpoint" / name) == sha256_file(tmp_path / "b" / "checkpoint" / name)
    config = json.loads((tmp_path / "b" / "checkpoint" / "config.json").read_text())
    assert config["tie_word_embeddings"] is False and config["quantization_config"]["transform_config"]
    assert a["perplexity"] == b["perplexity"] and a["kl"] == b["kl"] and b["kl"]["wiki"] > 0


def test_activation_quantizers_set_on_layers_not_yet_loaded(tiny4_store, tmp_path):
    """Dynamic int8 activations on a layer a stage wrapped while it was on meta: read from the source under its new name."""
    job = lambda mode: _job({"bits": 8, "strategy": "channel"}, mode, quantize={"activations": {"bits": 8}})
    a = run(job("resident"), tmp_path / "a", home=tiny4_store).report
    b = run(job("sequential"), tmp_path / "b", home=tiny4_store).report
    assert sha256_file(tmp_path / "a" / "checkpoint" / "model.safetensors") == sha256_file(tmp_path / "b" / "checkpoint" / "model.safetensors")
    assert a["perplexity"] == b["perplexity"]


def test_sequential_refuses_a_whole_model_method_by_name():
    with pytest.raises(ValueError, match=r"stages\[0\]\.ostquant: this method works on the whole model"):
        Recipe.model_validate({"stages": [{"ostquant": {}}, {"quantize": {"weights": {"bits": 4}}}],
                               "execution": {"layers": "sequential"}})
    with pytest.raises(ValueError, match=r"stages\[0\]\.quantize\.kv_cache: fp8"):
        Recipe.model_validate({"stages": [{"quantize": {"kv_cache": {"format": "fp8", "bits": 8, "symmetric": True}}}],
                               "execution": {"layers": "sequential"}})


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_skeleton_from_shards_computes_the_loaded_models_hidden_states(tmp_path, tied):
    """An untied head and a model stored in several shards: the layer walk reads each tensor from its shard."""
    model = tiny_llama(num_hidden_layers=3, tie_word_embeddings=tied)
    model.save_pretrained(tmp_path / "model", max_shard_size="40KB")
    assert (tmp_path / "model" / INDEX_FILE).is_file()
    tokens = torch.randint(0, 256, (3, 20), generator=torch.Generator().manual_seed(1))
    expected = final_hidden_states(model, adapter_for(model), ResidentLayers(model, adapter_for(model)), tokens)
    skeleton, layers = load_skeleton(tmp_path / "model", tmp_path / "work", torch.device("cpu"), torch.float32)
    assert all(p.device.type == "meta" for p in skeleton.model.layers.parameters())
    got = final_hidden_states(skeleton, layers.adapter, layers, tokens)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    with layers.outer("head"):
        torch.testing.assert_close(layers.adapter.logits(skeleton, got), model.lm_head(expected), rtol=0, atol=0)
    assert skeleton.lm_head.weight.device.type == "meta"  # and gone again


def test_a_finished_layer_comes_back_with_every_tensor_it_had(tmp_path):
    """Quantized codes and scales (attributes, not parameters) survive a trip to the work folder."""
    from compressor.quant.compressed_linear import install_quantized_weight
    from compressor.quant.quantizer import quantize_weight_rtn
    from compressor.spec import WeightQuantConfig

    model = tiny_llama(num_hidden_layers=2)
    model.save_pretrained(tmp_path / "model")
    skeleton, layers = load_skeleton(tmp_path / "model", tmp_path / "work", torch.device("cpu"), torch.float32)
    cfg = WeightQuantConfig(bits=4, strategy="group", group_size=16)
    for parts in layers.walk():
        if parts.index == 1:
            install_quantized_weight(parts, "mlp.down_proj", quantize_weight_rtn(parts.down_proj.weight.data, cfg))
    down = skeleton.model.layers[1].mlp.down_proj
    assert down.quantized_weight.codes.device.type == "meta"
    parts = layers.onload(1)
    expected = quantize_weight_rtn(model.model.layers[1].mlp.down_proj.weight.data, cfg)
    assert torch.equal(parts.down_proj.quantized_weight.codes, expected.codes)
    assert torch.equal(parts.down_proj.weight, expected.dequantize())


def test_shard_writer_splits_and_indexes_what_one_file_would_hold(tmp_path):
    tensors = {f"layers.{i}.weight": torch.randn(64, 64) for i in range(6)}
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    single.mkdir(), sharded.mkdir()
    one = ShardWriter(single)
    one.add(tensors)
    assert [p.name for p in one.close()] == ["model.safetensors"]
    many = ShardWriter(sharded, max_shard_bytes=3 * 64 * 64 * 4)
    for name, t in list(tensors.items())[:5]:  # full after three tensors
        many.add({name: t})
    big = {"embed.weight": torch.randn(64, 96)}  # half a shard or more: what is pending is written before it
    many.add(big)
    files = many.close()
    assert [p.name for p in files] == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    written = {**dict(list(tensors.items())[:5]), **big}
    index = json.loads((sharded / INDEX_FILE).read_text())
    assert index["metadata"]["total_size"] == sum(t.numel() * 4 for t in written.values()) and set(index["weight_map"]) == set(written)
    assert [index["weight_map"][k] for k in ("layers.2.weight", "layers.3.weight", "layers.4.weight", "embed.weight")] == [
        "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00002-of-00003.safetensors",
        "model-00003-of-00003.safetensors"]
    for folder, expected in ((single, tensors), (sharded, written)):
        with open_shards(folder) as read:
            assert sorted(read.keys()) == sorted(expected)
            for name, t in expected.items():
                assert torch.equal(read.get_tensor(name), t)
    with pytest.raises(ValueError, match="written twice"):
        many.add({"layers.0.weight": tensors["layers.0.weight"]})


def test_calibration_activations_spilled_to_disk_change_no_bit(tiny4_store, tmp_path, monkeypatch):
    """Activations bigger than memory allows live in unlinked files in the work folder; the checkpoint is the same."""
    import compressor.execution.layer_inputs as layer_inputs

    weights = {"bits": 4, "strategy": "group", "group_size": 16, "method": "gptq"}
    run(_job(weights, "resident"), tmp_path / "resident", home=tiny4_store)
    files = []
    real = torch.from_file
    monkeypatch.setattr(layer_inputs, "IN_MEMORY_BYTES", 0)
    monkeypatch.setattr(torch, "from_file", lambda path, *a, **k: files.append(path) or real(path, *a, **k))
    run(_job(weights, "sequential"), tmp_path / "spilled", home=tiny4_store)
    assert len(files) > 4 and all(Path(f).parent == tmp_path / "spilled" / ".layers" for f in files)
    assert sha256_file(tmp_path / "resident" / "checkpoint" / "model.safetensors") == sha256_file(tmp_path / "spilled" / "checkpoint" / "model.safetensors")


def test_speed_section_of_a_sequential_job_says_why_it_is_not_measured(tiny4_store, tmp_path):
    job = JobSpec.model_validate({"model": "tiny4", "recipe": {
        "stages": [{"quantize": {"weights": {"bits": 4, "strategy": "group", "group_size": 16}}}],
        "eval": {"datasets": ["wiki"], "max_tokens": 256, "window": 128, "speed": {"windows": 1}},
        "execution": {"layers": "sequential"}}})
    speed = run(job, tmp_path, home=tiny4_store).report["speed"]
    assert "one decoder layer at a time" in speed["skipped_reason"] and not speed.get("throughput")


@pytest.mark.parametrize("extra", [{"ln_matrix": "dense"}, {"loss": "kl_top", "activations": {"bits": 8}}],
                         ids=["dense-norm-matrix", "kl-top-w4a8"])
def test_sequential_affinequant_job_matches_resident(tiny4_store, tmp_path, extra):
    """Block-wise training a layer at a time (the KL-Top lens keeps the head loaded), the same bytes as resident."""
    stages = [{"affinequant": {"weights": {"bits": 4, "symmetric": True, "strategy": "channel", "method": "rtn"},
                               "epochs": 2, "batch_size": 2, **extra}}]
    job = lambda mode: _stages_job(stages, mode, max_tokens=256)  # noqa: E731
    a = run(job("resident"), tmp_path / "a", home=tiny4_store).report
    b = run(job("sequential"), tmp_path / "b", home=tiny4_store).report
    assert sha256_file(tmp_path / "a" / "checkpoint" / "model.safetensors") == sha256_file(tmp_path / "b" / "checkpoint" / "model.safetensors")
    assert a["perplexity"] == b["perplexity"] and a["kl"] == b["kl"]


def test_sequential_flatquant_w4a4kv4_job_matches_resident(tiny4_store, tmp_path):
    """Layer-wise learned transforms a layer at a time: the online Kronecker side travels with each finished layer,
    GPTQ reads it from the walk, export writes it; the same bytes and scores as resident."""
    job = lambda mode: _stages_job([{"flatquant": {"epochs": 2, "batch_size": 2, "qsur_samples": 1}}, W4A4KV4_GPTQ],  # noqa: E731
                                   mode, max_tokens=256)
    a = run(job("resident"), tmp_path / "a", home=tiny4_store).report
    b = run(job("sequential"), tmp_path / "b", home=tiny4_store).report
    for name in ("model.safetensors", "config.json"):
        assert sha256_file(tmp_path / "a" / "checkpoint" / name) == sha256_file(tmp_path / "b" / "checkpoint" / name)
    assert a["perplexity"] == b["perplexity"] and a["kl"] == b["kl"]
    assert a["qsur"] == b["qsur"] and {row["kind"] for row in b["qsur"]} == {"attn_in", "o_in", "mlp_in", "down_in"}
