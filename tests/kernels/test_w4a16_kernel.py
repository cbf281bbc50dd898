"""Triton W4A16 (interpreter) against the plain-torch reference."""

import pytest
import torch

pytest.importorskip("triton")

from triton_kernels.packing import pack_int4, packed_width  # noqa: E402
from triton_kernels.w4a16 import dequantize_int4, w4a16_matmul, w4a16_reference  # noqa: E402

N = 73  # odd, not a multiple of BLOCK_N
K_PER_CHANNEL = 203  # odd: the last packed word carries 5 padding nibbles

TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3}


def k_for(group: int | None) -> int:
    """Smallest K with at least two groups (the interpreter's cost grows with K)."""
    return K_PER_CHANNEL if group is None else max(128, 2 * group)


def make_weights(n: int, k: int, group: int | None, asym: bool, dtype: torch.dtype, seed: int):
    """Random int4 weights packed with garbage in the padding nibbles, and strided scales."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(-8, 8, (n, k), dtype=torch.int8, generator=gen)
    qweight = pack_int4(q)
    if k % 8:  # padding nibbles must never be read: make them nonzero
        pad_bits = 0
        for i in range(k % 8, 8):
            pad_bits |= 0xF << (4 * i)
        last = qweight[:, -1].to(torch.int64) | pad_bits
        qweight[:, -1] = torch.where(last >= 2**31, last - 2**32, last).to(torch.int32)
    groups = 1 if group is None else k // group
    scales = torch.rand(n, groups + 1, generator=gen)[:, :groups] * 0.02 + 0.005  # non-contiguous
    zeros = torch.randint(-8, 8, (n, groups), dtype=torch.int8, generator=gen) if asym else None
    return qweight, scales.to(dtype), zeros


def activations_with_canary(m: int, k: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """x [m, k] as a view into a NaN-filled buffer: any unmasked read past K or M poisons y."""
    buf = torch.full((m + 3, k + 16), float("nan"), dtype=dtype)
    buf[:m, :k] = torch.randn(m, k, generator=torch.Generator().manual_seed(seed)).to(dtype)
    return buf[:m, :k]


def assert_matches(y: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    assert y.dtype == ref.dtype and y.shape == ref.shape
    assert torch.isfinite(y).all()
    tol = TOLERANCE[dtype]
    scale = ref.float().abs().max().item()
    torch.testing.assert_close(y.float(), ref.float(), rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("asym", [False, True])
@pytest.mark.parametrize("group", [32, 64, 128, None])
@pytest.mark.parametrize("m", [1, 3, 16])
def test_w4a16_matches_reference(m: int, group: int | None, asym: bool, dtype: torch.dtype) -> None:
    k = k_for(group)
    qweight, scales, zeros = make_weights(N, k, group, asym, dtype, seed=m + k)
    x = activations_with_canary(m, k, dtype, seed=m)
    y = w4a16_matmul(x, qweight, scales, zeros, group, split_k=1)
    assert_matches(y, w4a16_reference(x, qweight, scales, zeros, group), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("group", [32, 64, 128, None])
def test_w4a16_split_k_matches_reference(group: int | None, dtype: torch.dtype) -> None:
    # 3 splits over an uneven number of K-blocks; fp32 atomics into the output, then cast.
    k = k_for(group)
    qweight, scales, zeros = make_weights(N, k, group, True, dtype, seed=k)
    x = activations_with_canary(3, k, dtype, seed=3)
    y = w4a16_matmul(x, qweight, scales, zeros, group, split_k=3)
    assert_matches(y, w4a16_reference(x, qweight, scales, zeros, group), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("group", [32, 128, None])
def test_w4a16_n_contiguous_qweight_matches_reference(group: int | None, dtype: torch.dtype) -> None:
    # qweight transposed in memory (GPTQ order) takes the gather unpack path.
    k = k_for(group)
    qweight, scales, zeros = make_weights(N, k, group, True, dtype, seed=k + 1)
    qweight = qweight.t().contiguous().t()
    assert qweight.stride(1) != 1
    x = activations_with_canary(3, k, dtype, seed=4)
    for split_k in (1, 2):
        y = w4a16_matmul(x, qweight, scales, zeros, group, split_k=split_k)
        assert_matches(y, w4a16_reference(x, qweight, scales, zeros, group), dtype)


def test_reference_is_dense_matmul_of_dequantised_weight() -> None:
    k, group = 64, 32
    qweight, scales, zeros = make_weights(8, k, group, True, torch.float32, seed=0)
    w = dequantize_int4(qweight, scales, zeros, group, k)
    q = w / scales.repeat_interleave(group, 1) + zeros.float().repeat_interleave(group, 1)
    assert torch.allclose(q, q.round(), atol=1e-4) and q.min() >= -16 and q.max() <= 15
    x = torch.randn(3, k)
    torch.testing.assert_close(w4a16_reference(x, qweight, scales, zeros, group), x @ w.t())


def test_group_equal_to_k_is_per_channel_and_batched_shapes() -> None:
    k = 128
    qweight, scales, zeros = make_weights(20, k, None, True, torch.float32, seed=1)
    x = torch.randn(2, 3, k)
    y_pc = w4a16_matmul(x, qweight, scales, zeros, None)
    y_group = w4a16_matmul(x, qweight, scales, zeros, k)
    assert y_pc.shape == (2, 3, 20)
    torch.testing.assert_close(y_pc, y_group)
    torch.testing.assert_close(y_pc, w4a16_reference(x, qweight, scales, zeros, None), rtol=1e-5, atol=1e-5)


def test_several_n_blocks_with_split_k() -> None:
    m, k, n, group = 16, 256, 300, 128  # 3 N-blocks, the last one partial
    qweight, scales, zeros = make_weights(n, k, group, True, torch.float16, seed=2)
    x = activations_with_canary(m, k, torch.float16, seed=2)
    y = w4a16_matmul(x, qweight, scales, zeros, group, split_k=4)
    assert_matches(y, w4a16_reference(x, qweight, scales, zeros, group), torch.float16)


def test_rejects_bad_arguments() -> None:
    qweight, scales, _ = make_weights(8, 64, 32, False, torch.float32, seed=3)
    with pytest.raises(ValueError):
        w4a16_matmul(torch.randn(1, 64), qweight, scales, None, 16)  # group below 32
    with pytest.raises(ValueError):
        w4a16_matmul(torch.randn(1, 72), qweight, scales, None, 32)  # K does not fit qweight
    assert qweight.shape[1] == packed_width(64)


@pytest.mark.parametrize("per_channel", [False, True])
def test_cuda_configs_respect_dot_limits_and_groups(per_channel: bool) -> None:
    from triton_kernels.w4a16 import _prune_w4a16_configs, _w4a16_configs

    configs = _w4a16_configs(interpret=False)
    for c in configs:
        assert min(c.kwargs.values()) >= 16 and c.kwargs["BLOCK_K"] % 8 == 0
    for group in (32, 64, 128, 256):
        for m_bucket in (1, 2, 16, 64, 256):
            args = {"GROUP_SIZE": group, "M_BUCKET": m_bucket}
            kept = _prune_w4a16_configs(configs, args, PER_CHANNEL=per_channel)
            assert kept
            if not per_channel:  # a grouped tile must not straddle two groups' scales
                assert all(group % c.kwargs["BLOCK_K"] == 0 for c in kept)
            assert all(c.kwargs["BLOCK_M"] <= max(16, m_bucket) for c in kept)
    assert len(_w4a16_configs(interpret=True)) == 1  # the interpreter fails with more
