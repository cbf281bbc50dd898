"""compressor: compress causal LMs (rotations, learned transforms, GPTQ, sparsity) and report the cost.

`compressor.run(spec, out_dir)` is the single entry point; it is imported lazily so that
`compressor.spec` stays importable without torch (the API process never loads torch).
`compressor.load(folder)` loads an exported artifact for inference (QuantLinear layers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from compressor.pipeline import RunResult

__all__ = ["RunResult", "load", "run"]


def run(*args: Any, **kwargs: Any) -> RunResult:
    from compressor.pipeline import run as _run

    return _run(*args, **kwargs)


def load(*args: Any, **kwargs: Any) -> nn.Module:
    from compressor.inference.loader import load as _load

    return _load(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "RunResult":
        from compressor.pipeline import RunResult

        return RunResult
    raise AttributeError(name)
