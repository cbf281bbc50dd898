"""Activation-sparsity metrics: exact zeros of x₁, and the CETT-based PPL-p% sparsity (Sparsing Law).

PPL-p% sparsity asks how many FFN neurons can be switched off before perplexity rises by
p%. A neuron i of a layer contributes nᵢ = x₁,ᵢ·W_down[:, i] (norm |x₁,ᵢ|·‖W_down[:, i]‖);
dropping those with norm < ε costs the relative error CETT = ‖Σ_dropped nᵢ‖ / ‖FFN(x)‖.
Two nested bisections: per layer, ε such that the token-mean CETT equals a target (on
intermediates of the dense model); across layers, the one target CETT whose masked model's
perplexity is (1 + p/100) × the unmasked one. It needs no ReLU, so it also rates SiLU models.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from compressor.eval.perplexity import score_windows
from compressor.quant.compressed_linear import plain_linear
from compressor.sparsity.intermediate import down_projections, intermediate_hooks, tracking


@torch.no_grad()
def activation_sparsity(model: nn.Module, windows: torch.Tensor, batch_size: int = 2) -> list[float]:
    """Per layer, the fraction of exact zeros in x₁ over `windows` [n, L]."""
    with tracking(model, track_l1=False) as stats:
        for batch in windows.split(batch_size):
            model(batch, use_cache=False)
    return stats.per_layer_sparsity()


# --------------------------------------------------------------------------- CETT, one layer


@dataclass
class LayerSample:
    """Dense-model intermediates of one layer and what CETT needs of its down projection."""

    x1: torch.Tensor  # [T, d_ff]
    weight: torch.Tensor  # down_proj weight [hidden, d_ff]
    column_norms: torch.Tensor = field(init=False)  # ‖W_down[:, i]‖
    output_norms: torch.Tensor = field(init=False)  # ‖FFN(x)‖ per token

    def __post_init__(self) -> None:
        self.column_norms = self.weight.norm(dim=0)
        self.output_norms = (self.x1 @ self.weight.T).norm(dim=-1).clamp_min(1e-12)

    def neuron_norms(self) -> torch.Tensor:
        return self.x1.abs() * self.column_norms

    def cett(self, eps: float) -> float:
        """Token-mean relative error of dropping every neuron whose output norm is below `eps`."""
        dropped = self.x1 * (self.neuron_norms() < eps)
        return ((dropped @ self.weight.T).norm(dim=-1) / self.output_norms).mean().item()


def threshold_for_cett(sample: LayerSample, target: float, iters: int = 24, rtol: float = 2e-3) -> float:
    """Largest-found ε on neuron output norm whose CETT is at most `target` (bisection; CETT grows with ε)."""
    if target <= 0:
        return 0.0
    lo, hi = 0.0, sample.neuron_norms().max().item() * (1 + 1e-6)
    if sample.cett(hi) <= target:
        return hi
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        value = sample.cett(mid)
        if value <= target:
            lo = mid
            if target - value <= rtol * target:
                break
        else:
            hi = mid
    return lo


@torch.no_grad()
def collect_layer_samples(model: nn.Module, windows: torch.Tensor, batch_size: int = 2) -> list[LayerSample]:
    """x₁ of every layer on `windows` (dense model), paired with its down_proj weight."""
    chunks: dict[int, list[torch.Tensor]] = {}

    def keep(layer: int, x: torch.Tensor) -> None:
        chunks.setdefault(layer, []).append(x.detach().float().flatten(0, -2))

    with intermediate_hooks(model, keep):
        for batch in windows.split(batch_size):
            model(batch, use_cache=False)
    weights = [plain_linear(m).weight.detach().float() for m in down_projections(model)]
    return [LayerSample(torch.cat(chunks[i]), weights[i]) for i in range(len(weights))]


# --------------------------------------------------------------------------- PPL-p%


@dataclass
class MaskedScore:
    nll: float  # mean per token
    per_layer: list[float]  # fraction of x₁ entries inactive (zero or masked)


@torch.no_grad()
def masked_score(model: nn.Module, windows: torch.Tensor, thresholds: list[float], column_norms: list[torch.Tensor],
                 batch_size: int = 2) -> MaskedScore:
    """Mean NLL with every neuron whose output norm is below its layer's threshold switched off, and the inactive fractions."""
    inactive = [0] * len(thresholds)
    counts = [0] * len(thresholds)

    def mask(layer: int, x: torch.Tensor) -> torch.Tensor:
        keep = (x.abs() * column_norms[layer].to(x.dtype)) >= thresholds[layer]
        keep &= x != 0
        inactive[layer] += int((~keep).sum().item())
        counts[layer] += keep.numel()
        return x * keep.to(x.dtype)

    with intermediate_hooks(model, mask):
        scores = score_windows(model, windows, batch_size=batch_size)
    return MaskedScore(scores.nll_sum / scores.tokens, [i / c for i, c in zip(inactive, counts)])


def ppl_p_sparsity(
    model: nn.Module, eval_windows: torch.Tensor, sample_windows: torch.Tensor, p: float = 1.0, iters: int = 9,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """CETT-based PPL-p% sparsity: bisection over the shared CETT so perplexity rises by at most p%.

    `eval_windows` score perplexity at each probe; `sample_windows` supply the dense
    intermediates on which the per-layer thresholds are searched (fewer tokens is fine).
    """
    target_ratio = 1 + p / 100
    dense = score_windows(model, eval_windows)
    dense_nll = dense.nll_sum / dense.tokens
    samples = collect_layer_samples(model, sample_windows)
    norms = [s.column_norms for s in samples]
    lo, hi = 0.0, 1.0
    best: dict[str, Any] | None = None
    probes = []
    for _ in range(iters):
        cett = 0.5 * (lo + hi)
        thresholds = [threshold_for_cett(s, cett) for s in samples]
        score = masked_score(model, eval_windows, thresholds, norms)
        ratio = math.exp(score.nll - dense_nll)
        probe = {"cett": cett, "ppl_ratio": ratio, "sparsity": sum(score.per_layer) / len(score.per_layer)}
        probes.append(probe)
        if on_step is not None:
            on_step(probe)
        if ratio <= target_ratio:
            lo = cett
            best = {**probe, "per_layer": score.per_layer, "thresholds": thresholds}
        else:
            hi = cett
    if best is None:  # even the smallest probe costs more than p%: count exact zeros only
        score = masked_score(model, eval_windows, [0.0] * len(samples), norms)
        best = {"cett": 0.0, "ppl_ratio": 1.0, "sparsity": sum(score.per_layer) / len(score.per_layer),
                "per_layer": score.per_layer, "thresholds": [0.0] * len(samples)}
    return {"p": p, **best, "dense_perplexity": math.exp(dense_nll), "probes": probes,
            "eval_tokens": int(eval_windows.numel()), "sample_tokens": int(sample_windows.numel())}
