"""The job contract: what is accepted, and that bad input names the field and what is allowed."""

import pytest
from pydantic import ValidationError

from compressor.spec import JobSpec, Recipe, load_recipe, ready_made_recipes


def _errors(data: dict) -> list[dict]:
    with pytest.raises(ValidationError) as e:
        JobSpec.model_validate(data)
    return e.value.errors()


def test_ready_made_recipes_validate():
    names = set(ready_made_recipes())
    assert {"w4a16-rtn", "w4a16-gptq", "w8a8-rtn", "w4a4kv4-hadamard-gptq"} <= names


def test_negative_bits_names_the_field():
    errs = _errors({"model": "smollm2-135m", "recipe": {"stages": [{"quantize": {"weights": {"bits": -4}}}]}})
    assert errs[0]["loc"][-1] == "bits" and "greater than or equal to 2" in errs[0]["msg"]


def test_unknown_field_is_refused():
    errs = _errors({"model": "smollm2-135m", "recipe": {"stages": [{"quantize": {"weights": {"bitz": 4}}}]}})
    assert errs[0]["loc"][-1] == "bitz" and errs[0]["type"] == "extra_forbidden"


def test_unknown_stage_lists_the_allowed_ones():
    errs = _errors({"model": "smollm2-135m", "recipe": {"stages": [{"prune": {}}]}})
    assert "hadamard" in errs[0]["msg"] and "quantize" in errs[0]["msg"]


@pytest.mark.parametrize("name", ["../etc/passwd", "/abs/path", "Model With Spaces", ""])
def test_path_like_model_names_are_refused(name):
    errs = _errors({"model": name, "recipe": {}})
    assert errs[0]["loc"] == ("model",)


def test_group_size_requires_group_strategy():
    errs = _errors({"model": "m", "recipe": {"stages": [{"quantize": {"weights": {"group_size": 64}}}]}})
    assert "group_size is only allowed with strategy 'group'" in errs[0]["msg"]
    errs = _errors({"model": "m", "recipe": {"stages": [{"quantize": {"weights": {"strategy": "group"}}}]}})
    assert "group_size is required" in errs[0]["msg"]


def test_calibration_dataset_cannot_be_a_path():
    errs = _errors({"model": "m", "recipe": {"calibration": {"dataset": "../../secret.txt"}}})
    assert errs[0]["loc"][-1] == "dataset"


def test_recipe_hash_is_stable_and_sensitive():
    a = load_recipe("w4a16-gptq")
    b = Recipe.model_validate(a.model_dump())
    assert a.sha256() == b.sha256()
    c = a.model_copy(update={"seed": 1})
    assert c.sha256() != a.sha256()


def test_unknown_recipe_name_lists_ready_made(tmp_path):
    with pytest.raises(FileNotFoundError, match="w4a16-rtn"):
        load_recipe("no-such-recipe")


def test_stage_names_come_from_the_configs():
    from compressor.spec import STAGE_CONFIGS, STAGE_NAMES, QuantizeStage, stage_config

    assert STAGE_NAMES == tuple(c.stage for c in STAGE_CONFIGS)
    assert len(set(STAGE_NAMES)) == len(STAGE_NAMES)
    recipe = Recipe.model_validate({"stages": [{name: {}} for name in ("hadamard", "quantize")]})
    assert [type(c).stage for c in recipe.stage_configs()] == ["hadamard", "quantize"]
    assert type(stage_config(QuantizeStage())).__name__ == "QuantizeConfig"


def test_unknown_stage_message_lists_every_stage():
    from compressor.spec import STAGE_NAMES

    msg = _errors({"model": "m", "recipe": {"stages": [{"prune": {}}]}})[0]["msg"]
    assert msg.endswith("one of: " + ", ".join(STAGE_NAMES))


def test_every_stage_config_has_a_handler():
    import compressor.stages  # noqa: F401  (registers the handlers)
    from compressor.registry import stage_handler
    from compressor.spec import STAGE_CONFIGS

    assert [stage_handler(c())[0] for c in STAGE_CONFIGS] == [c.stage for c in STAGE_CONFIGS]


def test_eval_window_longer_than_max_tokens_is_refused():
    errs = _errors({"model": "m", "recipe": {"eval": {"max_tokens": 256, "window": 512}}})
    assert errs[0]["loc"] == ("recipe", "eval") and "window (512) is longer than max_tokens (256)" in errs[0]["msg"]


def test_an_ostquant_warm_start_with_nothing_to_train_is_refused():
    stages = [{"ostquant": {"rotations": ["r1"], "scales": False, "warm_start": {"epochs": 2}}}, {"quantize": {"weights": {"bits": 4}}}]
    errs = _errors({"model": "smollm2-135m", "recipe": {"stages": stages}})
    assert errs[0]["loc"][-1] == "ostquant" and "warm_start" in errs[0]["msg"] and "r2, scales" in errs[0]["msg"]
    errs = _errors({"model": "smollm2-135m", "recipe": {"stages": [{"ostquant": {"warm_start": {"epochz": 2}}}, stages[1]]}})
    assert errs[0]["loc"][-2:] == ("warm_start", "epochz") and errs[0]["type"] == "extra_forbidden"
