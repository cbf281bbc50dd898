"""x (L ⊗ R) by two small matmuls equals the dense product; factor sizes split any width."""

import pytest
import torch

from compressor.quant.compressed_linear import FakeQuantLinear
from compressor.quant.kronecker import kron_apply, kron_dense, kronecker_factor_sizes
from compressor.quant.quantizer import fake_quantize_per_token
from compressor.spec import ActivationQuantConfig


@pytest.mark.parametrize(("n", "sizes"), [(576, (24, 24)), (1536, (32, 48)), (14336, (112, 128)), (13, (1, 13)), (96, (8, 12))])
def test_factor_sizes(n, sizes):
    assert kronecker_factor_sizes(n) == sizes


def test_kron_apply_equals_the_dense_product():
    g = torch.Generator().manual_seed(0)
    left, right = torch.randn(8, 8, generator=g, dtype=torch.float64), torch.randn(12, 12, generator=g, dtype=torch.float64)
    x = torch.randn(3, 5, 96, generator=g, dtype=torch.float64)
    torch.testing.assert_close(kron_apply(x, left, right), x @ kron_dense(left, right), rtol=1e-12, atol=1e-12)


def test_fake_quant_linear_runs_its_kronecker_transform_and_learned_clip():
    g = torch.Generator().manual_seed(1)
    lin = torch.nn.Linear(96, 4, bias=False)
    wrapped = FakeQuantLinear(lin)
    smooth, left, right = torch.rand(96, generator=g) + 0.5, torch.randn(8, 8, generator=g), torch.randn(12, 12, generator=g)
    wrapped.set_input_kronecker(smooth, left, right)
    x = torch.randn(2, 96, generator=g)
    transformed = (x * smooth) @ kron_dense(left, right)
    torch.testing.assert_close(wrapped(x), lin(transformed), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(wrapped.input_matrix(), smooth.unsqueeze(1) * kron_dense(left, right), rtol=1e-6, atol=1e-6)
    wrapped.input_quant = ActivationQuantConfig(bits=4)
    wrapped.input_clip = 0.8
    torch.testing.assert_close(wrapped(x), lin(fake_quantize_per_token(transformed, 4, False, 0.8)), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(wrapped(x), lin(fake_quantize_per_token(transformed, 4, False, 1.0)))
