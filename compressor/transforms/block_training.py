"""What the block-wise training loops (AffineQuant, FlatQuant-style) share: the loss, its logit lens, one guarded step.

Objectives: `mse` of the block outputs, or `kl_top` through the logit lens: each block's output
is read by the model's own final norm and lm_head, and the KL-Top of the original's logits to
the quantized block's logits is minimized on `kl_top_positions` random positions per sample.
A config passed here needs `loss`, `kl_top_k` and `kl_top_positions`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compressor.models.adapter import DecoderAdapter
from compressor.quant.kl_top import kl_top_loss


class LogitLens(nn.Module):
    """The model's final norm and lm_head, read from any layer's output (frozen)."""

    def __init__(self, model: nn.Module, adapter: DecoderAdapter):
        super().__init__()
        self.norm, self.head = adapter.final_norm(model), adapter.lm_head(model)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(hidden))


def block_loss(
    out: torch.Tensor, target: torch.Tensor, aug_target: torch.Tensor | None, cfg: Any,
    lens: LogitLens | None, generator: torch.Generator,
) -> torch.Tensor:
    targets = [target] if aug_target is None else [target, aug_target]
    if cfg.loss == "mse":
        return sum(F.mse_loss(out, t) for t in targets)
    positions = torch.randperm(out.shape[1], generator=generator)[: cfg.kl_top_positions].sort().values
    student = lens(out[:, positions])
    with torch.no_grad():
        teachers = [lens(t[:, positions]) for t in targets]
    return sum(kl_top_loss(t, student, cfg.kl_top_k) for t in teachers)


def guarded_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> float | None:
    """One optimizer step on a finite loss (its value); a non-finite loss takes no step (None)."""
    if not torch.isfinite(loss):
        return None
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()
