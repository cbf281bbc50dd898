"""Learnable weight clipping (LWC, from OmniQuant): a trained shrink factor of each weight range.

Every (row, group) range [min, max] becomes [σ(β)·min, σ(γ)·max] with γ, β learned (σ the
sigmoid; both start at 4, i.e. 98 % of the range). Symmetric quantization has one factor σ(γ)
on the absolute maximum. Rounding passes gradients straight through, so the factors, and the
affine transforms upstream of the weights, train on the block's output error. Scales and zero
points follow `compressor.quant.quantizer` exactly, so the codes kept for export dequantize to
the very weights the layer is evaluated with.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from compressor.quant.quantizer import (
    QuantizedWeight,
    as_groups,
    int_range,
    quantize_codes,
    round_ste,
    STORED_SCALE_DTYPE,
    scale_zero_from_range,
    weight_group_size,
)
from compressor.spec import WeightQuantConfig

INITIAL_FACTOR = 4.0  # σ(4) ≈ 0.982


class LearnableClipping(nn.Module):
    """LWC of one [out, in] weight under `cfg` (channel or group strategy)."""

    def __init__(self, shape: torch.Size, cfg: WeightQuantConfig, learnable: bool = True):
        super().__init__()
        out, cols = shape
        self.cfg, self.cols, self.learnable = cfg, cols, learnable
        self.group_size = weight_group_size(cfg, cols)
        groups = math.ceil(cols / self.group_size)
        self.upper = nn.Parameter(torch.full((out, groups), INITIAL_FACTOR), requires_grad=learnable)
        self.lower = None if cfg.symmetric else nn.Parameter(torch.full((out, groups), INITIAL_FACTOR), requires_grad=learnable)

    def _factors(self) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        if not self.learnable:
            return 1.0, 1.0
        upper = torch.sigmoid(self.upper)
        return upper, upper if self.lower is None else torch.sigmoid(self.lower)

    def scale_zero(self, grouped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-(row, group) scale and zero point of the clipped range (differentiable in the factors)."""
        upper, lower = self._factors()
        scale, zero = scale_zero_from_range(grouped.amin(dim=-1) * lower, grouped.amax(dim=-1) * upper, self.cfg.bits, self.cfg.symmetric)
        return scale.to(STORED_SCALE_DTYPE).float(), zero  # as RTN and GPTQ: codes are rounded against the scale stored

    def fake_quantize(self, w: torch.Tensor) -> torch.Tensor:
        """Quantize-dequantize `w` with straight-through rounding (for training)."""
        grouped = as_groups(w.float(), self.group_size)
        scale, zero = self.scale_zero(grouped)
        scale, zero = scale.unsqueeze(-1), zero.unsqueeze(-1)
        qmin, qmax = int_range(self.cfg.bits, self.cfg.symmetric)
        codes = torch.clamp(round_ste(grouped / scale) + zero, qmin, qmax)
        return ((codes - zero) * scale).reshape(w.shape[0], -1)[:, : self.cols].to(w.dtype)

    @torch.no_grad()
    def quantize(self, w: torch.Tensor) -> QuantizedWeight:
        """The integer codes, scales and zero points of `w` under the learned clipping (for export)."""
        grouped = as_groups(w.float(), self.group_size)
        scale, zero = self.scale_zero(grouped)
        codes = quantize_codes(grouped, scale.unsqueeze(-1), zero.unsqueeze(-1), self.cfg.bits, self.cfg.symmetric)
        codes = codes.reshape(w.shape[0], -1)[:, : self.cols]
        dtype = torch.int8 if self.cfg.bits <= 7 or self.cfg.symmetric else torch.int16
        return QuantizedWeight(codes=codes.to(dtype), scale=scale.float(), zero=zero.float(), group_size=self.group_size,
                               bits=self.cfg.bits, symmetric=self.cfg.symmetric)
