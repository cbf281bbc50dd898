"""The ProSparse λ schedule (Algorithm 1 of the paper): flat warm-up, then stage-wise sine ramps.

Pure and torch-free so its shape is easy to test. Stage 1 holds λ₁ for its steps; stage
i ≥ 2 moves from λ_{i-1} to λ_i with η = ½[sin(−π/2 + π·f) + 1], f the fraction of the stage
done, so λ starts and ends each ramp with zero slope and never jumps. Equal consecutive
peaks give a flat stage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def sine_ramp(fraction: float) -> float:
    """η(f) = ½[sin(−π/2 + π·f) + 1]: 0 at f = 0, 1 at f = 1, flat at both ends."""
    f = min(max(fraction, 0.0), 1.0)
    return 0.5 * (math.sin(-math.pi / 2 + math.pi * f) + 1.0)


def stage_boundaries(stage_steps: Sequence[int]) -> list[int]:
    """Cumulative last step of each stage (T₁ < T₂ < …)."""
    out, total = [], 0
    for n in stage_steps:
        if n < 1:
            raise ValueError("every stage needs at least one step")
        total += n
        out.append(total)
    return out


def stage_of(step: int, stage_steps: Sequence[int]) -> int:
    """0-based stage index of a 1-based step (steps past the end belong to the last stage)."""
    for i, end in enumerate(stage_boundaries(stage_steps)):
        if step <= end:
            return i
    return len(stage_steps) - 1


def lambda_at(step: int, lambdas: Sequence[float], stage_steps: Sequence[int]) -> float:
    """λ at 1-based optimizer `step`: λ₁ through stage 1, sine ramps between peaks after it, λ_S past the end."""
    if len(lambdas) != len(stage_steps) or not lambdas:
        raise ValueError("one peak per stage")
    ends = stage_boundaries(stage_steps)
    if step <= ends[0]:
        return float(lambdas[0])
    for i in range(1, len(ends)):
        if step <= ends[i]:
            fraction = (step - ends[i - 1]) / (ends[i] - ends[i - 1])
            return float(lambdas[i - 1] + sine_ramp(fraction) * (lambdas[i] - lambdas[i - 1]))
    return float(lambdas[-1])
