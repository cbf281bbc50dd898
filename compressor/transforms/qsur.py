"""QSUR (quantization space utilization rate, OSTQuant §3): how well data fills its quantization grid.

Activations are modelled as N(μ, Σ). The data occupy the α-confidence ellipsoid, of volume
V = π^{d/2}/Γ(d/2+1) · χ²_d(α)^{d/2} · ∏ λᵢ^{1/2}; per-tensor quantization spends a cube whose
side spans the ellipsoid's extreme coordinates, max_j(μ_j + r·σ_j) − min_j(μ_j − r·σ_j) with
r = sqrt(χ²_d(α)). QSUR = V / side^d. Everything is computed in log space: at d = 576 the
ratio itself underflows float64. We report QSUR^{1/d}, the per-dimension utilization.
A rotation leaves ∏λ unchanged but evens out the σ_j (smaller cube); a scaling changes the
λ; rotating onto the eigenbasis and then scaling to equal variances is the optimum.
"""

from __future__ import annotations

import math

import torch
from scipy.stats import chi2


def log_qsur(mean: torch.Tensor, cov: torch.Tensor, alpha: float = 0.99) -> float:
    d = mean.numel()
    mean, cov = mean.double(), cov.double()
    eig = torch.linalg.eigvalsh(cov).clamp_min(1e-30)
    c2 = float(chi2.ppf(alpha, d))
    log_volume = (d / 2) * math.log(math.pi) - math.lgamma(d / 2 + 1) + (d / 2) * math.log(c2) + 0.5 * eig.log().sum().item()
    radius = math.sqrt(c2) * cov.diagonal().clamp_min(0).sqrt()
    side = ((mean + radius).max() - (mean - radius).min()).item()
    return log_volume - d * math.log(side)


def qsur_per_dim(mean: torch.Tensor, cov: torch.Tensor, alpha: float = 0.99) -> float:
    """QSUR^{1/d}: comparable across widths (1 would be a perfectly filled cube)."""
    return math.exp(log_qsur(mean, cov, alpha) / mean.numel())


def transformed_moments(mean: torch.Tensor, cov: torch.Tensor, transform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Moments of x T for row vectors x with moments (mean, cov)."""
    t = transform.double()
    return mean.double() @ t, t.T @ cov.double() @ t


def smoothing_transform(cov: torch.Tensor, mean: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """SmoothQuant-style per-channel division by max|x_j|^α (weights would absorb the inverse)."""
    spread = (mean.double().abs() + 3 * cov.double().diagonal().clamp_min(0).sqrt()).clamp_min(1e-12)
    return torch.diag(spread.pow(-alpha))


def optimal_rotation_scaling(cov: torch.Tensor) -> torch.Tensor:
    """Rotate onto the eigenbasis (KLT) then scale to unit variance: T = Q Λ^{-1/2}."""
    eig, vecs = torch.linalg.eigh(cov.double())
    return vecs @ torch.diag(eig.clamp_min(1e-12).rsqrt())


class ActivationMoments:
    """Running mean and covariance of a linear's inputs (float64, on the inputs' device)."""

    def __init__(self, d: int):
        self.sum = torch.zeros(d, dtype=torch.float64)
        self.outer = torch.zeros(d, d, dtype=torch.float64)
        self.count = 0

    def add(self, x: torch.Tensor) -> None:
        if self.count == 0 and x.device != self.sum.device:
            self.sum, self.outer = self.sum.to(x.device), self.outer.to(x.device)
        x = x.reshape(-1, x.shape[-1]).double()
        self.sum += x.sum(0)
        self.outer += x.T @ x
        self.count += x.shape[0]

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.sum / self.count
        return mean, self.outer / self.count - torch.outer(mean, mean)
