"""Seeing each layer's FFN intermediate activation x₁ = act(gate)·up: the input of down_proj.

A forward pre-hook on down_proj receives x₁ exactly as the FFN computed it, whatever wraps
the linear (quantization wrappers rotate inside their own forward), so the same hooks serve
the L1 penalty during training, zero counting in evaluation, and the CETT masks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

# A pre-hook body: (layer index, x₁) -> replacement x₁ or None to leave it.
IntermediateFn = Callable[[int, torch.Tensor], torch.Tensor | None]


def down_projections(model: nn.Module) -> list[nn.Module]:
    """down_proj of every decoder layer, in layer order."""
    return [layer.mlp.down_proj for layer in model.model.layers]


@contextmanager
def intermediate_hooks(model: nn.Module, fn: IntermediateFn) -> Iterator[None]:
    """Call `fn(layer, x₁)` on every down_proj input while the block runs; a returned tensor replaces x₁."""

    def hook(index: int):
        def pre(_module: nn.Module, args: tuple) -> tuple | None:
            out = fn(index, args[0])
            return None if out is None else (out, *args[1:])
        return pre

    handles = [m.register_forward_pre_hook(hook(i)) for i, m in enumerate(down_projections(model))]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@dataclass
class IntermediateStats:
    """Per-layer L1 (graph kept, for the loss) and exact-zero counts of x₁ over the forwards since the last reset."""

    num_layers: int
    l1: list[torch.Tensor] = field(default_factory=list)  # mean |x₁| per layer hooked call, differentiable
    zeros: list[int | torch.Tensor] = field(default_factory=list)  # counted on the device; read once per report
    counts: list[int] = field(default_factory=list)
    track_l1: bool = True

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.l1 = []
        self.zeros = [0] * self.num_layers
        self.counts = [0] * self.num_layers

    def observe(self, layer: int, x: torch.Tensor) -> None:
        if self.track_l1:
            self.l1.append(x.abs().float().mean())
        self.zeros[layer] = self.zeros[layer] + (x == 0).sum()  # no host sync per forward
        self.counts[layer] += x.numel()

    def l1_penalty(self) -> torch.Tensor:
        """Σ over layers of mean |x₁| (mean over tokens and neurons, so λ does not scale with width)."""
        return torch.stack(self.l1).sum() if self.l1 else torch.zeros(())

    def _zero_counts(self) -> list[int]:
        return [int(z) for z in self.zeros]

    def per_layer_sparsity(self) -> list[float]:
        return [z / c if c else 0.0 for z, c in zip(self._zero_counts(), self.counts)]

    def sparsity(self) -> float:
        total = sum(self.counts)
        return sum(self._zero_counts()) / total if total else 0.0


@contextmanager
def tracking(model: nn.Module, track_l1: bool = True) -> Iterator[IntermediateStats]:
    """Collect IntermediateStats of every forward inside the block."""
    stats = IntermediateStats(len(down_projections(model)), track_l1=track_l1)

    def observe(layer: int, x: torch.Tensor) -> None:
        stats.observe(layer, x)

    with intermediate_hooks(model, observe):
        yield stats
