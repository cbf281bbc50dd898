"""The learnable transforms of one decoder layer and their initial values.

Convention (row vectors, y = x Wᵀ): for a matrix A between a producer and its readers, the
readers get x A⁻¹ and weights W Aᵀ. Where each A sits in a Llama layer:

- `ln_attn`: input RMSNorm → q/k/v; `ln_mlp`: post-attention RMSNorm → gate/up. Diagonal
  (folded into the norm weight, servable) or dense (its inverse is a run-time matmul).
- `vo`: one head_dim × head_dim matrix per KV head between v_proj and o_proj, applied to the
  o_proj columns of every query head of its group (GQA). Fully fused.
- `qk`: one matrix per KV head between q_proj and k_proj (q ← q A⁻¹, k ← k Aᵀ). RoPE sits
  between these projections and q kᵀ, so A must commute with every RoPE rotation. RoPE
  rotates each pair (i, i + d/2) by a position-dependent angle; the matrices that commute with
  all of them act on each pair as a scaled rotation [[a, b], [−b, a]] (a complex multiplier
  a + ib; row-vector form). That is the form learned here: a per-pair scale and a per-pair
  mixing angle, exact through RoPE. Its off-diagonal entries lie at distance d/2, so the
  gradual mask (counted in the head's own coordinates) unlocks them half-way through.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from compressor.transforms.smoothing import SCALE_FLOOR
from compressor.transforms.affinequant.mask import (
    DominanceCheck,
    band_mask,
    dominance_margins,
    repair_dominance,
)



def rope_pair_matrix(scale: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """[..., d, d] matrices acting on each RoPE pair (i, i + d/2) as [[a, b], [−b, a]] from a = scale, b = mix ([..., d/2])."""
    diag = torch.diag_embed(torch.cat([scale, scale], dim=-1))
    upper = torch.diag_embed(mix)
    zeros = torch.zeros_like(upper)
    off = torch.cat([torch.cat([zeros, upper], dim=-1), torch.cat([-upper, zeros], dim=-1)], dim=-2)
    return diag + off


class DiagonalTransform(nn.Module):
    """A per-channel scale s (A = diag(s)): always dominant, folded into the producer when merged."""

    def __init__(self, init: torch.Tensor):
        super().__init__()
        self.scale = nn.Parameter(init.detach().float().clone())

    def matrix(self, epoch: int) -> torch.Tensor:
        return self.scale

    def check(self, epoch: int, min_margin: float) -> DominanceCheck:
        with torch.no_grad():  # a zero diagonal would not be invertible: keep |s| off zero, sign kept
            tiny = self.scale.abs() < SCALE_FLOOR
            if tiny.any():
                self.scale.copy_(torch.where(tiny, torch.where(self.scale < 0, -SCALE_FLOOR, SCALE_FLOOR), self.scale))
        return DominanceCheck(min_margin=1.0, rows_repaired=int(tiny.sum()), lost_dominance=False)


class MaskedMatrix(nn.Module):
    """[n, D, D] learnable matrices used as A ⊙ M, M the gradual band mask of the epoch."""

    def __init__(self, init_diagonal: torch.Tensor, epochs: int, stability_factor: float, gradual: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.diag_embed(init_diagonal.detach().float()))
        self.epochs, self.stability_factor, self.gradual = epochs, stability_factor, gradual

    def mask(self, epoch: int) -> torch.Tensor:
        return band_mask(self.weight.shape[-1], epoch, self.epochs, self.stability_factor, self.gradual, device=self.weight.device)

    def matrix(self, epoch: int) -> torch.Tensor:
        return self.weight * self.mask(epoch)

    def check(self, epoch: int, min_margin: float) -> DominanceCheck:
        return repair_dominance(self.weight, self.mask(epoch), min_margin)


class RopePairMatrix(nn.Module):
    """[n, d, d] matrices of RoPE-commuting form (see the module docstring), masked like a head_dim matrix."""

    def __init__(self, n: int, head_dim: int, epochs: int, stability_factor: float, gradual: bool):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE pairs need an even head_dim, got {head_dim}")
        self.scale = nn.Parameter(torch.ones(n, head_dim // 2))
        self.mix = nn.Parameter(torch.zeros(n, head_dim // 2))
        self.epochs, self.stability_factor, self.gradual = epochs, stability_factor, gradual

    def mix_mask(self, epoch: int) -> float:
        """The band mask at distance d/2, where every off-diagonal entry of this form lies."""
        d = 2 * self.scale.shape[-1]
        return band_mask(d, epoch, self.epochs, self.stability_factor, self.gradual)[0, d // 2].item()

    def matrix(self, epoch: int) -> torch.Tensor:
        return rope_pair_matrix(self.scale, self.mix * self.mix_mask(epoch))

    @torch.no_grad()
    def check(self, epoch: int, min_margin: float) -> DominanceCheck:
        margins = dominance_margins(self.matrix(epoch))
        tiny = self.scale.abs() < SCALE_FLOOR
        self.scale.copy_(torch.where(tiny, torch.where(self.scale < 0, -SCALE_FLOOR, SCALE_FLOOR), self.scale))
        m = self.mix_mask(epoch)
        bad = (self.mix.abs() * m >= (1.0 - min_margin) * self.scale.abs()) & (m > 0)
        if bad.any():  # |b|·m ← (1 − min_margin)·|a|
            target = (1.0 - min_margin) * self.scale.abs() / m
            self.mix.copy_(torch.where(bad, self.mix.sign() * target, self.mix))
        return DominanceCheck(min_margin=margins.min().item(), rows_repaired=2 * int(bad.sum()), lost_dominance=bool((margins <= 0).any()))


@dataclass
class StepMatrices:
    """The effective matrices of one step and their inverses (float64 inverses, cast back)."""

    matrices: dict[str, torch.Tensor]
    inverses: dict[str, torch.Tensor]


def invert(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of a diagonal (vector) or [..., D, D] matrix, formed in float64 (differentiable)."""
    if matrix.dim() == 1:
        return (1.0 / matrix.double()).to(matrix.dtype)
    return torch.linalg.inv(matrix.double()).to(matrix.dtype)


class LayerTransforms(nn.Module):
    """Every learnable affine transform of one decoder layer."""

    def __init__(self, transforms: dict[str, nn.Module]):
        super().__init__()
        self.transforms = nn.ModuleDict(transforms)

    def step(self, epoch: int) -> StepMatrices:
        mats = {name: t.matrix(epoch) for name, t in self.transforms.items()}
        return StepMatrices(mats, {name: invert(m) for name, m in mats.items()})

    def check(self, epoch: int, min_margin: float) -> dict[str, DominanceCheck]:
        """Check (and repair) every matrix before it is inverted."""
        return {name: t.check(epoch, min_margin) for name, t in self.transforms.items()}

    @torch.no_grad()
    def final(self, epoch: int) -> dict[str, torch.Tensor]:
        """The effective matrices of `epoch` in float64, for the merge."""
        return {name: t.matrix(epoch).double() for name, t in self.transforms.items()}
