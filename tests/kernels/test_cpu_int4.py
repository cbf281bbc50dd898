"""The CPU int4 layout read back (`triton_kernels.cpu_int4`) and QuantLinear keeping only that layout."""

import pytest
import torch
from torch import nn

from triton_kernels import cpu_int4
from triton_kernels.quant_linear import QuantLinear

N = 73  # not a multiple of 64: padded to full blocks
CASES = [(32, True, 128), (64, False, 128), (128, True, 256), (512, False, 1024), (None, False, 200), (None, True, 256)]


def quant_linear(k: int, group: int | None, symmetric: bool, n: int = N) -> QuantLinear:
    torch.manual_seed(k + (group or 0))
    return QuantLinear.from_linear(nn.Linear(k, n, bias=False).to(torch.bfloat16), 4, group, symmetric)


def test_layout_is_the_one_we_read() -> None:
    assert cpu_int4.layout_is_known()


@pytest.mark.parametrize("group, symmetric, k", CASES)
def test_build_then_read_back_is_exact(group: int | None, symmetric: bool, k: int) -> None:
    layer = quant_linear(k, group, symmetric)
    native = cpu_int4.build(layer.weight_packed, layer.weight_scale, layer.weight_zero_point, group or k, k)
    packed, scale, zero = cpu_int4.to_pack_quantized(native, N, k, group or k, not symmetric)
    assert torch.equal(packed, layer.weight_packed)
    assert torch.equal(scale, layer.weight_scale)  # bf16 scales survive the bf16 layout
    assert (zero is None) == symmetric and (zero is None or torch.equal(zero, layer.weight_zero_point))


@pytest.mark.parametrize("group, symmetric, k", CASES)
def test_dropping_the_packed_copy_keeps_every_output(group: int | None, symmetric: bool, k: int) -> None:
    layer = quant_linear(k, group, symmetric)
    x = torch.randn(3, k, dtype=torch.bfloat16)
    before, weight, packed = layer(x), layer.dequantized_weight(), layer.weight_packed
    assert layer.drop_pack_quantized() and layer.cpu_only
    assert layer.weight_packed is None and layer.weight_scale is None and layer.weight_zero_point is None
    assert "weight_packed" not in layer.state_dict()
    assert torch.equal(layer(x), before)  # same op, same bytes
    assert torch.equal(layer.dequantized_weight(), weight)
    assert torch.equal(layer.pack_quantized()[0], packed)
    layer.backend = "reference"  # rebuilt pack-quantized tensors
    torch.testing.assert_close(layer(x), before, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("group, symmetric, k", CASES)
def test_rows_read_from_the_cpu_layout(group: int | None, symmetric: bool, k: int) -> None:
    layer = quant_linear(k, group, symmetric)
    layer.drop_pack_quantized()
    rows = torch.tensor([0, 31, 32, 63, 64, N - 1, 5, 5])
    expected = layer.dequantized_weight()[rows]
    got = layer.dequantized_rows(rows)
    if symmetric:  # code * scale either way
        assert torch.equal(got, expected)
    else:  # the op adds a bf16-rounded float zero -z*s
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-2 * expected.abs().max().item())


def test_dropping_halves_resident_int4_bytes() -> None:
    layer = quant_linear(256, 64, True, n=128)  # full 64-row blocks: no padding rows
    layer(torch.randn(1, 256, dtype=torch.bfloat16))  # builds the CPU layout next to the packed words
    before = sum(t.numel() * t.element_size() for t in [*layer.buffers(), *layer._native_int4[:2]])
    layer.drop_pack_quantized()
    after = sum(t.numel() * t.element_size() for t in layer.buffers())
    assert after < 0.6 * before


def test_state_dict_of_a_cpu_only_layer_reloads() -> None:
    a, b = quant_linear(128, 32, False), quant_linear(128, 32, False)
    torch.manual_seed(1)
    nn.init.normal_(b.weight_scale)
    a.drop_pack_quantized()
    b.drop_pack_quantized()
    x = torch.randn(2, 128, dtype=torch.bfloat16)
    b.load_state_dict(a.state_dict())
    assert torch.equal(b(x), a(x))
