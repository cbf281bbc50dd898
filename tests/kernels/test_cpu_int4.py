"""The CPU int4 layout read back (`triton_kernels.cpu_int4`) and QuantLinear keeping only that layout.

Every test that touches QuantLinear runs twice (fixture `readback`, tests/conftest.py): with the layout read back
(`on`, the fast path: one int4 copy) and with it forced off (`off`, the fallback any CPU gets
when the layout is unknown: both copies kept). How torch lays out the nibbles depends on the
CPU kernel it picks, so `fit_layout` is checked against each variant torch 2.13 has (ported
below from ``aten/src/ATen/native/cpu/int4mm_kernel.cpp``) on any machine, and against the op
itself under every ATen CPU capability this machine offers.
"""

import os
import subprocess
import sys

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


# --------------------------------------------------------------------------- layouts torch produces


def _blocked(unsigned: torch.Tensor, block_n: int, pair_offset: int | None) -> torch.Tensor:
    """Full blocks of `block_n` rows; byte j of column k pairs rows (j, j + pair_offset), or (2j, 2j+1) if None."""
    n, k = unsigned.shape
    u = unsigned.to(torch.uint8).reshape(n // block_n, block_n, k).transpose(1, 2)  # [blocks, K, block_n]
    if pair_offset is None:
        low, high = u[..., 0::2], u[..., 1::2]
    else:  # AVX-512: 16-byte halves pair (d, d+32) and (d+16, d+48), i.e. j with j+32
        low, high = u[..., :pair_offset], u[..., pair_offset:]
    return (low | (high << 4)).reshape(-1)


TORCH_VARIANTS = {
    "avx512": lambda u: _blocked(u, 64, 32),
    "avx2": lambda u: _blocked(u, 32, 16),
    "default": lambda u: _blocked(u, 32, None),
}


@pytest.mark.parametrize("variant", sorted(TORCH_VARIANTS))
def test_fit_layout_reads_each_torch_variant(variant: str) -> None:
    convert = TORCH_VARIANTS[variant]
    found = cpu_int4.fit_layout(convert)
    assert found is not None
    gen = torch.Generator().manual_seed(1)
    u = torch.randint(0, 16, (128, 96), generator=gen, dtype=torch.int32)
    rows = torch.tensor([0, 1, 15, 16, 31, 32, 33, 63, 64, 100, 127])
    assert torch.equal(cpu_int4.read_unsigned(convert(u), found, rows, 96), u[rows].to(torch.uint8))


def test_fit_layout_refuses_a_layout_it_does_not_model() -> None:
    def scrambled(u: torch.Tensor) -> torch.Tensor:  # columns reversed inside each block: not the blocked model
        return _blocked(u.flip(1), 32, 16)

    assert cpu_int4.fit_layout(scrambled) is None
    assert cpu_int4.fit_layout(lambda u: u.to(torch.uint8).reshape(-1)) is None  # one nibble per byte


def _capabilities() -> list[str]:
    """ATen CPU capabilities this machine can run, as ATEN_CPU_CAPABILITY spells them (lower ones always work)."""
    order = ["default", "avx2", "avx512"]
    current = torch.backends.cpu.get_cpu_capability().lower()
    return order[: order.index(current) + 1] if current in order else ["default"]


PROBE_IN_CAPABILITY = """
import torch
from torch import nn
from triton_kernels import cpu_int4
from triton_kernels.quant_linear import QuantLinear
assert cpu_int4.layout() is not None, torch.backends.cpu.get_cpu_capability()
torch.manual_seed(0)
layer = QuantLinear.from_linear(nn.Linear(192, 100, bias=False).to(torch.bfloat16), 4, 64, False)
x = torch.randn(3, 192, dtype=torch.bfloat16)
before, weight = layer(x), layer.dequantized_weight()
assert layer.drop_pack_quantized()
assert torch.equal(layer(x), before) and torch.equal(layer.dequantized_weight(), weight)
print(torch.backends.cpu.get_cpu_capability(), cpu_int4.layout().block_n)
"""


@pytest.mark.parametrize("capability", _capabilities())
def test_layout_is_read_under_each_capability_of_this_cpu(capability: str) -> None:
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability, cpu_int4.READBACK_ENV: "on"}
    out = subprocess.run([sys.executable, "-c", PROBE_IN_CAPABILITY], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[0].lower() == capability


def test_readback_switch() -> None:
    os.environ[cpu_int4.READBACK_ENV] = "off"
    try:
        assert cpu_int4.layout() is None and not cpu_int4.layout_is_known()
    finally:
        del os.environ[cpu_int4.READBACK_ENV]
    assert cpu_int4.layout() is cpu_int4._probed_layout()  # switched back on: the probed layout (or None) again


# --------------------------------------------------------------------------- QuantLinear on both paths


@pytest.mark.parametrize("group, symmetric, k", CASES)
def test_build_then_read_back_is_exact(group: int | None, symmetric: bool, k: int) -> None:
    layer = quant_linear(k, group, symmetric)
    native = cpu_int4.build(layer.weight_packed, layer.weight_scale, layer.weight_zero_point, group or k, k)
    packed, scale, zero = cpu_int4.to_pack_quantized(native, N, k, group or k, not symmetric)
    assert torch.equal(packed, layer.weight_packed)
    assert torch.equal(scale, layer.weight_scale)  # bf16 scales survive the bf16 layout
    assert (zero is None) == symmetric
    if zero is not None:
        assert torch.equal(zero, layer.weight_zero_point)


@pytest.mark.parametrize("group, symmetric, k", CASES)
def test_dropping_the_packed_copy_keeps_every_output(group: int | None, symmetric: bool, k: int, readback: bool) -> None:
    layer = quant_linear(k, group, symmetric)
    x = torch.randn(3, k, dtype=torch.bfloat16)
    before, weight, packed = layer(x), layer.dequantized_weight(), layer.weight_packed
    assert layer.drop_pack_quantized() is readback and layer.cpu_only is readback
    assert (layer.weight_packed is None) is readback
    assert ("weight_packed" in layer.state_dict()) is not readback
    assert torch.equal(layer(x), before)  # same op, same bytes
    assert torch.equal(layer.dequantized_weight(), weight)
    assert torch.equal(layer.pack_quantized()[0], packed)
    layer.backend = "reference"  # rebuilt pack-quantized tensors
    torch.testing.assert_close(layer(x), before, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("group, symmetric, k", CASES)
def test_rows_read_back(group: int | None, symmetric: bool, k: int, readback: bool) -> None:
    layer = quant_linear(k, group, symmetric)
    layer.drop_pack_quantized()
    rows = torch.tensor([0, 31, 32, 63, 64, N - 1, 5, 5])
    expected = layer.dequantized_weight()[rows]
    got = layer.dequantized_rows(rows)
    if symmetric or not readback:  # code * scale either way
        assert torch.equal(got, expected)
    else:  # the op adds a bf16-rounded float zero -z*s
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-2 * expected.abs().max().item())


def test_dropping_halves_resident_int4_bytes(readback: bool) -> None:
    layer = quant_linear(256, 64, True, n=128)  # full 64-row blocks: no padding rows
    layer(torch.randn(1, 256, dtype=torch.bfloat16))  # builds the CPU layout next to the packed words
    before = sum(t.numel() * t.element_size() for t in [*layer.buffers(), *layer._native_int4[:2]])
    layer.drop_pack_quantized()
    after = sum(t.numel() * t.element_size() for t in [*layer.buffers(), *(layer._native_int4 or ())[:2]])
    if readback:
        assert after < 0.6 * before
    else:
        assert after == before


def test_state_dict_of_a_cpu_only_layer_reloads(readback: bool) -> None:
    a, b = quant_linear(128, 32, False), quant_linear(128, 32, False)
    torch.manual_seed(1)
    nn.init.normal_(b.weight_scale)
    a.drop_pack_quantized()
    b.drop_pack_quantized()
    x = torch.randn(2, 128, dtype=torch.bfloat16)
    b.load_state_dict(a.state_dict())
    assert torch.equal(b(x), a(x))


def test_int8_rows_read_back() -> None:
    torch.manual_seed(0)
    layer = QuantLinear.from_linear(nn.Linear(96, 40, bias=False), 8)
    rows = torch.tensor([0, 39, 7, 7])
    assert torch.equal(layer.dequantized_rows(rows), layer.dequantized_weight()[rows])
