"""Hadamard constructions: orthogonality, structure, determinism and error reporting."""

from __future__ import annotations

import math

import pytest
import scipy.linalg
import torch

from compressor.transforms.hadamard import (
    apply_hadamard,
    block_diagonal_hadamard,
    hadamard_matrix,
    is_hadamard_size,
    random_hadamard_matrix,
)

# Sylvester (2, 64), Paley I (12, 20), Paley II (28, 36) and Kronecker products of them with
# powers of two: 576 = 36·16 (SmolLM2 hidden), 1536 = 12·128 (SmolLM2 MLP).
FULL_CHECK_SIZES = [2, 12, 20, 28, 36, 64, 576, 1536]
# 3584 = 28·128 and 4864 = 76·64: an n³ Gram matrix is seconds on a small CPU, so these are
# checked with random probes instead (O(n²), and any Q Qᵀ ≠ I is caught with probability 1).
PROBE_CHECK_SIZES = [3584, 4864]


@pytest.mark.parametrize("n", FULL_CHECK_SIZES)
def test_random_hadamard_is_orthonormal(n: int) -> None:
    q = random_hadamard_matrix(n, seed=0)
    assert q.shape == (n, n) and q.dtype == torch.float64
    assert (q @ q.T - torch.eye(n, dtype=torch.float64)).abs().max().item() < 1e-10


