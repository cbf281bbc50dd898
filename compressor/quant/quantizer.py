"""Integer quantizers: ranges, scales and zero points, rounding, MSE clip search.

Conventions (match compressed-tensors so one set of codes serves export and kernels):
symmetric codes are signed in [-2^(b-1), 2^(b-1)-1] with scale = absmax / (2^(b-1)-1) and no
zero point; asymmetric codes are unsigned in [0, 2^b-1] with an integer zero point. Ranges
always include 0, so zero padding of a short last group changes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from compressor.quant.float_formats import FloatQuantizedWeight, quantize_weight_float
from compressor.spec import ActivationQuantConfig, KVCacheQuantConfig, WeightQuantConfig

EPS = 1e-8


def int_range(bits: int, symmetric: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)


def scale_zero_from_range(
    xmin: torch.Tensor, xmax: torch.Tensor, bits: int, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and (integer-valued, float-typed) zero point for ranges [xmin, xmax] ∋ 0."""
    xmin = torch.minimum(xmin, torch.zeros_like(xmin))
    xmax = torch.maximum(xmax, torch.zeros_like(xmax))
    qmin, qmax = int_range(bits, symmetric)
    if symmetric:
        scale = (torch.maximum(-xmin, xmax) / qmax).clamp_min(EPS)
        return scale, torch.zeros_like(scale)
    scale = ((xmax - xmin) / (qmax - qmin)).clamp_min(EPS)
    zero = torch.round(-xmin / scale).clamp(qmin, qmax)
    return scale, zero


def quantize_codes(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    qmin, qmax = int_range(bits, symmetric)
    return torch.clamp(torch.round(x / scale) + zero, qmin, qmax)


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    return (quantize_codes(x, scale, zero, bits, symmetric) - zero) * scale


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round with a straight-through gradient (for methods that train through quantization)."""
    return x + (torch.round(x) - x).detach()


# --------------------------------------------------------------------------- dynamic (activations, KV)


def fake_quantize_per_token(x: torch.Tensor, bits: int, symmetric: bool, clip_ratio: float = 1.0) -> torch.Tensor:
    """Dynamic quantization with one range per row of the last dimension; gradient passes straight through."""
    xf = x.float()
    xmin = xf.amin(dim=-1, keepdim=True) * clip_ratio
    xmax = xf.amax(dim=-1, keepdim=True) * clip_ratio
    scale, zero = scale_zero_from_range(xmin, xmax, bits, symmetric)
    qmin, qmax = int_range(bits, symmetric)
    q = torch.clamp(round_ste(xf / scale) + zero, qmin, qmax)
    return ((q - zero) * scale).to(x.dtype)


def fake_quantize_activation(x: torch.Tensor, cfg: ActivationQuantConfig | KVCacheQuantConfig) -> torch.Tensor:
    """Dynamic int quantization per token (float formats go through `float_formats` with their calibrated scales)."""
    if cfg.format != "int":
        raise ValueError(f"{cfg.format} quantization needs its module's scales: use float_formats.fake_quantize_float_activation")
    return fake_quantize_per_token(x, cfg.bits, cfg.symmetric, cfg.clip_ratio)


# --------------------------------------------------------------------------- weights


@dataclass
class QuantizedWeight:
    """Integer codes of a [out, in] weight plus per-(row, group) scale and zero point."""

    codes: torch.Tensor  # int8 [out, in]
    scale: torch.Tensor  # float32 [out, n_groups]
    zero: torch.Tensor  # float32 [out, n_groups] (all zero when symmetric)
    group_size: int  # inputs per group; == in_features for per-channel; the last group may be shorter
    bits: int
    symmetric: bool

    def dequantize(self) -> torch.Tensor:
        cols = self.codes.shape[1]
        scale = self.scale.repeat_interleave(self.group_size, dim=1)[:, :cols]
        zero = self.zero.repeat_interleave(self.group_size, dim=1)[:, :cols]
        return (self.codes.float() - zero) * scale


def weight_group_size(cfg: WeightQuantConfig, in_features: int) -> int:
    return cfg.group_size if cfg.strategy == "group" else in_features


def as_groups(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """[out, in] → [out, n_groups, group_size], zero-padding a shorter last group (zeros never widen a range)."""
    out, cols = w.shape
    n_groups = math.ceil(cols / group_size)
    pad = n_groups * group_size - cols
    if pad:
        w = torch.nn.functional.pad(w, (0, pad))
    return w.reshape(out, n_groups, group_size)


STORED_SCALE_DTYPE = torch.bfloat16  # int weight scales are stored in bf16, so they are rounded to it before rounding the weights


def weight_scale_zero(w: torch.Tensor, cfg: WeightQuantConfig, group_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero per (row, group) of `w` [out, in]; with cfg.clip_search, the MSE-best shrunken range.

    The scale is rounded to the dtype the checkpoint stores it in: the evaluated model is then
    exactly the stored one (codes x stored scale), whichever loader reads it back.
    """
    scale, zero = _weight_scale_zero(w, cfg, group_size)
    return scale.to(STORED_SCALE_DTYPE).float(), zero


def _weight_scale_zero(w: torch.Tensor, cfg: WeightQuantConfig, group_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    w = w.float()
    if cfg.strategy == "tensor":
        scale, zero = scale_zero_from_range(w.min().view(1, 1), w.max().view(1, 1), cfg.bits, cfg.symmetric)
        return scale.expand(w.shape[0], 1).contiguous(), zero.expand(w.shape[0], 1).contiguous()
    g = group_size or weight_group_size(cfg, w.shape[1])
    wg = as_groups(w, g)
    xmin, xmax = wg.amin(dim=-1), wg.amax(dim=-1)
    scale, zero = scale_zero_from_range(xmin, xmax, cfg.bits, cfg.symmetric)
    if not cfg.clip_search:
        return scale, zero
    best_err = torch.full_like(scale, float("inf"))
    for i in range(cfg.clip_grid):
        shrink = 1.0 - cfg.clip_max_shrink * i / (cfg.clip_grid - 1)
        s, z = scale_zero_from_range(xmin * shrink, xmax * shrink, cfg.bits, cfg.symmetric)
        deq = fake_quantize(wg, s.unsqueeze(-1), z.unsqueeze(-1), cfg.bits, cfg.symmetric)
        err = (deq - wg).abs().pow(cfg.clip_norm).sum(dim=-1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        scale = torch.where(better, s, scale)
        zero = torch.where(better, z, zero)
    return scale, zero


def quantize_weight_rtn(w: torch.Tensor, cfg: WeightQuantConfig) -> QuantizedWeight | FloatQuantizedWeight:
    """Round-to-nearest with per-tensor/channel/group ranges (optionally MSE-clipped); float formats in `float_formats`."""
    if cfg.format != "int":
        return quantize_weight_float(w, cfg)
    g = w.shape[1] if cfg.strategy == "tensor" else weight_group_size(cfg, w.shape[1])
    scale, zero = weight_scale_zero(w, cfg, g)
    if cfg.strategy == "tensor":
        g = w.shape[1]
    wg = as_groups(w.float(), g)
    codes = quantize_codes(wg, scale.unsqueeze(-1), zero.unsqueeze(-1), cfg.bits, cfg.symmetric)
    codes = codes.view(w.shape[0], -1)[:, : w.shape[1]].to(torch.int8 if cfg.bits <= 7 or cfg.symmetric else torch.int16)
    return QuantizedWeight(codes=codes, scale=scale, zero=zero, group_size=g, bits=cfg.bits, symmetric=cfg.symmetric)
