"""Calibrated scales of static float quantizers: fp8 inputs per tensor, the nvfp4 input global scale, fp8 k/v scales.

One pass of the calibration text through the model (weights already quantized, no input or KV
quantization while observing) records the largest |x| each quantizer sees, as
compressed-tensors' `static_minmax` observer does over a calibration set; the scales follow
from it with compressed-tensors' own formulas (`float_formats.static_scale`,
`static_global_scale`) and are exported as `input_scale` / `input_global_scale` / `k_scale` /
`v_scale`, the tensors vLLM reads for these schemes.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from compressor.context import CompressionContext
from compressor.quant.attention import KV_OBSERVER, KV_QUANT, KV_SCALES
from compressor.quant.compressed_linear import FakeQuantLinear
from compressor.quant.float_formats import kv_cache_args, static_global_scale, static_scale

BATCH = 4  # calibration chunks per forward pass


def needs_static_calibration(model: torch.nn.Module) -> bool:
    linears = any(isinstance(m, FakeQuantLinear) and m.input_quant is not None and m.input_quant.static for m in model.modules())
    kv = any(getattr(m, KV_QUANT, None) is not None and getattr(m, KV_QUANT).format == "fp8" for m in model.modules())
    return linears or kv


def _absmax(store: dict[Any, torch.Tensor], key: Any, x: torch.Tensor) -> None:
    m = x.detach().abs().amax().float()
    store[key] = torch.maximum(store[key], m) if key in store else m


@torch.no_grad()
def calibrate_static_scales(ctx: CompressionContext) -> dict[str, Any]:
    """Observe the calibration text and set every static float quantizer's scales; returns a report summary."""
    model = ctx.model
    linears = {name: m for name, m in model.named_modules()
               if isinstance(m, FakeQuantLinear) and m.input_quant is not None and m.input_quant.static}
    attentions = {name: m for name, m in model.named_modules()
                  if getattr(m, KV_QUANT, None) is not None and getattr(m, KV_QUANT).format == "fp8"}
    if not linears and not attentions:
        return {}
    seen: dict[Any, torch.Tensor] = {}
    for name, m in linears.items():
        m.input_observer = lambda x, name=name: _absmax(seen, name, x)
    for name, m in attentions.items():
        setattr(m, KV_OBSERVER, lambda k, v, name=name: (_absmax(seen, (name, "k"), k), _absmax(seen, (name, "v"), v)))
    tokens = ctx.calibration_tokens()
    try:
        for start in range(0, tokens.shape[0], BATCH):
            model(tokens[start:start + BATCH], use_cache=False)
    finally:
        for m in linears.values():
            m.input_observer = None
        for m in attentions.values():
            setattr(m, KV_OBSERVER, None)
    ranges: dict[str, list[float]] = defaultdict(list)
    for name, m in linears.items():
        if m.input_quant.format == "nvfp4":
            m.input_global_scale = static_global_scale(seen[name])
        else:
            m.input_scale = static_scale(seen[name], m.input_args)
        ranges["input_absmax"].append(float(seen[name]))
    for name, m in attentions.items():
        args = kv_cache_args(getattr(m, KV_QUANT))
        setattr(m, KV_SCALES, {"k": static_scale(seen[(name, "k")], args), "v": static_scale(seen[(name, "v")], args)})
        ranges["k_absmax"].append(float(seen[(name, "k")]))
        ranges["v_absmax"].append(float(seen[(name, "v")]))
    return {"calibration_chunks": int(tokens.shape[0]), "static_inputs": len(linears), "static_kv_layers": len(attentions),
            **{f"max_{k}": round(max(v), 4) for k, v in ranges.items()}}
