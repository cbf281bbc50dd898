"""Float quantizers (FP8 E4M3, NVFP4, MXFP4), computed with compressed-tensors' own functions.

The fake-quantized model is evaluated with exactly the arithmetic the checkpoint is later
decompressed and run with (`calculate_qparams`, `generate_gparam`, `fake_quantize`,
`compute_dynamic_scales_and_zp`), so the in-memory perplexity is the perplexity of the
artifact, and the scales written are the ones compressed-tensors' compressors expect. Each
recipe config maps to one `QuantizationArgs` here (the same presets compressed-tensors ships:
FP8_DYNAMIC, FP8, NVFP4(A16), MXFP4(A16), W4AFP8), the one place those shapes are spelled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from compressed_tensors.quantization import QuantizationArgs
from compressed_tensors.quantization.lifecycle.forward import fake_quantize
from compressed_tensors.quantization.utils import calculate_qparams, compute_dynamic_scales_and_zp, generate_gparam

from compressor.spec import ActivationQuantConfig, KVCacheQuantConfig, WeightQuantConfig

FP8_SCALE_DTYPE = torch.float32  # fp8 weight/input/kv scales are stored as computed (no rounding between eval and artifact)


def weight_args(cfg: WeightQuantConfig) -> QuantizationArgs:
    """compressed-tensors' weight args for a float-format weight config."""
    if cfg.format == "fp8":
        return QuantizationArgs(num_bits=8, type="float", strategy=cfg.strategy, symmetric=True, dynamic=False, observer="minmax")
    if cfg.format == "nvfp4":
        return QuantizationArgs(num_bits=4, type="float", strategy="tensor_group", group_size=16, symmetric=True, dynamic=False,
                                scale_dtype=torch.float8_e4m3fn, zp_dtype=torch.float8_e4m3fn, observer="minmax")
    if cfg.format == "mxfp4":
        return QuantizationArgs(num_bits=4, type="float", strategy="group", group_size=32, symmetric=True, dynamic=False,
                                scale_dtype=torch.uint8, zp_dtype=torch.uint8, observer="minmax")
    raise ValueError(f"format {cfg.format!r} is not a float format")


def activation_args(cfg: ActivationQuantConfig) -> QuantizationArgs:
    """compressed-tensors' input-activation args (fp8 token-dynamic or tensor-static; nvfp4/mxfp4 blocks)."""
    if cfg.format == "fp8":
        static = cfg.strategy == "tensor"
        return QuantizationArgs(num_bits=8, type="float", strategy=cfg.strategy, symmetric=True, dynamic=not static,
                                observer="static_minmax" if static else None)
    if cfg.format == "nvfp4":
        return QuantizationArgs(num_bits=4, type="float", strategy="tensor_group", group_size=16, symmetric=True, dynamic="local",
                                observer="static_minmax", scale_dtype=torch.float8_e4m3fn, zp_dtype=torch.float8_e4m3fn)
    if cfg.format == "mxfp4":
        return QuantizationArgs(num_bits=4, type="float", strategy="group", group_size=32, symmetric=True, dynamic=True,
                                scale_dtype=torch.uint8, zp_dtype=torch.uint8, observer=None)
    if cfg.format == "int":
        return QuantizationArgs(num_bits=cfg.bits, type="int", strategy="token", symmetric=cfg.symmetric, dynamic=True, observer=None)
    raise ValueError(f"unknown activation format {cfg.format!r}")


def kv_cache_args(cfg: KVCacheQuantConfig) -> QuantizationArgs:
    """fp8: one static scale per layer for keys and one for values (`k_scale`, `v_scale`), vLLM's fp8 KV cache."""
    if cfg.format != "fp8":
        raise ValueError(f"kv_cache format {cfg.format!r} is not a float format")
    return QuantizationArgs(num_bits=8, type="float", strategy="tensor", symmetric=True, dynamic=False, observer="static_minmax")


@dataclass
class FloatQuantizedWeight:
    """A float-format weight: its dequantized values and the scales compressed-tensors stores beside the codes."""

    weight: torch.Tensor  # float32 [out, in], exactly representable in the format given the scales
    scale: torch.Tensor  # fp8: [out, 1] or [1] float32; nvfp4: [out, in/16] fp8 e4m3; mxfp4: [out, in/32] power-of-two float
    global_scale: torch.Tensor | None  # nvfp4 only: [1] float32
    format: str
    args: QuantizationArgs

    @property
    def bits(self) -> int:
        return self.args.num_bits

    @property
    def symmetric(self) -> bool:
        return True

    @property
    def group_size(self) -> int | None:
        return self.args.group_size

    def dequantize(self) -> torch.Tensor:
        return self.weight

    def stored_bits(self) -> int:
        """Bits this weight takes in the checkpoint, scales included."""
        scale_bits = {"fp8": 32, "nvfp4": 8, "mxfp4": 8}[self.format]
        return self.weight.numel() * self.bits + self.scale.numel() * scale_bits + (32 if self.global_scale is not None else 0)


