"""The report's speed section: the exported checkpoint reloaded with `compressor.load`, its perplexity
checked against the fake-quant model on the same windows, prefill/decode timed against the original.

Unit tests export a tiny random Llama (seconds, CPU); weights larger than the default init keep its
logits far from uniform, so perplexity notices a wrong weight. No test asserts on timings beyond
"positive and finite": which model is faster depends on the machine.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from compressor.context import CompressionContext
from compressor.eval.report import EvalScores, Report, SizeInfo, SpeedSection, build_report
from compressor.eval.report_html import write_report_html
from compressor.eval.speed import KERNELS, SpeedJob, measure_speed, reload_check
from compressor.export.compressed_tensors_format import export_compressed_tensors
from compressor.inference import load
from compressor.models.adapter import adapter_for
from compressor.progress import Progress
from compressor.quant.stage import run_quantize
from compressor.spec import HadamardConfig, JobSpec, QuantizeConfig, Recipe, SpeedConfig, load_recipe
from compressor.transforms.quarot import apply_hadamard_rotations
from tests.random_models import tiny_llama

TINY = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 8,
        "initializer_range": 0.15}
W4_G32 = {"weights": {"bits": 4, "strategy": "group", "group_size": 32}}
W8A8 = {"weights": {"bits": 8, "strategy": "channel"}, "activations": {"bits": 8, "symmetric": True}}
WINDOWS = torch.randint(0, 256, (4, 64), generator=torch.Generator().manual_seed(0))
SMALL = SpeedConfig(windows=4, prompt_tokens=16, decode_tokens=4, batch_sizes=[1, 3])


class NoTokenizer:
    def save_pretrained(self, _folder: Path) -> None:
        pass


def export_tiny(tmp_path: Path, quantize: dict, qk_rotation: bool = False) -> SpeedJob:
    """The original saved as a HF folder, then quantized by the real stage and exported: the job's view of both."""
    model = tiny_llama(**TINY)
    model.save_pretrained(tmp_path / "original")
    adapter = adapter_for(model)
    if qk_rotation:
        apply_hadamard_rotations(model, adapter, HadamardConfig(), qk_rotation=True)
    run_quantize(CompressionContext(model, None, adapter, Recipe(), Progress(), data_dir=tmp_path), QuantizeConfig.model_validate(quantize))
    export_compressed_tensors(model, NoTokenizer(), tmp_path / "checkpoint", {"model": "tiny"})
    return SpeedJob(checkpoint_dir=tmp_path / "checkpoint", original_dir=tmp_path / "original", dataset="random",
                    windows=WINDOWS, fake_quant=model, device=torch.device("cpu"), dtype=torch.float32)


@pytest.mark.parametrize("quantize, kind, kernel", [(W4_G32, "int4", "_weight_int4pack_mm_for_cpu"),
                                                    (W8A8, "int8_w8a8", "torch._int_mm")], ids=["w4a16", "w8a8"])
def test_reloaded_checkpoint_is_checked_and_both_models_timed(tmp_path, quantize, kind, kernel):
    job = export_tiny(tmp_path, quantize)
    section = measure_speed(job, SMALL)
    assert section.skipped_reason is None and section.device == "cpu" and section.dtype == "float32"
    reload = section.reload
    assert reload.windows == 4 and reload.tokens == 4 * 63
    assert reload.relative_difference == pytest.approx(abs(reload.reloaded_perplexity / reload.fake_quant_perplexity - 1))
    assert reload.relative_difference < SMALL.tolerance and reload.passed
    assert reload.reloaded_perplexity != reload.fake_quant_perplexity  # two programs: int kernels vs fp32 fake-quant
    assert [(t.phase, t.batch, t.tokens_per_sequence) for t in section.throughput] == [
        ("prefill", 1, 16), ("decode", 1, 4), ("prefill", 3, 16), ("decode", 3, 4)]
    for t in section.throughput:
        for rate in (t.original_tokens_per_s, t.compressed_tokens_per_s):
            assert rate > 0 and math.isfinite(rate)
        assert t.speedup == pytest.approx(t.compressed_tokens_per_s / t.original_tokens_per_s)
    [backend] = section.backends
    assert (backend.kind, backend.backend) == (kind, "native") and kernel in backend.kernel
    assert backend.modules == (8 if kind == "int4" else 14)  # int4 q/k/v and gate/up fused into one matmul each
    assert 0 < section.weight_bytes["compressed"] < section.weight_bytes["original"]


def test_reload_check_fails_when_the_loaded_model_is_not_the_checkpoint(tmp_path):
    """A loader that put layers in the wrong place (here: two decoder MLPs swapped) is caught."""
    job = export_tiny(tmp_path, W4_G32)
    loaded = load(job.checkpoint_dir, dtype=torch.float32)
    layers = loaded.model.layers
    layers[0].mlp, layers[1].mlp = layers[1].mlp, layers[0].mlp
    check = reload_check(job, loaded, 0.005)
    assert check.relative_difference > 0.02 and not check.passed


def test_checkpoint_compressor_load_refuses_gives_a_skipped_section(tmp_path):
    job = export_tiny(tmp_path, W4_G32, qk_rotation=True)  # Q/K rotation after RoPE: outside a stock Llama graph
    section = measure_speed(job, SMALL)
    assert section.skipped_reason.startswith("compressor.load cannot run this checkpoint:")
    assert "qk_rotation_after_rope" in section.skipped_reason
    assert section.reload is None and section.throughput == []
    assert "skipped_reason" in section.model_dump(mode="json") and "reload" not in section.model_dump(mode="json")


