"""Triton activation-sparse GEMV (interpreter) against the plain-torch reference."""

import pytest
import torch

pytest.importorskip("triton")

from triton_kernels.sparse_gemv import fatrelu, sparse_gemv, sparse_gemv_reference  # noqa: E402

TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3}


def sparse_problem(k: int, n: int, density: float, dtype: torch.dtype, column_major: bool, seed: int):
    """FATReLU activation with an all-zero stretch, and NaN weights wherever a_k == 0.

    A kernel that read a skipped column (or multiplied a masked one) would turn y into NaN.
    """
    gen = torch.Generator().manual_seed(seed)
    pre = torch.randn(k, generator=gen)
    threshold = torch.quantile(pre, 1 - density).item() if density < 1 else float("-inf")
    a = fatrelu(pre, threshold)
    a[k // 4: k // 4 + 64] = 0  # whole zero K-blocks exercise the skip branch
    w = torch.randn(n, k, generator=gen)
    w[:, a == 0] = float("nan")
    if column_major:
        w = w.t().contiguous().t()
    return a.to(dtype), w.to(dtype)


@pytest.mark.parametrize("split_k", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("density", [1.0, 0.1])
@pytest.mark.parametrize("k,n", [(200, 73), (512, 96)])
def test_sparse_gemv_matches_reference(k: int, n: int, density: float, dtype: torch.dtype, split_k: int) -> None:
    a, w = sparse_problem(k, n, density, dtype, column_major=True, seed=k + n)
    y = sparse_gemv(a, w, split_k=split_k)
    ref = sparse_gemv_reference(a, w)
    assert y.dtype == dtype and y.shape == (n,)
    assert torch.isfinite(y).all()
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(y.float(), ref.float(), rtol=tol, atol=tol * ref.float().abs().max().item())


def test_row_major_weight_and_2d_activation() -> None:
    a, w = sparse_problem(200, 73, 0.2, torch.float32, column_major=False, seed=1)
    y = sparse_gemv(a[None, :], w)
    assert y.shape == (1, 73)
    torch.testing.assert_close(y[0], sparse_gemv_reference(a, w), rtol=1e-5, atol=1e-5)


def test_all_zero_activation_gives_zero() -> None:
    w = torch.full((40, 96), float("nan"))
    assert torch.equal(sparse_gemv(torch.zeros(96), w), torch.zeros(40))


def test_fatrelu_threshold() -> None:
    x = torch.tensor([-1.0, 0.05, 0.1, 0.5])
    assert torch.equal(fatrelu(x, 0.1), torch.tensor([0.0, 0.0, 0.1, 0.5]))
    assert torch.equal(fatrelu(x, 0.0), torch.relu(x))


def test_rejects_batches() -> None:
    with pytest.raises(ValueError):
        sparse_gemv(torch.ones(2, 8), torch.ones(4, 8))
