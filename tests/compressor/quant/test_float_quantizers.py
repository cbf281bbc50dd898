"""Float quantizers: values on the format's grid, scales of the format's kind, gradients straight through."""

from __future__ import annotations

import torch

from compressor.quant.float_formats import fake_quantize_weight_float_ste, quantize_weight_float
from compressor.spec import WeightQuantConfig

E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def weight() -> torch.Tensor:
    return torch.randn(16, 64, generator=torch.Generator().manual_seed(0))


def on_grid(values: torch.Tensor) -> bool:
    return bool(torch.isin(values.abs(), E2M1).all())


def test_nvfp4_values_are_e2m1_times_an_e4m3_scale_over_a_global_scale():
    q = quantize_weight_float(weight(), WeightQuantConfig(format="nvfp4", bits=4, strategy="group", group_size=16))
    assert q.scale.shape == (16, 4) and q.global_scale.shape == (1,)
    assert torch.equal(q.scale.to(torch.float8_e4m3fn).float(), q.scale.float())  # E4M3 values (stored as such)
    block = (q.scale.float() / q.global_scale).repeat_interleave(16, dim=1)
    ratio = q.weight.float() / block  # the weight is kept as compressed-tensors decompresses it: rounded once to bf16
    nearest = E2M1[(ratio.abs().unsqueeze(-1) - E2M1).abs().argmin(-1)]
    assert torch.allclose(ratio.abs(), nearest, rtol=2**-7, atol=0)


def test_mxfp4_scales_are_powers_of_two_and_values_e2m1():
    q = quantize_weight_float(weight(), WeightQuantConfig(format="mxfp4", bits=4, strategy="group", group_size=32))
    assert q.global_scale is None and q.scale.shape == (16, 2)
    assert torch.equal(torch.log2(q.scale.float()), torch.log2(q.scale.float()).round())
    assert on_grid(q.weight / q.scale.float().repeat_interleave(32, dim=1))


def test_fp8_per_channel_values_are_representable_in_e4m3():
    q = quantize_weight_float(weight(), WeightQuantConfig(format="fp8", bits=8, strategy="channel"))
    codes = q.weight / q.scale
    assert q.scale.shape == (16, 1)
    assert torch.allclose(codes.to(torch.float8_e4m3fn).float(), codes, rtol=1e-6, atol=0)
    assert torch.allclose(codes.abs().amax(dim=1), torch.full((16,), 448.0))  # each row's largest value maps to E4M3's largest


def test_float_weight_ste_passes_the_gradient_through():
    w = weight().requires_grad_()
    fake_quantize_weight_float_ste(w, WeightQuantConfig(format="nvfp4", bits=4, strategy="group", group_size=16)).sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))
