"""Perplexity over non-overlapping windows, and KL divergence to a reference model on the same tokens.

Each window is scored on its own (no context carried over), predicting tokens 2..window
from their prefixes. KL(original ‖ compressed) is averaged over the same predicted tokens,
with full-vocabulary softmaxes, so it sees changes perplexity can hide.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class WindowScores:
    nll_sum: float = 0.0
    ref_nll_sum: float = 0.0
    kl_sum: float = 0.0
    tokens: int = 0

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll_sum / self.tokens)

    @property
    def reference_perplexity(self) -> float:
        return math.exp(self.ref_nll_sum / self.tokens)

    @property
    def kl(self) -> float:
        return self.kl_sum / self.tokens


@torch.no_grad()
def score_windows(
    model: nn.Module,
    windows: torch.Tensor,
    reference: nn.Module | None = None,
    batch_size: int = 2,
    on_batch: Callable[[int, int], None] | None = None,
) -> WindowScores:
    """NLL of `model` on `windows` [n, L]; with `reference`, also its NLL and KL(reference ‖ model)."""
    scores = WindowScores()
    for start in range(0, windows.shape[0], batch_size):
        batch = windows[start : start + batch_size]
        targets = batch[:, 1:].reshape(-1)
        logq = F.log_softmax(model(batch, use_cache=False).logits[:, :-1].float(), dim=-1).flatten(0, 1)
        scores.nll_sum += F.nll_loss(logq, targets, reduction="sum").item()
        if reference is not None:
            logp = F.log_softmax(reference(batch, use_cache=False).logits[:, :-1].float(), dim=-1).flatten(0, 1)
            scores.ref_nll_sum += F.nll_loss(logp, targets, reduction="sum").item()
            scores.kl_sum += (logp.exp() * (logp - logq)).sum().item()
        scores.tokens += targets.numel()
        if on_batch is not None:
            on_batch(min(start + batch_size, windows.shape[0]), windows.shape[0])
    return scores
