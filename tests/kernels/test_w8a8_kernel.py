"""Triton W8A8 (interpreter) against the plain-torch reference."""

import pytest
import torch

pytest.importorskip("triton")

from triton_kernels.w8a8 import (  # noqa: E402
    int8_matmul,
    int8_matmul_reference,
    quantize_per_channel_int8,
    quantize_per_token_int8,
    w8a8_linear,
    w8a8_reference,
)

SHAPES = [(200, 73), (77, 5)]  # K and N not multiples of the blocks


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("k,n", SHAPES)
@pytest.mark.parametrize("m", [1, 3, 16])
def test_w8a8_matches_reference(m: int, k: int, n: int, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(m * k)
    w_q, w_scale = quantize_per_channel_int8(torch.randn(n, k, generator=gen))
    buf = torch.full((m + 2, k + 16), float("nan"), dtype=dtype)  # canary past K and M
    buf[:m, :k] = torch.randn(m, k, generator=gen).to(dtype)
    x = buf[:m, :k]
    y = w8a8_linear(x, w_q, w_scale)
    ref = w8a8_reference(x, w_q, w_scale)
    assert y.dtype == dtype and y.shape == (m, n)
    # int32 accumulation is exact and the epilogue multiplies in the reference's order.
    torch.testing.assert_close(y, ref, rtol=0, atol=0)


def test_int8_matmul_is_exact_on_integers() -> None:
    gen = torch.Generator().manual_seed(0)
    x_q = torch.randint(-127, 128, (16, 130), dtype=torch.int8, generator=gen)
    w_q = torch.randint(-127, 128, (33, 130), dtype=torch.int8, generator=gen)
    ones_m, ones_n = torch.ones(16), torch.ones(33)
    y = int8_matmul(x_q, ones_m, w_q, ones_n)
    assert torch.equal(y, (x_q.long() @ w_q.long().t()).float())
    assert torch.equal(y, int8_matmul_reference(x_q, ones_m, w_q, ones_n))


def test_quantize_per_token_roundtrip() -> None:
    x = torch.randn(5, 64)
    x[2] = 0  # an all-zero token must not divide by zero
    q, scale = quantize_per_token_int8(x)
    assert q.dtype == torch.int8 and scale.shape == (5,)
    assert q.abs().max() <= 127 and torch.equal(q[2], torch.zeros(64, dtype=torch.int8))
    err = (q.float() * scale[:, None] - x).abs()
    assert (err <= scale[:, None] / 2 + 1e-6).all()


def test_cuda_configs_respect_int8_dot_limits() -> None:
    from triton_kernels.w8a8 import _int8_configs, _prune_int8_configs

    configs = _int8_configs(interpret=False)
    assert all(c.kwargs["BLOCK_M"] >= 16 and c.kwargs["BLOCK_N"] >= 16 and c.kwargs["BLOCK_K"] >= 32
               for c in configs)
    for m_bucket in (1, 16, 256):
        kept = _prune_int8_configs(configs, {"M_BUCKET": m_bucket})
        assert kept and all(c.kwargs["BLOCK_M"] <= max(16, m_bucket) for c in kept)
    assert len(_int8_configs(interpret=True)) == 1
