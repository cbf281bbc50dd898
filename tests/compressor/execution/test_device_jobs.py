"""Jobs on the job's device and dtype: a bfloat16 RTN job runs end to end on the CPU, and the report says where it ran."""

from __future__ import annotations

import json
import re

import pytest

from compressor.execution.plan import InsufficientMemoryError, plan_execution
from compressor.models.store import ModelStore
from compressor.pipeline import run
from compressor.spec import JobSpec, Recipe

EVAL = {"datasets": ["wiki"], "max_tokens": 256, "window": 64}
RTN = [{"quantize": {"weights": {"bits": 4, "strategy": "group", "group_size": 16}}}]


def tiny_job(stages, **recipe) -> JobSpec:
    return JobSpec.model_validate({"model": "tiny-llama", "recipe": {"stages": stages, "eval": EVAL, **recipe}})


def test_bfloat16_rtn_job_runs_end_to_end_on_the_cpu(tiny_store, tmp_path):
    events = []
    job = tiny_job(RTN, execution={"dtype": "bfloat16"})
    result = run(job, tmp_path / "bf16", home=tiny_store, device="cpu", progress=events.append)
    execution = result.report["execution"]
    assert (execution["device"], execution["dtype"], execution["layers"]) == ("cpu", "bfloat16", "resident")
    assert execution["estimate_peak_mb"] > 0 and execution["measured_peak_mb"] > 0
    assert "peak_device_mb" not in execution  # CPU: no GPU counter
    assert any(e.message == "running on cpu, bfloat16" for e in events)
    ppl = result.report["perplexity"]
    assert 1 < ppl["compressed"]["wiki"] < float("inf") and 1 < ppl["original"]["wiki"] < float("inf")
    assert result.report["layers"] and all(row["rel_error"] < 0.5 for row in result.report["layers"])
    # the exported checkpoint keeps the serving dtype (bf16 scales) and reloads in plain transformers
    manifest = json.loads((tmp_path / "bf16" / "checkpoint" / "manifest.json").read_text())
    assert manifest["files"]
    fp32 = run(tiny_job(RTN), tmp_path / "fp32", home=tiny_store, device="cpu")
    assert fp32.report["execution"]["dtype"] == "float32"
    # bf16 rounding of the weights moves the quality a little, not wholesale
    assert ppl["compressed"]["wiki"] == pytest.approx(fp32.report["perplexity"]["compressed"]["wiki"], rel=0.05)


def test_device_setting_is_refused_before_the_model_loads(tiny_store, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSOR_DEVICE", "gpu")
    with pytest.raises(ValueError, match="COMPRESSOR_DEVICE='gpu' is not a device"):
        run(tiny_job(RTN), tmp_path, home=tiny_store)
    assert not (tmp_path / "report.json").exists()


def test_end_to_end_method_that_cannot_fit_fails_at_once_with_the_numbers():
    import psutil

    # Llama-3-8B shapes trained on batches of 64 x 4096 tokens: the logits alone are hundreds of GB
    config = {"vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
              "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "tie_word_embeddings": False}
    recipe = Recipe.model_validate({"stages": [{"ostquant": {"steps": 10, "batch_size": 64}},
                                               {"quantize": {"weights": {"bits": 4, "strategy": "channel"}}}],
                                    "calibration": {"samples": 64, "seqlen": 4096}})
    with pytest.raises(InsufficientMemoryError) as err:
        plan_execution(config, recipe, "cpu")
    msg = str(err.value)
    m = re.match(r"ostquant keeps the whole model on cpu and needs about ([\d.]+) GiB \(ostquant_logits .*\); "
                 r"([\d.]+) GiB is available there \(of ([\d.]+) GiB\)\. To fit: fewer calibration.seqlen tokens", msg)
    assert m, msg
    needed, available, total = (float(g) for g in m.groups())
    assert needed > available and total == pytest.approx(psutil.virtual_memory().total / 2**30, abs=0.01)
    # without activation checkpointing every layer's intermediates count, and the message says how to turn it on
    dump = recipe.model_dump()
    dump["stages"][0]["ostquant"]["activation_checkpointing"] = False
    plain = Recipe.model_validate(dump)
    with pytest.raises(InsufficientMemoryError, match="activation_checkpointing: true on the training stage") as err2:
        plan_execution(config, plain, "cpu")
    assert float(re.search(r"needs about ([\d.]+) GiB", str(err2.value)).group(1)) > needed
    # the same model with a layer-local method is not refused here (the submit-time check covers it)
    rtn = Recipe.model_validate({"stages": RTN})
    assert plan_execution(config, rtn, "cpu").estimate.total_bytes > available * 2**30


def test_real_available_memory_admits_a_small_training_job(model_store):
    config = ModelStore(model_store).config("smollm2-135m")
    recipe = Recipe.model_validate({"stages": [{"ostquant": {"steps": 2}},
                                               {"quantize": {"weights": {"bits": 4, "strategy": "channel"}}}],
                                    "calibration": {"samples": 2, "seqlen": 64}})
    p = plan_execution(config, recipe, "cpu")
    assert p.target.device == "cpu" and p.target.dtype == "float32"


BF16_METHODS = {
    "gptq": [{"quantize": {"weights": {"bits": 4, "strategy": "channel", "method": "gptq"}}}],
    "hadamard-gptq-w4a4kv4": [{"hadamard": {}}, {"quantize": {
        "weights": {"bits": 4, "strategy": "channel", "method": "gptq", "clip_search": True},
        "activations": {"bits": 4}, "kv_cache": {"bits": 4}}}],
    "ostquant": [{"ostquant": {"steps": 2, "k": 50, "qsur_samples": 2}},
                 {"quantize": {"weights": {"bits": 4, "strategy": "channel", "method": "gptq"}}}],
    "affinequant": [{"affinequant": {"epochs": 2, "weights": {"bits": 4, "symmetric": True, "strategy": "channel",
                                                              "method": "rtn"}}}],
    "prosparse": [{"prosparse": {"lambdas": [0.0, 0.5], "stage_steps": [1, 2], "warmup_steps": 1,
                                 "sparsity_eval_tokens": 256}}],
    "fp8": [{"quantize": {"weights": {"bits": 8, "format": "fp8", "strategy": "channel"},
                          "activations": {"bits": 8, "format": "fp8", "symmetric": True}}}],
}


@pytest.mark.heavy
@pytest.mark.parametrize("method", list(BF16_METHODS))
def test_every_method_runs_with_a_bfloat16_working_dtype(method, tiny_store, tmp_path):
    """What a GPU worker does by default (bf16 weights; Hessians, fusion, training and KL in fp32/fp64), here on the CPU."""
    job = tiny_job(BF16_METHODS[method], execution={"dtype": "bfloat16"}, calibration={"samples": 4, "seqlen": 64})
    result = run(job, tmp_path, home=tiny_store, device="cpu")
    assert result.report["execution"]["dtype"] == "bfloat16"
    ppl = result.report["perplexity"]
    assert 1 < ppl["compressed"]["wiki"] < 2 * ppl["original"]["wiki"]
