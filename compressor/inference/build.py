"""Reading one stored linear (codes, scales, zero points) and building the fastest exact module for it.

The read half of the tensor keys `compressor.export.format` names; packed int4 words are used as
they are, other codes only re-laid out, never dequantized and requantized.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from compressor.export.format import (
    WEIGHT,
    WEIGHT_PACKED,
    WEIGHT_SCALE,
    WEIGHT_SHAPE,
    WEIGHT_ZERO_POINT,
    WEIGHTS_FILE,
    UnsupportedArtifactError,
)
from compressor.inference.modules import DequantizedLinear
from triton_kernels import w4a16
from triton_kernels.packing import pack_int4, unpack_int4, packed_width
from triton_kernels.quant_linear import Backend, QuantLinear


def quantized_state(tensors: Any, name: str, args: dict[str, Any], shape: tuple[int, int]) -> dict[str, Any]:
    """Signed integer codes (int8 [N, K]) or packed int4 words, scales [N, groups] and zero points [N, groups]."""
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

    n, k = shape
    bits = int(args["num_bits"])
    keys = set(tensors.keys())

    def get(key: str) -> torch.Tensor | None:
        full = f"{name}.{key}"
        return tensors.get_tensor(full) if full in keys else None

    scale = get(WEIGHT_SCALE)
    if scale is None:
        raise UnsupportedArtifactError(f"{name}: no {WEIGHT_SCALE} in {WEIGHTS_FILE}")
    scale = scale.reshape(n, -1)
    zero = get(WEIGHT_ZERO_POINT)
    packed = get(WEIGHT_PACKED)
    if packed is not None:  # pack-quantized: codes packed along K, zero points along N
        stored_shape = get(WEIGHT_SHAPE)
        if stored_shape is not None and tuple(int(v) for v in stored_shape.tolist()) != (n, k):
            raise UnsupportedArtifactError(f"{name}: weight_shape {stored_shape.tolist()} != model shape {(n, k)}")
        if zero is not None:
            zero = unpack_from_int32(zero, bits, torch.Size((n, scale.shape[1])), packed_dim=0).to(torch.int8)
        if bits == 4 and packed.dtype == torch.int32 and packed.shape == (n, packed_width(k)):
            return {"packed_int4": packed, "codes": None, "scale": scale, "zero": zero, "bits": bits}
        codes = unpack_from_int32(packed, bits, torch.Size((n, k))).to(torch.int8)
    else:  # int-quantized: one signed code per value
        codes = get(WEIGHT)
        if codes is None:
            raise UnsupportedArtifactError(f"{name}: neither {WEIGHT_PACKED} nor {WEIGHT} in {WEIGHTS_FILE}")
        codes = codes.to(torch.int8)
        if zero is not None:
            zero = zero.reshape(n, -1).to(torch.int8)
    return {"packed_int4": None, "codes": codes, "scale": scale, "zero": zero, "bits": bits}


def _group_size(args: dict[str, Any], k: int, groups: int) -> int:
    if args.get("strategy") == "group":
        return int(args["group_size"])
    if groups != 1:
        raise UnsupportedArtifactError(f"strategy {args.get('strategy')!r} with {groups} scales per row")
    return k


def _dequantize(state: dict[str, Any], group: int, k: int) -> torch.Tensor:
    codes = state["codes"] if state["codes"] is not None else unpack_int4(state["packed_int4"], k)
    scale = state["scale"].to(torch.float32).repeat_interleave(group, dim=1)[:, :k]
    q = codes.to(torch.float32)
    if state["zero"] is not None:
        q = q - state["zero"].to(torch.float32).repeat_interleave(group, dim=1)[:, :k]
    return q * scale


def build_quantized_linear(
    name: str, linear: nn.Linear, state: dict[str, Any], args: dict[str, Any], input_args: dict[str, Any] | None,
    dtype: torch.dtype, backend: Backend,
) -> tuple[nn.Module, str]:
    """The fastest exact module for one stored linear, and a short name of its kind."""
    n, k = linear.out_features, linear.in_features
    scale, zero, bits = state["scale"], state["zero"], state["bits"]
    group = _group_size(args, k, scale.shape[1])
    bias = None if linear.bias is None else linear.bias
    act_bits = None if input_args is None else int(input_args["num_bits"])
    act_sym = True if input_args is None else bool(input_args.get("symmetric", True))
    if input_args is not None and (input_args.get("strategy") != "token" or not input_args.get("dynamic", False)):
        raise UnsupportedArtifactError(f"{name}: only dynamic per-token activation quantization is supported, got {input_args}")

    int4_group_ok = group == k or (group % w4a16.MIN_GROUP_SIZE == 0 and k % group == 0)
    if input_args is None and bits <= 4 and int4_group_ok:
        packed = state["packed_int4"]
        if packed is None:  # 2/3-bit codes, or int4 stored one per byte: exact re-layout, no requantization
            packed = pack_int4(state["codes"])
        module = QuantLinear(k, n, 4, packed, scale.to(dtype), zero, None if group == k else group, bias, backend=backend)
        return module, "int4"
    if zero is None and group == k and bits <= 8 and (act_bits is None or (act_bits == 8 and act_sym)):
        codes = state["codes"] if state["codes"] is not None else unpack_int4(state["packed_int4"], k)
        module = QuantLinear(k, n, 8, codes.contiguous(), scale.reshape(n).to(dtype), bias=bias,
                             quantize_activations=act_bits is not None, backend=backend)
        return module, "int8_w8a8" if act_bits else "int8_w8a16"
    weight = _dequantize(state, group, k).to(dtype)
    module = DequantizedLinear(weight, act_bits, act_sym)
    if bias is not None:
        raise UnsupportedArtifactError(f"{name}: a biased linear without a QuantLinear path")
    return module, "dense_fallback"


def build_float_linear(
    tensors: Any, name: str, linear: nn.Linear, args: dict[str, Any], input_args: dict[str, Any] | None,
    qcfg: dict[str, Any], dtype: torch.dtype,
) -> tuple[nn.Module, str]:
    """A linear with float weights or float inputs (FP8, NVFP4, MXFP4, W4A8-FP8), decompressed by compressed-tensors.

    There is no CPU kernel for these formats, so the weight is held dense (`DequantizedLinear`),
    exactly as compressed-tensors' compressor for the group's format decompresses it, and the
    input is fake-quantized with compressed-tensors' own arithmetic.
    """
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    scheme = QuantizationScheme(targets=[name], weights=args, input_activations=input_args)
    fmt = next((g.get("format") for g in qcfg.get("config_groups", {}).values()
                if g.get("weights") == args and g.get("input_activations") == input_args and g.get("format")), None) or qcfg.get("format")
    prefix = f"{name}."
    local = {key[len(prefix):]: tensors.get_tensor(key) for key in tensors.keys()
             if key.startswith(prefix) and "." not in key[len(prefix):]}
    inputs = {k: local.pop(k) for k in ("input_scale", "input_global_scale", "input_zero_point") if k in local}
    local.pop("bias", None)
    # bf16 scales times codes would round again in bf16; compressed-tensors' own reload holds them in float32 parameters
    local = {k: v.float() if v.dtype in (torch.bfloat16, torch.float16) else v for k, v in local.items()}
    weight = BaseCompressor.get_value_from_registry(fmt).decompress(local, scheme)["weight"]
    if tuple(weight.shape) != (linear.out_features, linear.in_features):
        raise UnsupportedArtifactError(f"{name}: decompressed weight {tuple(weight.shape)} != model shape {(linear.out_features, linear.in_features)}")
    if linear.bias is not None:
        raise UnsupportedArtifactError(f"{name}: a biased linear without a QuantLinear path")
    in_args = QuantizationArgs.model_validate(input_args) if input_args is not None else None
    if in_args is not None and in_args.type != "float":
        module = DequantizedLinear(weight.to(torch.float32).to(dtype), int(in_args.num_bits), bool(in_args.symmetric))
    else:
        module = DequantizedLinear(weight.to(torch.float32).to(dtype), input_args=in_args,
                                   input_scale=inputs.get("input_scale"),
                                   input_global_scale=inputs.get("input_global_scale"))
    return module, f"dense_{fmt}"


def linear_schemes(model: nn.Module, qcfg: dict[str, Any]) -> dict[str, tuple[dict, dict | None]]:
    """Linear name -> (weight args, input activation args) from the config groups."""
    from compressed_tensors.utils import is_match

    ignore = qcfg.get("ignore") or []
    out = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        for group in qcfg.get("config_groups", {}).values():
            if group.get("weights") and is_match(name, module, group.get("targets", []), ignore):
                out[name] = (group["weights"], group.get("input_activations"))
                break
    return out
