"""Shapes a number format cannot hold are refused when the recipe is validated, naming the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from compressor.spec import Recipe

NVFP4 = {"format": "nvfp4", "bits": 4, "symmetric": True, "strategy": "group", "group_size": 16}


def refusal(quantize: dict) -> str:
    with pytest.raises(ValidationError) as info:
        Recipe.model_validate({"stages": [{"quantize": quantize}]})
    return str(info.value)


def refused_fields(message: str, part: str) -> list[str]:
    """The fields a refusal names: '<part>: <field>: why; <field>: why' → [field, ...]."""
    body = message.split("Value error, ", 1)[1].split(" [type=", 1)[0]
    assert body.startswith(f"{part}: "), body
    return [problem.split(":", 1)[0] for problem in body.removeprefix(f"{part}: ").split("; ")]


@pytest.mark.parametrize("weights, field, allowed", [
    ({**NVFP4, "group_size": 32}, "group_size", "group_size 16"),
    ({"format": "mxfp4", "bits": 4, "strategy": "group", "group_size": 16}, "group_size", "group_size 32"),
    ({"format": "mxfp4", "bits": 4, "strategy": "channel"}, "group_size", "strategy 'group'"),
    ({**NVFP4, "bits": 8}, "bits", "bits: 4"),
    ({"format": "fp8", "bits": 4, "strategy": "channel"}, "bits", "bits: 8"),
    ({"format": "fp8", "bits": 8, "strategy": "group", "group_size": 64}, "strategy", "'channel', 'tensor'"),
    ({"format": "fp8", "bits": 8, "symmetric": False}, "symmetric", "symmetric: true"),
    ({**NVFP4, "method": "gptq"}, "method", "'rtn'"),
])
def test_weight_shapes_a_format_cannot_hold_are_refused(weights, field, allowed):
    message = refusal({"weights": weights})
    assert field in refused_fields(message, "weights")
    assert allowed in message


@pytest.mark.parametrize("activations, field", [
    ({**NVFP4, "group_size": 32}, "group_size"),
    ({"format": "fp8", "bits": 8, "symmetric": True, "strategy": "group", "group_size": 16}, "strategy"),
    ({"format": "int", "bits": 8, "strategy": "tensor"}, "strategy"),
    ({"format": "fp8", "bits": 8, "symmetric": True, "clip_ratio": 0.9}, "clip_ratio"),
])
def test_activation_shapes_a_format_cannot_hold_are_refused(activations, field):
    message = refusal({"weights": None, "activations": activations})
    assert field in refused_fields(message, "activations")


def test_fp8_kv_cache_is_8_bit_symmetric():
    message = refusal({"weights": None, "kv_cache": {"format": "fp8", "bits": 4, "symmetric": True}})
    assert "kv_cache: bits: fp8 values are 8-bit; got 4" in message


def test_the_ready_made_format_recipes_validate():
    from compressor.spec import load_recipe

    for name in ("w8a8-fp8-dynamic", "w8a8-fp8-static", "w4a8-fp8-gptq", "w4a16-nvfp4", "w4a4-nvfp4-hadamard", "w4a4-mxfp4",
                 "w4a16-hadamard-fused-gptq"):
        load_recipe(name)
