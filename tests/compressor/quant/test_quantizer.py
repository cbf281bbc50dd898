"""Integer quantizers against a plain reference implementation."""

import pytest
import torch

from compressor.quant.quantizer import fake_quantize_per_token, int_range, quantize_weight_rtn
from compressor.spec import WeightQuantConfig


def reference_group_quant(w: torch.Tensor, bits: int, symmetric: bool, g: int) -> torch.Tensor:
    """Loop over rows and groups; the last group may be shorter; scales rounded to bf16 (the stored dtype)."""
    out = torch.empty_like(w)
    qmin, qmax = int_range(bits, symmetric)
    for r in range(w.shape[0]):
        for c in range(0, w.shape[1], g):
            x = w[r, c : c + g]
            lo, hi = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
            if symmetric:
                s, z = max(-lo, hi) / qmax, 0.0
            else:
                s = (hi - lo) / (qmax - qmin)
                z = round(-lo / s)
            s = torch.tensor(s).bfloat16().item()  # the scale as the checkpoint stores it
            out[r, c : c + g] = (torch.clamp(torch.round(x / s) + z, qmin, qmax) - z) * s
    return out


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("cols,group", [(96, 32), (100, 32), (70, 70)])
def test_group_rtn_matches_reference(bits, symmetric, cols, group):
    torch.manual_seed(0)
    w = torch.randn(5, cols)
    strategy = "group" if group != cols else "channel"
    cfg = WeightQuantConfig(bits=bits, symmetric=symmetric, strategy=strategy, group_size=group if strategy == "group" else None)
    q = quantize_weight_rtn(w, cfg)
    torch.testing.assert_close(q.dequantize(), reference_group_quant(w, bits, symmetric, group), rtol=0, atol=1e-6)
    qmin, qmax = int_range(bits, symmetric)
    assert q.codes.min() >= qmin and q.codes.max() <= qmax
    assert q.scale.shape == (5, -(-cols // group))


def test_per_tensor_uses_one_scale():
    w = torch.randn(4, 16)
    q = quantize_weight_rtn(w, WeightQuantConfig(bits=4, strategy="tensor"))
    assert torch.unique(q.scale).numel() == 1


def test_clip_search_never_increases_error():
    torch.manual_seed(1)
    w = torch.randn(64, 256) * torch.rand(64, 1) + torch.randn(64, 256).pow(7) * 0.01  # heavy tails
    plain = WeightQuantConfig(bits=3, strategy="group", group_size=64)
    clip = plain.model_copy(update={"clip_search": True})
    err = lambda cfg: (quantize_weight_rtn(w, cfg).dequantize() - w).pow(2).sum(dim=1)
    assert torch.all(err(clip) <= err(plain) + 1e-6)
    assert err(clip).sum() < 0.9 * err(plain).sum()


def test_per_token_activation_quant_has_per_row_ranges_and_ste_gradient():
    x = torch.randn(3, 7, 64) * torch.tensor([1.0, 100.0, 0.01]).view(3, 1, 1)
    x.requires_grad_(True)
    y = fake_quantize_per_token(x, bits=8, symmetric=False)
    rel = ((y - x).abs().amax(-1) / (x.amax(-1) - x.amin(-1))).max()
    assert rel <= 0.5 / 255 + 1e-6  # each row's error is at most half of its own step
    y.sum().backward()
    # straight-through: unit gradient except where a value sits on the clamped edge of its range
    assert (x.grad == 1).float().mean() > 0.95 and torch.isfinite(x.grad).all()


def test_clip_ratio_shrinks_the_range():
    x = torch.linspace(-1, 1, 101).view(1, -1)
    y = fake_quantize_per_token(x, bits=4, symmetric=True, clip_ratio=0.5)
    assert y.max() <= 0.5 + 1e-6 and y.min() >= -0.5 * 8 / 7 - 1e-6  # codes -8..7 of step 0.5/7
    assert fake_quantize_per_token(x, bits=4, symmetric=True).max() == pytest.approx(1.0)
