"""QuantLinear: every CPU path (native torch ops, interpreted Triton) against the reference."""

import importlib.util

import pytest
import torch
from torch import nn

from triton_kernels.packing import unpack_int4
from triton_kernels.quant_linear import QuantLinear, rtn_quantize_int4

HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")

N = 73  # odd: the native int4 op needs N % 16 == 0, so this exercises its padding
K_PER_CHANNEL = 200  # not a multiple of 32: exercises the native op's K padding


def k_for(group: int | None) -> int:
    return K_PER_CHANNEL if group is None else max(128, 2 * group)


def linear(k: int, n: int, seed: int, dtype: torch.dtype = torch.float32) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(k, n, bias=True).to(dtype)


def relative_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    return ((y.float() - ref.float()).norm() / ref.float().norm()).item()


def assert_bf16_close(y: torch.Tensor, ref: torch.Tensor) -> None:
    """Native ops take bf16 activations: ~3 significant digits."""
    assert y.dtype == ref.dtype and y.shape == ref.shape
    assert relative_error(y, ref) < 1e-2
    torch.testing.assert_close(y.float(), ref.float(), rtol=3e-2, atol=3e-2 * ref.float().abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group", [32, 64, 128, None])
@pytest.mark.parametrize("m", [1, 3, 16])
def test_native_int4_matches_reference(m: int, group: int | None, symmetric: bool, dtype: torch.dtype) -> None:
    k = k_for(group)
    layer = QuantLinear.from_linear(linear(k, N, seed=m + k, dtype=dtype), 4, group, symmetric)
    x = torch.randn(m, k).to(dtype)
    layer.backend = "reference"
    ref = layer(x)
    layer.backend = "native"
    assert_bf16_close(layer(x), ref)


@pytest.mark.parametrize("group", [256, 512])
def test_native_int4_regroups_large_groups(group: int) -> None:
    # 512 is not a native group: it is re-expressed as 256 with repeated scales.
    layer = QuantLinear.from_linear(linear(1024, 32, seed=group), 4, group, symmetric=False)
    x = torch.randn(3, 1024)
    layer.backend = "reference"
    ref = layer(x)
    layer.backend = "native"
    assert_bf16_close(layer(x), ref)


@pytest.mark.parametrize("quantize_activations", [False, True])
@pytest.mark.parametrize("m", [1, 3, 16])
def test_native_int8_matches_reference(m: int, quantize_activations: bool) -> None:
    layer = QuantLinear.from_linear(linear(200, N, seed=m), 8, quantize_activations=quantize_activations)
    x = torch.randn(m, 200)
    layer.backend = "reference"
    ref = layer(x)
    layer.backend = "native"
    y = layer(x)
    if quantize_activations:  # torch._int_mm is exact; same epilogue as the reference
        torch.testing.assert_close(y, ref, rtol=1e-6, atol=1e-5)
    else:  # _weight_int8pack_mm with bf16 activations
        assert_bf16_close(y, ref)


@needs_triton
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group", [32, None])
def test_triton_int4_matches_reference(group: int | None, symmetric: bool) -> None:
    k = k_for(group)
    layer = QuantLinear.from_linear(linear(k, N, seed=k), 4, group, symmetric, backend="reference")
    x = torch.randn(2, 3, k)
    ref = layer(x)
    layer.backend = "triton"
    torch.testing.assert_close(layer(x), ref, rtol=1e-5, atol=1e-5)


@needs_triton
def test_triton_w8a8_matches_reference() -> None:
    layer = QuantLinear.from_linear(linear(200, N, seed=5), 8, quantize_activations=True, backend="reference")
    x = torch.randn(3, 200)
    ref = layer(x)
    layer.backend = "triton"
    torch.testing.assert_close(layer(x), ref, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group", [32, None])
def test_rtn_int4_error_is_at_most_half_a_step(group: int | None, symmetric: bool) -> None:
    k = k_for(group)
    lin = linear(k, N, seed=7)
    q, scales, zeros = rtn_quantize_int4(lin.weight.detach(), group, symmetric)
    assert q.min() >= -8 and q.max() <= 7
    layer = QuantLinear.from_linear(lin, 4, group, symmetric)
    assert torch.equal(unpack_int4(layer.weight_packed, k), q)
    step = scales.repeat_interleave(k if group is None else group, dim=1)
    err = (layer.dequantized_weight() - lin.weight.detach()).abs()
    assert (err <= step / 2 + 1e-6).all()


def test_auto_backend_is_native_on_cpu_and_output_close_to_float() -> None:
    lin = linear(256, 64, seed=8)
    layer = QuantLinear.from_linear(lin, 4, 64)
    x = torch.randn(4, 256)
    assert layer.resolve_backend(x) == "native"
    assert relative_error(layer(x), lin(x)) < 0.15  # 4-bit RTN of a random matrix


def test_state_dict_roundtrip_refreshes_native_cache() -> None:
    a = QuantLinear.from_linear(linear(128, 32, seed=9), 4, 32, symmetric=False)
    b = QuantLinear.from_linear(linear(128, 32, seed=10), 4, 32, symmetric=False)
    x = torch.randn(2, 128)
    b(x)  # builds b's cached native layout
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b(x), a(x))


def test_rejects_bad_configurations() -> None:
    with pytest.raises(ValueError):
        QuantLinear.from_linear(linear(128, 32, seed=0), 4, 48)  # group not a multiple of 32
    with pytest.raises(ValueError):
        QuantLinear.from_linear(linear(128, 32, seed=0), 8, 32)  # int8 is per-channel
    with pytest.raises(ValueError):
        QuantLinear.from_linear(linear(128, 32, seed=0), 3)
