"""Hadamard orders of the widths the supported families use: built, or refused with the size and the reason."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from compressor.transforms.hadamard import _base_matrix, apply_random_hadamard
from compressor.transforms.hadamard_orders import decompose, is_hadamard_size, unsupported_reason

# hidden, intermediate and head widths of the models teams serve (the list first)
POPULAR_WIDTHS = {
    2304: "Gemma 2 2B hidden", 3072: "Llama 3.2 3B / Phi-3 mini hidden", 3584: "Qwen2.5 7B / Gemma 2 9B hidden",
    8192: "Llama 3 70B hidden, Phi-3 mini FFN", 9216: "Gemma 2 2B FFN", 14336: "Llama 3 8B / Mistral 7B / Gemma 2 9B FFN",
    18944: "Qwen2.5 7B FFN", 1536: "Qwen2.5 1.5B hidden", 8960: "Qwen2.5 1.5B FFN", 896: "Qwen2.5 0.5B hidden",
    4864: "Qwen2.5 0.5B FFN", 12288: "Qwen3 8B FFN", 9728: "Qwen3 4B FFN", 2560: "Qwen3 4B / Gemma 3 4B hidden",
    10240: "Gemma 3 4B FFN", 1152: "Gemma 3 1B hidden", 6912: "Gemma 3 1B FFN", 5376: "Gemma 3 27B hidden",
    21504: "Gemma 3 27B FFN", 3840: "Gemma 3 12B hidden", 15360: "Gemma 3 12B FFN", 28672: "Llama 3 70B FFN",
    17920: "Phi-3 medium FFN", 5120: "Phi-3 medium / Qwen2.5 14B hidden", 13824: "Qwen2.5 14B FFN", 4608: "Gemma 2 27B hidden",
    36864: "Gemma 2 27B FFN", 96: "Phi-3 mini head_dim", 128: "head_dim", 256: "Gemma head_dim",
}


def test_torch_free():
    code = "import sys, compressor.transforms.hadamard_orders, compressor.models.compatibility; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("m", sorted({decompose(n)[0] for n in POPULAR_WIDTHS if decompose(n)}))
def test_every_base_order_the_widths_use_is_a_hadamard_matrix(m):
    h = _base_matrix(m).double()
    assert set(h.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(h @ h.T, m * torch.eye(m, dtype=torch.float64))


@pytest.mark.parametrize("n", sorted(POPULAR_WIDTHS))
def test_popular_width_is_built_and_orthonormal_on_probes(n):
    assert is_hadamard_size(n), POPULAR_WIDTHS[n]
    v = torch.randn(6, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    y = apply_random_hadamard(v, n, seed=5)  # H_m ⊗ H_2^k applied factor by factor, never n × n
    assert (y @ y.T - v @ v.T).abs().max().item() < 1e-9 * n  # inner products (hence norms) kept
    assert (y - v).abs().max().item() > 0.1  # and it is not the identity


def test_unbuildable_order_is_refused_with_size_and_reason():
    assert not is_hadamard_size(13696)  # 107·2^7: 107 + 1 is no Paley order with a 2^j factor we can split off
    reason = unsupported_reason(13696)
    assert "13696" in reason and "107" in reason and "Paley" in reason
    assert "multiple of 4" in unsupported_reason(6)
