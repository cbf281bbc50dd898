"""GPTQ: beats round-to-nearest on the layer-output error it minimizes, and its codes reproduce its weights."""

import pytest
import torch

from compressor.quant.gptq import HessianAccumulator, gptq_quantize
from compressor.quant.quantizer import int_range, quantize_weight_rtn
from compressor.spec import WeightQuantConfig


def correlated_inputs(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """Low-rank structure plus noise, like LLM activations: where GPTQ's error feedback pays off."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 10, generator=g) @ torch.randn(10, d, generator=g) + 0.1 * torch.randn(n, d, generator=g)


def output_error(w_q: torch.Tensor, w: torch.Tensor, x: torch.Tensor) -> float:
    return ((x @ (w_q - w).T) ** 2).mean().item()


@pytest.mark.parametrize(
    "cfg",
    [
        WeightQuantConfig(bits=4, strategy="channel", method="gptq"),
        WeightQuantConfig(bits=3, symmetric=False, strategy="group", group_size=32, method="gptq"),
        WeightQuantConfig(bits=4, strategy="group", group_size=32, method="gptq", gptq_act_order=True),
        WeightQuantConfig(bits=4, strategy="group", group_size=48, method="gptq", gptq_block_size=32),  # 100 % 48 != 0
        WeightQuantConfig(bits=4, strategy="channel", method="gptq", clip_search=True),
    ],
    ids=["channel", "asym-g32", "act-order", "short-last-group", "clip"],
)
def test_gptq_beats_rtn_on_output_error(cfg):
    torch.manual_seed(0)
    d_in, d_out = 100, 40
    w = torch.randn(d_out, d_in)
    x = correlated_inputs(2048, d_in)
    acc = HessianAccumulator(d_in)
    for chunk in x.split(300):
        acc.add(chunk)
    torch.testing.assert_close(acc.hessian, 2 * x.double().T @ x.double() / x.shape[0], rtol=1e-5, atol=1e-5)

    q = gptq_quantize(w, acc.hessian, cfg)
    rtn = quantize_weight_rtn(w, cfg)
    assert output_error(q.dequantize(), w, x) < 0.5 * output_error(rtn.dequantize(), w, x)
    qmin, qmax = int_range(cfg.bits, cfg.symmetric)
    assert q.codes.min() >= qmin and q.codes.max() <= qmax
    assert q.codes.shape == w.shape


def test_gptq_equals_unblocked_reference():
    """The lazy-batch implementation equals the textbook one-column-at-a-time OBS update."""
    from compressor.quant.quantizer import quantize_codes, weight_scale_zero

    torch.manual_seed(0)
    w, x = torch.randn(12, 40), correlated_inputs(512, 40)
    acc = HessianAccumulator(40)
    acc.add(x)
    cfg = WeightQuantConfig(bits=4, strategy="channel", method="gptq", gptq_block_size=16, gptq_act_order=False)
    W = w.double().clone()
    H = acc.hessian + 0.01 * acc.hessian.diag().mean() * torch.eye(40, dtype=torch.float64)
    Hinv = torch.linalg.inv(H)
    s, z = (t.double() for t in weight_scale_zero(w, cfg))
    Q = torch.zeros_like(W)
    for i in range(40):
        Q[:, i] = ((quantize_codes(W[:, i : i + 1], s, z, 4, True) - z) * s)[:, 0]
        err = (W[:, i] - Q[:, i]) / Hinv[i, i]
        W[:, i:] -= err.unsqueeze(1) * Hinv[i, i:].unsqueeze(0)
        Hinv = Hinv - Hinv[:, i : i + 1] @ Hinv[i : i + 1, :] / Hinv[i, i]
    torch.testing.assert_close(gptq_quantize(w, acc.hessian, cfg).dequantize(), Q.float(), rtol=0, atol=1e-5)


def test_dead_inputs_get_zero_weight():
    w = torch.randn(8, 16)
    x = torch.randn(256, 16)
    x[:, 3] = 0
    acc = HessianAccumulator(16)
    acc.add(x)
    q = gptq_quantize(w, acc.hessian, WeightQuantConfig(bits=4, method="gptq"))
    assert torch.all(q.dequantize()[:, 3] == 0)
