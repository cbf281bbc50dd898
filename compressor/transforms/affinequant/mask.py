"""The gradual mask and the diagonal-dominance guard of AffineQuant's matrices.

A dense learned matrix can turn singular, and its inverse is applied to activations at every
step. AffineQuant keeps it invertible by the Levy–Desplanques theorem: a strictly diagonally
dominant matrix (|a_ii| > Σ_{j≠i} |a_ij| for every row) is invertible. Off-diagonals are
unlocked a band at a time, from the diagonal alone at the first epoch to dense at the last,
and damped by the stability factor sf. The released code never checks dominance; here every
masked matrix is checked before it is inverted, and rows that lost it are repaired by
shrinking their off-diagonal entries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def band_count(epoch: int, epochs: int, size: int) -> int:
    """Bands unlocked at `epoch` (0-based): n_e = ⌊(D−1)·e/(E−1)⌋ + 1, so 1 (diagonal) at e = 0 and D (dense) at e = E−1."""
    if epochs < 2:
        return 1
    return (size - 1) * epoch // (epochs - 1) + 1


def band_mask(size: int, epoch: int, epochs: int, stability_factor: float, gradual: bool = True,
              device: torch.device | str | None = None) -> torch.Tensor:
    """[size, size] mask: 1 on the diagonal, sf where 0 < |i−j| < n_e, 0 elsewhere (identity when not gradual)."""
    if not gradual:
        return torch.eye(size, device=device)
    idx = torch.arange(size, device=device)
    distance = (idx[:, None] - idx[None, :]).abs()
    mask = torch.where(distance < band_count(epoch, epochs, size), stability_factor, 0.0)
    mask.fill_diagonal_(1.0)
    return mask


def dominance_margins(matrix: torch.Tensor) -> torch.Tensor:
    """Per row of [..., D, D]: (|a_ii| − Σ_{j≠i} |a_ij|) / |a_ii|, positive iff the row is strictly dominant."""
    absolute = matrix.detach().abs()
    diag = absolute.diagonal(dim1=-2, dim2=-1)
    off = absolute.sum(dim=-1) - diag
    return (diag - off) / diag.clamp_min(torch.finfo(absolute.dtype).tiny)


@dataclass
class DominanceCheck:
    """What one check saw (before any repair) and did."""

    min_margin: float
    rows_repaired: int
    lost_dominance: bool  # some row had margin <= 0: not strictly dominant


@torch.no_grad()
def repair_dominance(weight: torch.Tensor, mask: torch.Tensor, min_margin: float) -> DominanceCheck:
    """Make every row of the effective matrix `weight ⊙ mask` keep a relative margin of at least `min_margin`.

    Rows below it get their off-diagonal entries of `weight` (a parameter, changed in place)
    scaled by (1 − min_margin)·|a_ii| / Σ_{j≠i}|a_ij ⊙ m_ij|, which sets their margin to exactly
    `min_margin`; the diagonal is left alone, so the repair only ever moves towards a
    diagonal (SmoothQuant-like) transform.
    """
    effective = weight * mask
    margins = dominance_margins(effective)
    bad = margins < min_margin
    if bad.any():
        absolute = effective.abs()
        diag = absolute.diagonal(dim1=-2, dim2=-1)
        off = absolute.sum(dim=-1) - diag
        factor = torch.where(bad, (1.0 - min_margin) * diag / off.clamp_min(torch.finfo(off.dtype).tiny), torch.ones_like(off))
        eye = torch.eye(weight.shape[-1], dtype=torch.bool, device=weight.device)
        weight.copy_(torch.where(eye, weight, weight * factor.unsqueeze(-1)))
    return DominanceCheck(min_margin=margins.min().item(), rows_repaired=int(bad.sum()), lost_dominance=bool((margins <= 0).any()))
