"""Stage-order rules: a recipe the worker could not run (or would export wrongly) is refused at validation."""

import pytest
from pydantic import ValidationError

from compressor.spec import JobSpec, Recipe

GPTQ = {"quantize": {"weights": {"method": "gptq"}}}


def _message(stages: list, **recipe) -> str:
    with pytest.raises(ValidationError) as e:
        JobSpec.model_validate({"model": "m", "recipe": {"stages": stages, **recipe}})
    (err,) = e.value.errors()
    assert err["loc"] == ("recipe",)
    return err["msg"]


def test_ostquant_needs_a_later_quantize_stage():
    msg = _message([GPTQ, {"ostquant": {}}])
    assert "stages[1].ostquant: needs a later quantize stage" in msg
    Recipe.model_validate({"stages": [{"ostquant": {}}, GPTQ]})


@pytest.mark.parametrize("late", ["hadamard", "ostquant", "prosparse"])
@pytest.mark.parametrize("early", [GPTQ, {"affinequant": {}}])
def test_weights_may_not_change_after_they_were_quantized(early, late):
    stages = [early, {late: {}}] + ([GPTQ] if late == "ostquant" else [])
    msg = _message(stages)
    assert f"stages[1].{late}: comes after stages[0].{next(iter(early))}, which quantized the weights" in msg


def test_rotations_after_activation_only_quantize_are_allowed():
    Recipe.model_validate({"stages": [{"quantize": {"weights": None, "kv_cache": {}}}, {"hadamard": {}}, GPTQ]})


def test_one_rotation_stage_per_recipe():
    msg = _message([{"hadamard": {}}, {"ostquant": {}}, GPTQ])
    assert "stages[1].ostquant: a recipe takes at most one rotation stage (hadamard, ostquant or flatquant), and stages[0].hadamard" in msg


def test_prosparse_batch_must_fit_the_calibration_set():
    msg = _message([{"prosparse": {"batch_size": 8}}], calibration={"samples": 4})
    assert "stages[0].prosparse.batch_size: 8 is more than calibration.samples (4); allowed: at most 4" == msg.removeprefix("Value error, ")


def test_all_problems_are_reported_together():
    msg = _message([GPTQ, {"hadamard": {}}, {"ostquant": {}}])
    assert "stages[2].ostquant: needs a later quantize stage" in msg
    assert "stages[1].hadamard: comes after stages[0].quantize" in msg
    assert "stages[2].ostquant: a recipe takes at most one rotation stage" in msg


@pytest.mark.parametrize(
    ("stages", "kv_bits"),
    [
        ([{"quantize": {"kv_cache": {"bits": 4}}}, GPTQ], None),  # the later quantize stage replaces the KV quantizer
        ([GPTQ, {"quantize": {"weights": None, "kv_cache": {"bits": 4}}}], 4),
        ([{"hadamard": {}}], None),
    ],
)
def test_final_kv_cache_is_the_last_quantize_stages(stages, kv_bits):
    kv = Recipe.model_validate({"stages": stages}).final_kv_cache()
    assert (kv.bits if kv is not None else None) == kv_bits
