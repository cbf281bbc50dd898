"""x (L ⊗ R) without forming the Kronecker product: the online input transform of layer-wise learned transforms.

For a row vector x of width a·b read row-major as X [a, b], x (L ⊗ R) = vec(Lᵀ X R): two small
matmuls (a² b + a b² multiply-adds per token) instead of one (a b)² GEMM, and a + b squared
factors stored instead of an (a b)² matrix. FlatQuant's reason for the form.
"""

from __future__ import annotations

import math

import torch


def kronecker_factor_sizes(n: int) -> tuple[int, int]:
    """(a, b) with a · b = n, a ≤ b, a the largest divisor of n not above √n (1 × n for a prime)."""
    a = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return a, n // a


def kron_apply(x: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """x (left ⊗ right) over the last dimension of x (width left.shape[0] · right.shape[0])."""
    a, b = left.shape[0], right.shape[0]
    grid = x.reshape(*x.shape[:-1], a, b)
    return (left.transpose(0, 1) @ grid @ right).reshape(x.shape)


def kron_dense(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """The (a b) × (a b) matrix left ⊗ right (for export and tests; never on the hot path)."""
    return torch.kron(left.contiguous(), right.contiguous())
