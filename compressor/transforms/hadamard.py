"""Hadamard matrices for QuaRot/OSTQuant-style rotations, including non-power-of-two sizes.

Hidden sizes of real LLMs (576, 1536, 4864, 14336, ...) are rarely powers of two, so a
Sylvester construction alone is not enough. We build order n = m·2^k as
kron(H_m, H_{2^k}) where H_m comes from a Paley construction on a prime q:

* Paley I:  m = q + 1,    q prime, q ≡ 3 (mod 4)  (4, 8, 12, 20, 24, 32, 44, 48, ...)
* Paley II: m = 2(q + 1), q prime, q ≡ 1 (mod 4)  (12, 28, 36, 60, 76, 108, 148, ...)

Prime-power fields (e.g. q = 27, 343) are deliberately not implemented.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.linalg
import torch

from compressor.transforms.hadamard_orders import base_kind as _paley_kind
from compressor.transforms.hadamard_orders import decompose as _decompose
from compressor.transforms.hadamard_orders import is_hadamard_size
from compressor.transforms.hadamard_orders import unsupported_reason as _supported_message

__all__ = [
    "apply_hadamard",
    "block_diagonal_hadamard",
    "hadamard_matrix",
    "is_hadamard_size",
    "random_hadamard_matrix",
]


def _jacobsthal(q: int) -> np.ndarray:
    """Q[i, j] = Legendre symbol of (j - i) mod q, as int8."""
    chi = -np.ones(q, dtype=np.int8)
    chi[(np.arange(1, q, dtype=np.int64) ** 2) % q] = 1
    chi[0] = 0
    # circulant(c)[i, j] = c[(i - j) % q]; the transpose gives c[(j - i) % q].
    return np.ascontiguousarray(scipy.linalg.circulant(chi).T)


def _paley1(q: int) -> np.ndarray:
    """Order q+1: I + S with S = [[0, 1ᵀ], [-1, Q]] skew-symmetric, so H Hᵀ = I + S Sᵀ = (q+1) I."""
    s = np.zeros((q + 1, q + 1), dtype=np.int8)
    s[0, 1:] = 1
    s[1:, 0] = -1
    s[1:, 1:] = _jacobsthal(q)
    s[np.diag_indices(q + 1)] += 1
    return s


def _paley2(q: int) -> np.ndarray:
    """Order 2(q+1) from the symmetric conference matrix C = [[0, 1ᵀ], [1, Q]]."""
    c = np.zeros((q + 1, q + 1), dtype=np.int8)
    c[0, 1:] = 1
    c[1:, 0] = 1
    c[1:, 1:] = _jacobsthal(q)
    # ±1 entries become ±[[1, 1], [1, -1]]; the zero diagonal becomes [[1, -1], [-1, -1]].
    plus = np.array([[1, 1], [1, -1]], dtype=np.int8)
    zero = np.array([[1, -1], [-1, -1]], dtype=np.int8)
    return np.kron(c, plus) + np.kron(np.eye(q + 1, dtype=np.int8), zero)


def _sylvester(n: int) -> torch.Tensor:
    h = torch.ones(1, 1, dtype=torch.int8)
    base = torch.tensor([[1, 1], [1, -1]], dtype=torch.int8)
    while h.shape[0] < n:
        h = torch.kron(h, base)
    return h


def _base_matrix(m: int) -> torch.Tensor:
    kind = _paley_kind(m)
    if kind == "sylvester":
        return _sylvester(m)
    if kind == "paley1":
        return torch.from_numpy(_paley1(m - 1))
    return torch.from_numpy(_paley2(m // 2 - 1))


@functools.lru_cache(maxsize=8)
def _hadamard_int8(n: int) -> torch.Tensor:
    # Cached as int8 so an 11008×11008 matrix costs 121 MB rather than ~1 GB in float64.
    dec = _decompose(n)
    if dec is None:
        raise ValueError(_supported_message(n))
    m, k = dec
    return torch.kron(_base_matrix(m), _sylvester(1 << k))


def hadamard_matrix(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """n×n matrix with ±1 entries and H Hᵀ = n·I (unnormalised; divide by sqrt(n) to rotate)."""
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"Hadamard order must be a positive integer, got {n!r}")
    return _hadamard_int8(int(n)).to(dtype=dtype, copy=True)


def _random_signs(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (n,), generator=gen, dtype=torch.int64) * 2 - 1


def random_hadamard_matrix(n: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Orthonormal Q = H·diag(s)/sqrt(n) with seeded ±1 signs s: a random rotation per seed."""
    signs = _random_signs(n, seed).to(torch.float64)
    q = hadamard_matrix(n, torch.float64) * (signs / math.sqrt(n))
    return q.to(dtype)


def block_diagonal_hadamard(
    n: int, block: int, seed: int | None = None, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Orthonormal blockdiag(H_block, ...)/sqrt(block): a rotation that mixes only within blocks
    (e.g. per attention head), with seeded column signs when `seed` is given."""
    if block < 1 or n < 1 or n % block:
        raise ValueError(f"block size {block} must be a positive divisor of n={n}")
    h = hadamard_matrix(block, torch.float64) / math.sqrt(block)
    q = torch.kron(torch.eye(n // block, dtype=torch.float64), h)
    if seed is not None:
        q *= _random_signs(n, seed).to(torch.float64)
    return q.to(dtype)


def apply_hadamard(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """x @ matrix over the last dim, accumulated in float32 (float64 if x is float64) so
    bf16/fp16 activations do not lose precision in the n-term sums; returned in x's dtype."""
    if matrix.ndim != 2 or matrix.shape[0] != x.shape[-1]:
        raise ValueError(
            f"matrix of shape {tuple(matrix.shape)} does not match last dim {x.shape[-1]} of x"
        )
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    out = x.to(compute) @ matrix.to(device=x.device, dtype=compute)
    return out.to(x.dtype)


def apply_random_hadamard(x: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """x @ random_hadamard_matrix(n, seed) without forming the n×n matrix.

    H = H_m ⊗ H_{2^k}, so a row viewed as an m × 2^k matrix X maps to H_mᵀ X H_{2^k}:
    O(n·(m + 2^k)) per row instead of O(n²). Differentiable; keeps x's dtype.
    """
    dec = _decompose(int(n))
    if dec is None:
        raise ValueError(_supported_message(n))
    m, k = dec
    if x.shape[-1] != n:
        raise ValueError(f"last dimension {x.shape[-1]} is not the Hadamard order {n}")
    a = _base_matrix(m).to(x.dtype)
    b = _sylvester(1 << k).to(x.dtype)
    signs = _random_signs(n, seed).to(x.dtype) / math.sqrt(n)
    rows = x.reshape(*x.shape[:-1], m, 1 << k)
    return (a.T @ rows @ b).reshape(x.shape) * signs
