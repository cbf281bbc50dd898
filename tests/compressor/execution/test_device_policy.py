"""The worker's device setting and the working dtype (CPU-only machine: CUDA settings must fail clearly)."""

from __future__ import annotations

import pytest
import torch

from compressor.execution.device import (
    accumulation_dtype,
    execution_target,
    parse_device_setting,
    resolve_device,
    working_dtype,
)
from compressor.spec import Recipe


@pytest.mark.parametrize("value, expected", [(None, "auto"), ("", "auto"), ("AUTO", "auto"), ("cpu", "cpu"),
                                             (" cuda ", "cuda"), ("cuda:3", "cuda:3")])
def test_device_settings_are_normalized(value, expected):
    assert parse_device_setting(value) == expected


@pytest.mark.parametrize("value", ["gpu", "cuda:", "cuda:x", "mps", "cuda0", "cpu:0"])
def test_unknown_device_names_the_setting_and_allowed_values(value):
    with pytest.raises(ValueError, match=r"COMPRESSOR_DEVICE=.*allowed: auto, cpu, cuda, cuda:N"):
        parse_device_setting(value)


def test_env_setting_is_used_when_no_argument(monkeypatch):
    monkeypatch.setenv("COMPRESSOR_DEVICE", "cpu")
    assert resolve_device() == "cpu"
    monkeypatch.setenv("COMPRESSOR_DEVICE", "tpu")
    with pytest.raises(ValueError, match="COMPRESSOR_DEVICE='tpu'"):
        resolve_device()
    assert resolve_device("cpu") == "cpu"  # an explicit argument wins over the environment


def test_auto_takes_the_gpu_only_when_cuda_is_present():
    assert resolve_device("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("value", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_cuda_is_a_clear_error(value):
    with pytest.raises(ValueError, match=r"CUDA is not available on this machine.*use cpu or auto"):
        resolve_device(value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_index_beyond_the_visible_gpus_is_refused():
    n = torch.cuda.device_count()
    with pytest.raises(ValueError, match=rf"only {n} CUDA device"):
        resolve_device(f"cuda:{n}")


def test_working_dtype_follows_the_device_unless_the_recipe_names_one():
    assert working_dtype("cpu") == "float32"
    assert working_dtype("cuda:0") == "bfloat16"
    assert working_dtype("cpu", "bfloat16") == "bfloat16"  # allowed on the CPU (half the memory, slower)
    assert working_dtype("cuda:1", "float32") == "float32"
    with pytest.raises(ValueError, match="execution.dtype: 'int8'.*allowed: auto, float32"):
        working_dtype("cpu", "int8")


def test_execution_target_from_the_recipe():
    recipe = Recipe.model_validate({"execution": {"dtype": "bfloat16"}})
    target = execution_target(recipe, "cpu")
    assert (target.device, target.dtype, target.kind, target.device_name) == ("cpu", "bfloat16", "cpu", None)
    assert target.torch_dtype() is torch.bfloat16 and target.torch_device() == torch.device("cpu")
    assert target.describe() == "cpu, bfloat16"
    assert execution_target(Recipe(), "cpu").dtype == "float32"


def test_hessians_keep_float64_on_the_cpu():
    assert accumulation_dtype("cpu") is torch.float64
    assert accumulation_dtype(torch.device("cuda", 0)) is torch.float32
