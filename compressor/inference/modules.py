"""Inference modules `load` puts where a stock graph has none: online input transforms and a dense fallback."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from compressor.quant.float_formats import fake_quantize_float_activation
from compressor.quant.kronecker import kron_apply
from compressor.quant.online_rotation import apply_input_rotation
from compressor.quant.quantizer import fake_quantize_per_token


class InputRotation(nn.Module):
    """`inner(x @ R)`: the online rotation the exporter stored for this linear (R shared between layers).

    Applied in the same float order as the in-memory model and compressed-tensors' reload.
    """

    def __init__(self, rotation: torch.Tensor, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.register_buffer("rotation", rotation, persistent=False)

    @property
    def in_features(self) -> int:
        return self.rotation.shape[0]

    @property
    def out_features(self) -> int:
        return self.inner.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(apply_input_rotation(x, self.rotation))


class InputKronecker(nn.Module):
    """`inner((x ⊙ smooth)(left ⊗ right))`: a learned Kronecker input transform, as two small matmuls."""

    def __init__(self, smooth: torch.Tensor, left: torch.Tensor, right: torch.Tensor, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.register_buffer("smooth", smooth, persistent=False)
        self.register_buffer("left", left, persistent=False)
        self.register_buffer("right", right, persistent=False)

    @property
    def in_features(self) -> int:
        return self.smooth.shape[0]

    @property
    def out_features(self) -> int:
        return self.inner.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(kron_apply(x.to(self.left.dtype) * self.smooth, self.left, self.right).to(x.dtype))


class DequantizedLinear(nn.Module):
    """Exact but dense: the dequantized weight, with fake quantization of the input if any.

    Int inputs are quantized per token; float inputs (FP8, NVFP4, MXFP4) with compressed-tensors'
    `input_args` and the stored `input_scale` / `input_global_scale`, as at export.
    """

    def __init__(self, weight: torch.Tensor, input_bits: int | None = None, input_symmetric: bool = True,
                 input_args: Any = None, input_scale: torch.Tensor | None = None, input_global_scale: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("input_scale", input_scale)
        self.register_buffer("input_global_scale", input_global_scale)
        self.input_bits, self.input_symmetric, self.input_args = input_bits, input_symmetric, input_args
        self.out_features, self.in_features = weight.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_args is not None:
            x = fake_quantize_float_activation(x, self.input_args, self.input_scale, self.input_global_scale)
        elif self.input_bits is not None:
            x = fake_quantize_per_token(x, self.input_bits, self.input_symmetric)
        return nn.functional.linear(x, self.weight.to(x.dtype))

    def extra_repr(self) -> str:
        act = f", act=int{self.input_bits}" if self.input_bits and self.input_args is None else ""
        if self.input_args is not None:
            act = f", act={self.input_args.type}{self.input_args.num_bits}/{self.input_args.strategy}"
        return f"in_features={self.in_features}, out_features={self.out_features}{act}"
