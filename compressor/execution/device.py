"""The worker's device and the job's working dtype: `COMPRESSOR_DEVICE` plus `recipe.execution.dtype`.

A worker owns one device (`docker/compose.yaml` runs one Celery worker per GPU, each seeing
its GPU as `cuda:0` through `CUDA_VISIBLE_DEVICES`). `auto` takes that GPU when CUDA is
present, else the CPU. The working dtype follows the device — bfloat16 on a GPU (tensor
cores, half the memory), float32 on the CPU (the bit-identical reference results and the
quality table were made there) — unless the recipe names one. bfloat16/float16 on the CPU
are allowed (they halve the weights' memory) but slow: few CPU kernels are native in 16-bit.

The numerically delicate parts keep their own precision whatever the working dtype:
Hessians and their Cholesky in at least fp32 (fp64 on the CPU), transform fusion in fp64,
KL and log-softmax in fp32 (`DELICATE_DTYPES`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

DEVICE_ENV = "COMPRESSOR_DEVICE"
DEVICE_VALUES = "auto, cpu, cuda, cuda:N"
DTYPES = ("float32", "bfloat16", "float16")
_CUDA_RE = re.compile(r"^cuda(?::(\d+))?$")


@dataclass(frozen=True)
class ExecutionTarget:
    """Where one job runs: `device` as torch spells it (`cpu`, `cuda:0`), its working `dtype` name, the GPU's name."""

    device: str
    dtype: str
    device_name: str | None = None  # e.g. "NVIDIA H200"; None on the CPU
    setting: str = "auto"  # what was asked for (the argument or COMPRESSOR_DEVICE)

    @property
    def kind(self) -> str:
        """`cpu` or `cuda`: what the memory estimate and the worker's memory setting are keyed by."""
        return "cuda" if self.device.startswith("cuda") else "cpu"

    def torch_device(self) -> Any:
        import torch

        return torch.device(self.device)

    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype)

    def describe(self) -> str:
        """`cuda:0 (NVIDIA H200), bfloat16` / `cpu, float32`: the job's event line."""
        where = f"{self.device} ({self.device_name})" if self.device_name else self.device
        return f"{where}, {self.dtype}"


def parse_device_setting(value: str | None) -> str:
    """The normalized device setting (`auto`, `cpu`, `cuda`, `cuda:N`); ValueError naming the setting otherwise."""
    text = (value if value is not None else "auto").strip().lower()
    if text in ("", "auto"):
        return "auto"
    if text == "cpu" or _CUDA_RE.match(text):
        return text
    raise ValueError(f"{DEVICE_ENV}={value!r} is not a device; allowed: {DEVICE_VALUES}")


def resolve_device(setting: str | None = None) -> str:
    """The torch device name for a setting (None: `COMPRESSOR_DEVICE`, default auto).

    `auto` = `cuda:0` when CUDA is present (the worker's GPU), else `cpu`; `cuda`/`cuda:N`
    without CUDA, or N beyond the visible GPUs, is an error saying what there is.
    """
    import torch

    text = parse_device_setting(setting if setting is not None else os.environ.get(DEVICE_ENV))
    if text == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return "cpu"
    index = int(_CUDA_RE.match(text).group(1) or 0)
    if not torch.cuda.is_available():
        raise ValueError(f"{DEVICE_ENV}={text!r}: CUDA is not available on this machine "
                         f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use cpu or auto")
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(f"{DEVICE_ENV}={text!r}: only {count} CUDA device(s) visible "
                         f"(cuda:0..cuda:{count - 1}; CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})")
    return f"cuda:{index}"


def working_dtype(device: str, recipe_dtype: str = "auto") -> str:
    """The weights' dtype: the recipe's `execution.dtype`, or auto = bfloat16 on CUDA, float32 on the CPU."""
    if recipe_dtype == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    if recipe_dtype not in DTYPES:
        raise ValueError(f"execution.dtype: {recipe_dtype!r} is not allowed; allowed: auto, {', '.join(DTYPES)}")
    return recipe_dtype


def execution_target(recipe: Any, device: str | None = None) -> ExecutionTarget:
    """The job's device (argument, else `COMPRESSOR_DEVICE`) and working dtype (from the recipe)."""
    import torch

    setting = parse_device_setting(device if device is not None else os.environ.get(DEVICE_ENV))
    resolved = resolve_device(setting)
    name = torch.cuda.get_device_name(torch.device(resolved)) if resolved.startswith("cuda") else None
    return ExecutionTarget(device=resolved, dtype=working_dtype(resolved, recipe.execution.dtype),
                           device_name=name, setting=setting)


def accumulation_dtype(device: Any) -> Any:
    """Hessians and their Cholesky: float64 on the CPU (today's bit-exact results), float32 on a GPU (fp64 is slow there)."""
    import torch

    return torch.float64 if torch.device(device).type == "cpu" else torch.float32


def device_memory(device: str) -> tuple[int, int]:
    """(available, total) bytes on `device`: free GPU memory (`torch.cuda.mem_get_info`), or the host's available RAM."""
    if device.startswith("cuda"):
        import torch

        free, total = torch.cuda.mem_get_info(torch.device(device))
        return int(free), int(total)
    import psutil

    vm = psutil.virtual_memory()
    return int(vm.available), int(vm.total)


def reset_device_peak(device: str) -> None:
    """Start the GPU's peak-allocation counter afresh for this job (nothing to do on the CPU)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats(torch.device(device))


def peak_device_mb(device: str) -> float | None:
    """Peak memory allocated on the GPU since the job began (None on the CPU)."""
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.max_memory_allocated(torch.device(device)) / 2**20