@pytest.mark.parametrize("n", PROBE_CHECK_SIZES)
def test_large_random_hadamard_is_orthonormal_on_probes(n: int) -> None:
    q = random_hadamard_matrix(n, seed=1)
    v = torch.randn(n, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert (q @ (q.T @ v) - v).abs().max().item() < 1e-10
    assert (q.T @ (q @ v) - v).abs().max().item() < 1e-10


@pytest.mark.parametrize("n", FULL_CHECK_SIZES + PROBE_CHECK_SIZES)
def test_entries_are_plus_minus_one(n: int) -> None:
    h = hadamard_matrix(n)
    assert h.shape == (n, n)
    assert bool((h.abs() == 1).all())


@pytest.mark.parametrize("n", FULL_CHECK_SIZES)
def test_gram_matrix_is_n_identity(n: int) -> None:
    h = hadamard_matrix(n)
    assert torch.equal(h @ h.T, n * torch.eye(n, dtype=torch.float64))


@pytest.mark.parametrize("n", [2, 16, 64, 1024])
def test_powers_of_two_match_scipy_sylvester(n: int) -> None:
    expected = torch.from_numpy(scipy.linalg.hadamard(n)).to(torch.float64)
    assert torch.equal(hadamard_matrix(n), expected)


@pytest.mark.parametrize("n", [4 * 3, 20, 44, 84])
def test_paley_one_is_skew_hadamard(n: int) -> None:
    # Paley I gives H = I + S with S skew-symmetric, so H + Hᵀ = 2I.
    h = hadamard_matrix(n)
    assert torch.equal(h + h.T, 2 * torch.eye(n, dtype=torch.float64))


@pytest.mark.parametrize("n, m", [(576, 36), (1536, 12), (4864, 76), (3584, 28)])
def test_largest_power_of_two_kronecker_structure(n: int, m: int) -> None:
    expected = torch.kron(
        hadamard_matrix(m), torch.from_numpy(scipy.linalg.hadamard(n // m)).to(torch.float64)
    )
    assert torch.equal(hadamard_matrix(n), expected)


def test_returned_matrix_is_a_copy_of_the_cache() -> None:
    h = hadamard_matrix(12)
    h.zero_()
    assert bool((hadamard_matrix(12).abs() == 1).all())


def test_dtype_argument() -> None:
    assert hadamard_matrix(12, dtype=torch.bfloat16).dtype == torch.bfloat16
    assert random_hadamard_matrix(64, seed=0, dtype=torch.float32).dtype == torch.float32


def test_random_hadamard_is_deterministic_per_seed() -> None:
    a = random_hadamard_matrix(576, seed=3)
    assert torch.equal(a, random_hadamard_matrix(576, seed=3))
    b = random_hadamard_matrix(576, seed=4)
    assert not torch.equal(a, b)
    # Same H, different column signs: every column agrees up to sign.
    col_sign = (a * b).sum(dim=0)
    assert torch.allclose(col_sign.abs(), torch.ones(576, dtype=torch.float64))
    assert bool((col_sign < 0).any()) and bool((col_sign > 0).any())
    # And it is H·diag(s)/sqrt(n).
    h = hadamard_matrix(576)
    s = (a * math.sqrt(576) / h)[0]
    assert torch.allclose(a, h * s / math.sqrt(576))


@pytest.mark.parametrize("n", [4096, 11008, 14336, 3584, 4864, 18944, 576, 1536, 64])
def test_common_llm_sizes_are_supported(n: int) -> None:
    assert is_hadamard_size(n)


@pytest.mark.parametrize("n", [22, 26, 3, 6, 116, 0, -4])
def test_unsupported_sizes_raise(n: int) -> None:
    assert not is_hadamard_size(n)
    with pytest.raises(ValueError, match="unsupported|positive"):
        hadamard_matrix(n)


def test_unsupported_message_lists_supported_orders() -> None:
    with pytest.raises(ValueError) as err:
        hadamard_matrix(26)
    msg = str(err.value)
    assert "26" in msg and "unsupported" in msg
    assert "Paley" in msg and "12, 20, 24, 28" in msg


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_apply_hadamard_matches_matmul(dtype: torch.dtype) -> None:
    q = random_hadamard_matrix(576, seed=0)
    x = torch.randn(3, 5, 576, generator=torch.Generator().manual_seed(0)).to(dtype)
    y = apply_hadamard(x, q)
    assert y.dtype == dtype and y.shape == x.shape
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    expected = (x.to(compute) @ q.to(compute)).to(dtype)
    assert torch.equal(y, expected)


def test_apply_hadamard_preserves_norms() -> None:
    q = random_hadamard_matrix(1536, seed=5)
    x = torch.randn(16, 1536, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = apply_hadamard(x, q)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), rtol=1e-12, atol=0)
    # And it is invertible by the transpose.
    assert torch.allclose(apply_hadamard(y, q.T), x, rtol=0, atol=1e-12)


def test_apply_hadamard_rejects_mismatched_matrix() -> None:
    with pytest.raises(ValueError, match="does not match"):
        apply_hadamard(torch.zeros(2, 64), random_hadamard_matrix(12, seed=0))


@pytest.mark.parametrize("seed", [None, 7])
def test_block_diagonal_hadamard(seed: int | None) -> None:
    n, block = 576, 64
    q = block_diagonal_hadamard(n, block, seed=seed)
    assert (q @ q.T - torch.eye(n, dtype=torch.float64)).abs().max().item() < 1e-10
    mask = torch.kron(torch.eye(n // block), torch.ones(block, block)).bool()
    assert bool((q[~mask] == 0).all())
    assert bool((q[mask].abs() == 1 / math.sqrt(block)).all())
    h = hadamard_matrix(block) / math.sqrt(block)
    first = q[:block, :block]
    if seed is None:
        assert torch.equal(first, h)
        assert torch.equal(q[-block:, -block:], h)
    else:
        assert torch.equal(q, block_diagonal_hadamard(n, block, seed=seed))
        assert not torch.equal(q, block_diagonal_hadamard(n, block, seed=seed + 1))
        # Each block is H·diag(s) for some signs s.
        signs = (first * h).sum(dim=0)
        assert torch.allclose(signs.abs(), torch.ones(block, dtype=torch.float64))


@pytest.mark.parametrize("n, block", [(576, 100), (64, 0), (60, 30)])
def test_block_diagonal_hadamard_rejects_bad_blocks(n: int, block: int) -> None:
    with pytest.raises(ValueError):
        block_diagonal_hadamard(n, block)
