"""QSUR: the paper's ordering on Gaussian data, and no underflow at model widths."""

import math

import torch

from compressor.transforms.hadamard import random_hadamard_matrix
from compressor.transforms.qsur import (
    ActivationMoments,
    optimal_rotation_scaling,
    qsur_per_dim,
    smoothing_transform,
    transformed_moments,
)


def anisotropic_gaussian(d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    eig = torch.logspace(-1, 1, d, dtype=torch.float64)  # correlated, elongated
    cov = q @ torch.diag(eig) @ q.T
    scale = torch.ones(d, dtype=torch.float64)
    scale[: max(1, d // 8)] = 5.0  # a few outlier channels
    cov = scale[:, None] * cov * scale[None, :]
    return torch.zeros(d, dtype=torch.float64), cov


def test_paper_ordering_original_smoothing_rotation_rotation_scaling():
    for d in (16, 64, 256):
        mean, cov = anisotropic_gaussian(d)
        original = qsur_per_dim(mean, cov)
        smoothing = qsur_per_dim(*transformed_moments(mean, cov, smoothing_transform(cov, mean)))
        rotation = qsur_per_dim(*transformed_moments(mean, cov, random_hadamard_matrix(d, seed=1)))
        both = qsur_per_dim(*transformed_moments(mean, cov, optimal_rotation_scaling(cov)))
        assert original < smoothing < rotation < both, (d, original, smoothing, rotation, both)
        assert both <= 1.0


def test_no_underflow_at_model_width():
    d = 1536
    mean, cov = torch.zeros(d, dtype=torch.float64), torch.diag(torch.logspace(-3, 3, d, dtype=torch.float64))
    value = qsur_per_dim(mean, cov)
    assert 0 < value < 1 and math.isfinite(value)


def test_rotation_invariance_of_the_volume_term():
    mean, cov = anisotropic_gaussian(32)
    q = random_hadamard_matrix(32, seed=2)
    m2, c2 = transformed_moments(mean, cov, q)
    torch.testing.assert_close(torch.linalg.eigvalsh(c2), torch.linalg.eigvalsh(cov))


def test_running_moments_match_direct():
    x = torch.randn(3, 50, 8, dtype=torch.float64) * 3 + 1
    m = ActivationMoments(8)
    for chunk in x:
        m.add(chunk)
    mean, cov = m.moments()
    flat = x.reshape(-1, 8)
    torch.testing.assert_close(mean, flat.mean(0))
    torch.testing.assert_close(cov, torch.cov(flat.T, correction=0))
