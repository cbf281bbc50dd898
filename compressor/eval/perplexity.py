"""Perplexity over non-overlapping windows, and KL divergence to a reference on the same tokens.

Each window is scored on its own (no context carried over), predicting tokens 2..window
from their prefixes. KL(original ‖ compressed) is averaged over the same predicted tokens,
with full-vocabulary softmaxes, so it sees changes perplexity can hide. Softmaxes are taken
a few positions at a time (`CHUNK_VALUES` logits per tensor: 128 positions of a 128k
vocabulary), so memory holds a few vocabulary-wide rows, not a batch's worth.

Two entries: `score_windows` runs any causal LM on token windows (reloaded checkpoints,
benchmarks); `score_hidden` scores final hidden states the job computed layer by layer,
against the original's hidden states measured before the stages ran (no second model).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

CHUNK_VALUES = 2**24  # logits per softmax chunk (64 MB in fp32); KL keeps about six such tensors alive

Logits = Callable[[torch.Tensor], torch.Tensor]  # final hidden states [tokens, hidden] -> logits [tokens, vocab]


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


def _accumulate(scores: WindowScores, logits_q: Callable[[slice], torch.Tensor], targets: torch.Tensor,
                logits_p: Callable[[slice], torch.Tensor] | None, vocab_size: int) -> None:
    """Add the NLL (and, with `logits_p`, the reference NLL and KL) of predicting `targets`, a chunk of positions at a time."""
    n = targets.numel()
    chunk = max(1, CHUNK_VALUES // vocab_size)
    sums = torch.zeros(3, dtype=torch.float64, device=targets.device)  # nll, reference nll, kl: one host sync per call
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        logq = F.log_softmax(logits_q(rows).float(), dim=-1)
        sums[0] += F.nll_loss(logq, targets[rows], reduction="sum").double()
        if logits_p is not None:
            logp = F.log_softmax(logits_p(rows).float(), dim=-1)
            sums[1] += F.nll_loss(logp, targets[rows], reduction="sum").double()
            sums[2] += (logp.exp() * (logp - logq)).sum().double()
    nll, ref_nll, kl = sums.tolist()
    scores.nll_sum += nll
    scores.ref_nll_sum += ref_nll
    scores.kl_sum += kl
    scores.tokens += n


@torch.no_grad()
def score_windows(
    model: nn.Module,
    windows: torch.Tensor,
    batch_size: int = 2,
    on_batch: Callable[[int, int], None] | None = None,
) -> WindowScores:
    """NLL of a causal LM on `windows` [n, L] (its own forward, whole model)."""
    scores = WindowScores()
    for start in range(0, windows.shape[0], batch_size):
        batch = windows[start : start + batch_size]
        logits = model(batch, use_cache=False).logits[:, :-1].flatten(0, 1)
        _accumulate(scores, lambda rows: logits[rows], batch[:, 1:].reshape(-1).to(logits.device), None, logits.shape[-1])
        if on_batch is not None:
            on_batch(min(start + batch_size, windows.shape[0]), windows.shape[0])
    return scores


@torch.no_grad()
def score_hidden(
    hidden: torch.Tensor,
    windows: torch.Tensor,
    logits: Logits,
    vocab_size: int,
    reference_hidden: torch.Tensor | None = None,
    reference_logits: Logits | None = None,
    on_window: Callable[[int, int], None] | None = None,
) -> WindowScores:
    """NLL of final-norm hidden states `hidden` [n, L, H] of `windows` [n, L]; with a reference, its NLL and the KL to it.

    `vocab_size` (the logits' width) sets how many positions one softmax chunk holds.
    """
    scores = WindowScores()
    n = windows.shape[0]
    for i in range(n):
        h, targets = hidden[i, :-1], windows[i, 1:].to(hidden.device)
        logits_p = None
        if reference_hidden is not None:
            assert reference_logits is not None
            h_ref = reference_hidden[i, :-1]
            logits_p = lambda rows, h_ref=h_ref: reference_logits(h_ref[rows])  # noqa: E731
        _accumulate(scores, lambda rows, h=h: logits(h[rows]), targets, logits_p, vocab_size)
        if on_window is not None:
            on_window(i + 1, n)
    return scores
