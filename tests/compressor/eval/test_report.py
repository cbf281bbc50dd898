"""The typed report: it reads and writes exactly the keys report.json has, and refuses drifted ones."""

from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from compressor.eval.report import EvalScores, Report, SizeInfo, build_report
from compressor.eval.resources import StageCost
from compressor.spec import Recipe

# report.json as the pipeline wrote it before the model existed (a prosparse + quantize job)
STORED = {
    "job": {"model": "tiny", "recipe": {"name": "r"}, "recipe_sha256": "ab" * 32, "seed": 0},
    "versions": {"torch": "2.13.0"},
    "perplexity": {"original": {"wiki": 20.0}, "compressed": {"wiki": 21.5}},
    "kl": {"wiki": 0.01},
    "eval_tokens": {"wiki": 1024},
    "size": {"bits_per_weight": 4.25, "checkpoint_bytes": None, "original_bytes": 270},
    "stages": [{"name": "load", "seconds": 0.5, "peak_rss_mb": 300.0, "details": {}},
               {"name": "0:prosparse", "seconds": 2.0, "peak_rss_mb": 310.0, "details": {"steps": 5}}],
    "layers": [{"name": "model.layers.0.self_attn.q_proj", "layer": 0, "kind": "q_proj", "rel_error": 0.1}],
    "sparsity": {"per_layer": [0.4, 0.6], "mean": 0.5, "fatrelu_threshold": 0.01, "eval_tokens": 256,
                 "finetune": "hft", "steps": 5},
    "training": {"prosparse": [{"step": 1, "lambda": 0.0, "loss": 3.0, "lm_loss": 3.0, "sparsity": 0.4}]},
    "seconds": 2.5,
    "peak_rss_mb": 310.0,
}


def test_stored_report_round_trips_unchanged():
    report = Report.model_validate(STORED)
    assert report.training.prosparse[0].lambda_ == 0.0
    assert report.model_dump(mode="json") == STORED
    assert list(report.model_dump(mode="json")) == list(STORED)


@pytest.mark.parametrize(("where", "key"), [((), "total_seconds"), (("sparsity",), "overall")])
def test_drifted_keys_are_refused(where, key):
    data = copy.deepcopy(STORED)
    target = data
    for part in where:
        target = target[part]
    target[key] = 1.0
    with pytest.raises(ValidationError, match=key):
        Report.model_validate(data)


def test_build_report_totals_the_measured_steps():
    costs = {"load": StageCost(1.0, 100.0), "0:quantize": StageCost(2.0, 300.0), "eval:wiki": StageCost(0.5, 200.0)}
    recipe = Recipe.model_validate({"stages": [{"quantize": {}}]})
    report = build_report(
        model="tiny", recipe=recipe, versions={}, scores=EvalScores(perplexity={"compressed": {"wiki": 9.0}}),
        size=SizeInfo(bits_per_weight=None, checkpoint_bytes=None, original_bytes=2),
        costs=costs, stage_details={"0:quantize": {"weights": "rtn"}}, layers=[], sections={},
    )
    assert report.seconds == 3.5 and report.peak_rss_mb == 300.0
    assert [(s.name, s.details) for s in report.stages] == [("load", {}), ("0:quantize", {"weights": "rtn"}), ("eval:wiki", {})]
    assert report.job.recipe_sha256 == recipe.sha256()
    dumped = report.model_dump(mode="json")
    assert "qsur" not in dumped and "sparsity" not in dumped and "training" not in dumped
