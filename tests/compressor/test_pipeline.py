"""End-to-end jobs on the real model with small calibration/eval budgets (seconds, not minutes)."""

from __future__ import annotations

import json

import pytest

from compressor.eval.report import Report
from compressor.export.format import sha256_file
from compressor.models.store import UnknownModelError
from compressor.pipeline import run
from compressor.progress import JobCancelled
from compressor.spec import JobSpec

pytestmark = pytest.mark.model

SMALL_EVAL = {"datasets": ["wiki"], "max_tokens": 1024, "window": 512}


def spec(stages: list, **recipe) -> JobSpec:
    return JobSpec.model_validate({"model": "smollm2-135m", "recipe": {"stages": stages, **recipe}})


RTN_G64 = [{"quantize": {"weights": {"bits": 4, "strategy": "group", "group_size": 64}}}]


def test_rtn_job_writes_report_and_checkpoint(model_store, tmp_path):
    events = []
    job = spec(RTN_G64, eval={**SMALL_EVAL, "datasets": ["wiki", "news"]})
    result = run(job, tmp_path, progress=events.append)
    report = json.loads((tmp_path / "report.json").read_text())
    for ds in ("wiki", "news"):
        assert report["perplexity"]["compressed"][ds] > report["perplexity"]["original"][ds] > 1
        assert report["kl"][ds] > 0
    assert report["seconds"] > 0 and report["peak_rss_mb"] > 100
    assert report["job"]["recipe_sha256"] == job.recipe.sha256() != spec(RTN_G64).recipe.sha256()
    assert report["size"]["bits_per_weight"] == pytest.approx(4.25)  # 4 bits + a bf16 scale per 64
    assert report["size"]["checkpoint_bytes"] < 0.7 * report["size"]["original_bytes"]
    assert "torch" in report["versions"]
    manifest = json.loads((tmp_path / "checkpoint" / "manifest.json").read_text())
    for f in manifest["files"]:
        assert sha256_file(tmp_path / "checkpoint" / f["name"]) == f["sha256"]
    assert manifest["engines"]["vllm"] is True
    assert set(report["engines"]) == {"transformers", "vllm-ampere", "vllm-hopper", "vllm-blackwell"}
    assert report["engines"] == manifest["engine_support"] and report["engines"]["transformers"]["serves"] is True
    assert report["machine"]["threads"] >= 1 and report["machine"]["aten_cpu_capability"]
    assert (tmp_path / "report.html").read_text().count("<img") >= 1
    assert sum(e.kind == "layer" for e in events) == 30
    assert result.report == report
    assert Report.model_validate(report) == result.report_model


def test_same_job_twice_is_bit_identical(model_store, tmp_path):
    stages = [{"quantize": {"weights": {"bits": 4, "strategy": "channel", "method": "gptq"}}}]
    job = spec(stages, calibration={"samples": 2, "seqlen": 128},
               eval={"datasets": ["wiki"], "max_tokens": 512, "window": 256, "original": False, "kl": False})
    a, b = run(job, tmp_path / "a"), run(job, tmp_path / "b")
    assert a.report["perplexity"] == b.report["perplexity"]
    sums = lambda d: {f["name"]: f["sha256"] for f in json.loads((d / "checkpoint" / "manifest.json").read_text())["files"]}
    assert sums(tmp_path / "a") == sums(tmp_path / "b")
    assert (tmp_path / "a" / "checkpoint" / "manifest.json").read_bytes() == (tmp_path / "b" / "checkpoint" / "manifest.json").read_bytes()


def test_cancel_stops_between_layers(model_store, tmp_path):
    seen = []
    with pytest.raises(JobCancelled):
        run(spec(RTN_G64, eval=SMALL_EVAL), tmp_path, progress=seen.append,
            should_cancel=lambda: sum(e.kind == "layer" for e in seen) >= 3)
    assert sum(e.kind == "layer" for e in seen) == 3
    assert not (tmp_path / "report.json").exists()


def test_unknown_model_names_the_known_ones(model_store, tmp_path):
    with pytest.raises(UnknownModelError, match="smollm2-135m"):
        run(JobSpec.model_validate({"model": "llama-70b", "recipe": {}}), tmp_path)


def test_group_size_not_dividing_is_refused_with_divisors(model_store, tmp_path):
    stages = [{"quantize": {"weights": {"bits": 4, "strategy": "group", "group_size": 128}}}]
    with pytest.raises(ValueError, match=r"stages\[0\]\.quantize\.weights\.group_size: 128 does not divide hidden_size.* 576.*\[16, 32, 64\]"):
        run(spec(stages, eval=SMALL_EVAL), tmp_path)
    # without export, a shorter last group is used for fake-quant evaluation
    result = run(spec(stages, eval={**SMALL_EVAL, "kl": False}, export={"format": "none"}), tmp_path / "fq")
    assert result.report["perplexity"]["compressed"]["wiki"] < 2 * result.report["perplexity"]["original"]["wiki"]


def test_user_jsonl_calibration(model_store, tmp_path):
    data = model_store / "data"
    data.mkdir(exist_ok=True)
    from compressor.data.corpus import news_text

    paragraphs = [p for p in news_text().splitlines() if p.strip()][:60]  # real prose, as a user's file would hold
    (data / "mine.jsonl").write_text("\n".join(json.dumps({"text": p}) for p in paragraphs))
    stages = [{"quantize": {"weights": {"bits": 4, "strategy": "channel", "method": "gptq"}}}]
    result = run(spec(stages, calibration={"dataset": "mine.jsonl", "samples": 8, "seqlen": 128},
                      eval={**SMALL_EVAL, "kl": False}, export={"format": "none"}), tmp_path)
    assert result.report["perplexity"]["compressed"]["wiki"] < 3 * result.report["perplexity"]["original"]["wiki"]