def _weight_ranges(w: torch.Tensor, args: QuantizationArgs) -> tuple[torch.Tensor, torch.Tensor]:
    if args.strategy == "tensor":
        return w.amin().reshape(1), w.amax().reshape(1)
    if args.strategy == "channel":
        return w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
    rows, cols = w.shape
    if cols % args.group_size:
        raise ValueError(f"in_features {cols} is not a multiple of the {args.group_size}-value blocks of this format")
    groups = w.reshape(rows, cols // args.group_size, args.group_size)
    return groups.amin(dim=-1), groups.amax(dim=-1)


@torch.no_grad()
def quantize_weight_float(w: torch.Tensor, cfg: WeightQuantConfig) -> FloatQuantizedWeight:
    """Round-to-nearest into the float format (min-max ranges, as compressed-tensors' minmax observer)."""
    args = weight_args(cfg)
    w = w.detach().float()
    global_scale = generate_gparam(w.amin(), w.amax()) if args.strategy == "tensor_group" else None
    lo, hi = _weight_ranges(w, args)
    scale, _ = calculate_qparams(lo, hi, args, global_scale=global_scale)
    if cfg.format == "fp8":
        scale = scale.to(FP8_SCALE_DTYPE)
    deq = fake_quantize(w, scale.float(), None, args, global_scale=global_scale)
    if global_scale is not None:  # compressed-tensors decompresses nvfp4 to bf16 (code x scale / global scale, rounded once)
        deq = deq.to(torch.bfloat16)
    return FloatQuantizedWeight(weight=deq.float(), scale=scale, global_scale=global_scale, format=cfg.format, args=args)


def fake_quantize_float_activation(
    x: torch.Tensor, args: QuantizationArgs, scale: torch.Tensor | None = None, global_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Quantize-dequantize `x` [..., features] as compressed-tensors' forward does; gradients pass straight through.

    Static configs need their calibrated `scale` (fp8 per tensor) or `global_scale` (nvfp4).
    """
    xf = x.float()
    if xf.dim() == 2:  # compressed-tensors reads dims (batch, tokens) as the token axes
        xf = xf.unsqueeze(0)
    if args.dynamic is True or args.dynamic == "local":
        if args.strategy == "tensor_group" and global_scale is None:
            if not x.requires_grad:
                raise RuntimeError("nvfp4 activations need a calibrated global scale (the quantize stage calibrates it)")
            global_scale = generate_gparam(xf.detach().amin(), xf.detach().amax())  # transform training: from this batch
        with torch.no_grad():
            scale, _ = compute_dynamic_scales_and_zp(xf.detach(), args, module=None, global_scale=global_scale)
    elif scale is None:
        raise RuntimeError("static fp8 quantization needs a calibrated scale (run the calibration first)")
    out = fake_quantize(xf.detach(), scale, None, args, global_scale=global_scale).reshape(x.shape)
    return (x + (out.to(x.dtype) - x).detach()) if x.requires_grad else out.to(x.dtype)


def static_scale(absmax: torch.Tensor, args: QuantizationArgs) -> torch.Tensor:
    """The calibrated per-tensor scale of a static fp8 input or KV cache from its observed |x| maximum."""
    scale, _ = calculate_qparams(-absmax.reshape(1), absmax.reshape(1), args)
    return scale.to(FP8_SCALE_DTYPE)


def static_global_scale(absmax: torch.Tensor) -> torch.Tensor:
    """The nvfp4 input global scale from the observed |x| maximum (compressed-tensors' `generate_gparam`)."""
    return generate_gparam(-absmax.reshape(1), absmax.reshape(1))


def fake_quantize_weight_float_ste(w: torch.Tensor, cfg: WeightQuantConfig) -> torch.Tensor:
    """Float-format RTN of a weight with a straight-through gradient (for transforms trained for an FP8/FP4 target)."""
    return w + (quantize_weight_float(w, cfg).weight.to(w.dtype) - w).detach()