def test_no_eval_windows_gives_a_skipped_section(tmp_path):
    job = export_tiny(tmp_path, W4_G32)
    job.windows, job.dataset = WINDOWS[:0], None
    section = measure_speed(job, SMALL)
    assert "eval.datasets is empty" in section.skipped_reason


def _report(speed: SpeedSection) -> Report:
    return build_report(model="tiny", recipe=Recipe(), versions={}, scores=EvalScores(),
                        size=SizeInfo(bits_per_weight=4.5, checkpoint_bytes=1000, original_bytes=4000),
                        costs={}, stage_details={}, layers=[], sections={}, speed=speed)


def test_speed_section_round_trips_through_the_report_and_renders(tmp_path):
    section = measure_speed(export_tiny(tmp_path, W4_G32), SMALL)
    report = _report(section)
    data = json.loads(json.dumps(report.model_dump(mode="json")))
    assert Report.model_validate(data) == report
    assert "speed" not in _report(None).model_dump(mode="json")  # absent, not null, when not measured
    write_report_html(report, tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert 'id="speed"' in page and "fake-quant vs reloaded" in page
    assert f"{section.reload.reloaded_perplexity:.4g}" in page and f"{section.reload.fake_quant_perplexity:.4g}" in page
    decode_b3 = section.throughput[3]
    assert f"{decode_b3.compressed_tokens_per_s:.1f}" in page and f"{decode_b3.speedup:.2f}×" in page
    assert KERNELS[("int4", "native")] in page


def test_skipped_section_renders_its_reason(tmp_path):
    report = _report(SpeedSection(device="cuda:0", dtype="bfloat16", threads=8, skipped_reason="compressor.load cannot run this checkpoint: X"))
    write_report_html(report, tmp_path / "report.html")
    assert "Not measured: compressor.load cannot run this checkpoint: X" in (tmp_path / "report.html").read_text()


def test_speed_config_is_validated_and_off_by_default():
    assert Recipe().eval.speed is None
    assert load_recipe("w4a16-gptq").eval.speed == SpeedConfig(windows=2, prompt_tokens=64, decode_tokens=16)  # the demo measures it, briefly
    for bad, field in (({"batch_sizes": [1, 1]}, "batch_sizes"), ({"batch_sizes": [0]}, "batch_sizes"),
                       ({"decode_tokens": 1}, "decode_tokens"), ({"tolerance": 0}, "tolerance"), ({"warmup": 1}, "warmup")):
        with pytest.raises(ValueError, match=field):
            SpeedConfig.model_validate(bad)


def test_dry_run_report_carries_the_speed_section(tmp_path):
    from workers import dry_run

    spec = JobSpec(model="smollm2-135m", recipe=load_recipe("w4a16-gptq"))
    result = dry_run.run(spec, tmp_path)
    speed = Report.model_validate(result.report).speed
    assert [(t.phase, t.batch) for t in speed.throughput] == [("prefill", 1), ("decode", 1), ("prefill", 8), ("decode", 8)]


def test_job_reports_speed_of_its_reloaded_checkpoint(tiny_store, tmp_path):
    """The pipeline's one block: after evaluation, the checkpoint reloaded on the job's device and measured."""
    from compressor.pipeline import run

    recipe = {"stages": [{"quantize": W4_G32}],
              "eval": {"datasets": ["wiki"], "max_tokens": 512, "window": 128, "kl": False, "original": False,
                       "speed": {"windows": 2, "prompt_tokens": 8, "decode_tokens": 2, "batch_sizes": [2]}}}
    result = run(JobSpec.model_validate({"model": "tiny-llama", "recipe": recipe}), tmp_path / "out", home=tiny_store)
    speed = result.report_model.speed
    assert speed.reload.passed and speed.reload.windows == 2 and speed.reload.dataset == "wiki"
    assert [(t.phase, t.batch) for t in speed.throughput] == [("prefill", 2), ("decode", 2)]
    assert "speed" in [s.name for s in result.report_model.stages]
    assert 'id="speed"' in (tmp_path / "out" / "report.html").read_text()


@pytest.mark.model
@pytest.mark.heavy
def test_bundled_model_report_shows_speed_and_the_reloaded_perplexity(model_store, tmp_path):
    """SmolLM2-135M, GPTQ W4A16 (the demo's recipe, smaller calibration): the reloaded checkpoint's perplexity
    is the job's own within 0.5%, and the CPU int4 op runs every decoder linear."""
    from compressor.pipeline import run

    recipe = load_recipe("w4a16-gptq").model_dump(mode="json")
    recipe["calibration"] = {"dataset": "wiki", "samples": 16, "seqlen": 256}
    recipe["eval"] = {**recipe["eval"], "datasets": ["wiki"], "max_tokens": 2048, "kl": False, "original": False}
    result = run(JobSpec.model_validate({"model": "smollm2-135m", "recipe": recipe}), tmp_path, home=model_store)
    speed = result.report_model.speed
    assert speed.reload.passed, speed.reload
    assert [(b.kind, b.backend) for b in speed.backends] == [("int4", "native")]
    assert len(speed.throughput) == 4 and all(t.compressed_tokens_per_s > 0 for t in speed.throughput)
    assert "fake-quant vs reloaded" in (tmp_path / "report.html").read_text()
