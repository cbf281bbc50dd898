"""QuantLinear: an nn.Linear replacement holding int4 or int8 weights, dispatching per device.

* CUDA (triton installed): our Triton kernels (``w4a16``; ``w8a8`` when activations are quantised).
* CPU: torch's native low-bit ops, which beat dense bf16 ``F.linear`` at decode sizes:
  ``_weight_int4pack_mm_for_cpu`` (int4), ``_weight_int8pack_mm`` (int8 weights, 16-bit
  activations) and ``torch._int_mm`` (int8 x int8). They are fed bf16 activations because
  fp32 activations take a path several times slower than dense.
* Anything else, or ``backend="reference"``: the plain-torch references.

The int4 storage is compressed-tensors ``pack-quantized`` (see ``packing``); the CPU int4 op
wants another layout and a float zero point, so it is converted once, lazily, on first use:
torch computes ``(u - 8) * s + zf`` with ``u = q + 8`` unsigned, which equals our
``(q - z) * s`` when ``zf = -z * s``. The op also needs N % 16 == 0, K % group == 0 and a group
in {32, 64, 128, 256}; other shapes are padded (N with zero rows, K with zero columns and
zero activations) and other groups re-expressed by repeating scales, which is exact (see
``cpu_int4``). For CPU inference `drop_pack_quantized` then keeps only that layout: the layer
reads its codes back from it when anything else needs them. Where this process's torch lays
the nibbles out in a way `cpu_int4.layout()` cannot read, the layer keeps both copies: same
outputs, more bytes.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from triton_kernels import cpu_int4, w4a16, w8a8
from triton_kernels.packing import pack_int4, packed_width

Backend = Literal["auto", "triton", "native", "reference"]
_INT4_MM_CPU = torch.ops.aten._weight_int4pack_mm_for_cpu
INT8PACK_K_MULTIPLE = 16  # _weight_int8pack_mm needs K % 16 == 0 (checked on torch 2.13 CPU)


def rtn_quantize_int4(
    weight: torch.Tensor, group_size: int | None, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Round-to-nearest int4 of a weight [N, K]: q int8 [N, K], scales fp32 [N, K/G], zeros or None.

    Asymmetric zero points are integers in [-8, 7]; the range is widened to include 0 so the
    zero point is always representable.
    """
    n, k = weight.shape
    group = k if group_size is None else group_size
    if k % group:
        raise ValueError(f"group_size {group} does not divide K={k}")
    wg = weight.to(torch.float32).reshape(n, k // group, group)
    if symmetric:
        scales = wg.abs().amax(dim=-1).clamp(min=1e-8) / 7
        q = torch.round(wg / scales[..., None]).clamp(-8, 7)
        zeros = None
    else:
        lo = wg.amin(dim=-1).clamp(max=0)
        hi = wg.amax(dim=-1).clamp(min=0)
        scales = ((hi - lo) / 15).clamp(min=1e-8)
        zeros = (-8 - torch.round(lo / scales)).clamp(-8, 7)
        q = (torch.round(wg / scales[..., None]) + zeros[..., None]).clamp(-8, 7)
        zeros = zeros.to(torch.int8)
    return q.reshape(n, k).to(torch.int8), scales, zeros


class QuantLinear(nn.Module):
    """Linear layer with int4 (grouped or per-channel, sym/asym) or int8 per-channel weights.

    ``bits=4``: ``weight_packed`` int32 [N, ceil(K/8)], ``weight_scale`` [N, K/G],
    optional ``weight_zero_point`` int8 [N, K/G]; ``group_size=None`` is per-channel.
    ``bits=8``: ``weight`` int8 [N, K], ``weight_scale`` [N], symmetric. With
    ``quantize_activations=True`` activations are quantised per token to int8 (W8A8),
    otherwise they stay in float (W8A16).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bits: int,
        weight: torch.Tensor,
        weight_scale: torch.Tensor,
        weight_zero_point: torch.Tensor | None = None,
        group_size: int | None = None,
        bias: torch.Tensor | None = None,
        quantize_activations: bool = False,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        self.in_features, self.out_features, self.bits = in_features, out_features, bits
        self.group_size = None if group_size == in_features else group_size
        self.quantize_activations = quantize_activations
        self.backend: Backend = backend
        n, k = out_features, in_features
        if bits == 4:
            if quantize_activations:
                raise ValueError("int4 QuantLinear keeps 16-bit activations (W4A16)")
            if weight.dtype != torch.int32 or weight.shape != (n, packed_width(k)):
                raise ValueError(f"bits=4 needs packed int32 [{n}, {packed_width(k)}], got "
                                 f"{weight.dtype} {tuple(weight.shape)}")
            group = k if self.group_size is None else self.group_size
            if k % group or (self.group_size is not None and group % w4a16.MIN_GROUP_SIZE):
                raise ValueError(f"group_size must be a multiple of {w4a16.MIN_GROUP_SIZE} "
                                 f"dividing K={k}, got {group_size}")
            if weight_scale.shape != (n, k // group):
                raise ValueError(f"weight_scale must be [{n}, {k // group}], got {tuple(weight_scale.shape)}")
            if weight_zero_point is not None and weight_zero_point.shape != weight_scale.shape:
                raise ValueError("weight_zero_point must match weight_scale's shape")
            self.register_buffer("weight_packed", weight)
        elif bits == 8:
            if weight_zero_point is not None or self.group_size is not None:
                raise ValueError("int8 QuantLinear is symmetric per-channel")
            if weight.dtype != torch.int8 or weight.shape != (n, k) or weight_scale.shape != (n,):
                raise ValueError(f"bits=8 needs int8 [{n}, {k}] weights and [{n}] scales")
            self.register_buffer("weight", weight)
        else:
            raise ValueError(f"bits must be 4 or 8, got {bits}")
        self.register_buffer("weight_scale", weight_scale)
        self.register_buffer("weight_zero_point", weight_zero_point)
        self.register_buffer("bias", bias)
        self._native_int4: tuple = ()
        self._native_int4_key: tuple | None = None
        self.cpu_only = False  # set by drop_pack_quantized
        self._int8_padded: torch.Tensor | None = None
        self._int8_padded_key: tuple | None = None

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        bits: int = 4,
        group_size: int | None = None,
        symmetric: bool = True,
        quantize_activations: bool = False,
        backend: Backend = "auto",
    ) -> QuantLinear:
        """RTN-quantise a float nn.Linear; scales keep the linear's dtype. ``group_size=None``: per-channel."""
        w = linear.weight.detach()
        bias = None if linear.bias is None else linear.bias.detach().clone()
        if bits == 4:
            q, scales, zeros = rtn_quantize_int4(w, group_size, symmetric)
            return cls(linear.in_features, linear.out_features, 4, pack_int4(q), scales.to(w.dtype),
                       zeros, group_size, bias, backend=backend)
        if bits == 8:
            if not symmetric or group_size is not None:
                raise ValueError("int8 quantisation here is symmetric per-channel only")
            q, scales = w8a8.quantize_per_channel_int8(w)
            return cls(linear.in_features, linear.out_features, 8, q, scales.to(w.dtype),
                       bias=bias, quantize_activations=quantize_activations, backend=backend)
        raise ValueError(f"bits must be 4 or 8, got {bits}")

    def dequantized_weight(self) -> torch.Tensor:
        """Float32 [N, K] weight this layer represents."""
        if self.bits == 4:
            packed, scale, zero = self.pack_quantized()
            return w4a16.dequantize_int4(packed, scale, zero, self.group_size, self.in_features)
        return self.weight.to(torch.float32) * self.weight_scale.to(torch.float32)[:, None]

    def resolve_backend(self, x: torch.Tensor) -> Backend:
        """The path ``forward`` takes for x: Triton on CUDA, native ops on CPU, else reference."""
        if self.backend != "auto":
            return self.backend
        if self.cpu_only:
            return "native" if x.device.type == "cpu" else "reference"
        if x.is_cuda and w4a16.triton is not None and (self.bits == 4 or self.quantize_activations):
            return "triton"  # W8A16 has no Triton kernel here: it falls through to the reference
        if x.device.type == "cpu":
            return "native"
        return "reference"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead, k = x.shape[:-1], x.shape[-1]
        x2 = x.reshape(-1, k)
        if self.cpu_only and self.backend in ("auto", "native") and x.device.type == "cpu":
            return self._forward_compact_cpu(x2).reshape(*lead, self.out_features)
        backend = self.resolve_backend(x)
        if backend == "triton":
            y = self._forward_triton(x2)
        elif backend == "native":
            y = self._forward_native(x2)
        elif backend == "reference":
            y = self._forward_reference(x2)
        else:
            raise ValueError(f"unknown backend {backend!r}")
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*lead, self.out_features)

    def _forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        if self.bits == 4:
            return w4a16.w4a16_reference(x, *self.pack_quantized(), self.group_size)
        if self.quantize_activations:
            return w8a8.w8a8_reference(x, self.weight, self.weight_scale)
        w = self.dequantized_weight().to(x.dtype)
        return (x.to(torch.float32) @ w.to(torch.float32).t()).to(x.dtype)

    def _forward_triton(self, x: torch.Tensor) -> torch.Tensor:
        if self.bits == 4:
            return w4a16.w4a16_matmul(x, *self.pack_quantized(), self.group_size)
        if not self.quantize_activations:
            raise ValueError("no Triton kernel for W8A16; use the native or reference backend")
        return w8a8.w8a8_linear(x, self.weight, self.weight_scale)

    def _forward_compact_cpu(self, x: torch.Tensor) -> torch.Tensor:
        """`_forward_native` for a `cpu_only` int4 layer, lean: a decode step calls it ~120 times, and
        the generic path's bookkeeping cost a fifth of the op itself at decode sizes."""
        buffers = self._buffers
        y = self._int4_mm_cpu(x, buffers["cpu_int4_packed"], buffers["cpu_int4_scales_zeros"], *self._cpu_int4_shape)
        bias = buffers["bias"]
        return y if bias is None else y + bias.to(y.dtype)

    def _int4_mm_cpu(self, x: torch.Tensor, packed: torch.Tensor, scales_and_zeros: torch.Tensor,
                     group: int, k_padded: int) -> torch.Tensor:
        """torch's CPU int4 op on bf16 activations, K padded and the padded output rows dropped."""
        xb = x if x.dtype is torch.bfloat16 else x.to(torch.bfloat16)
        if k_padded != self.in_features:
            xb = F.pad(xb, (0, k_padded - self.in_features))
        y = _INT4_MM_CPU(xb.contiguous(), packed, group, scales_and_zeros)
        if y.shape[1] != self.out_features:
            y = y[:, : self.out_features]
        return y if y.dtype is x.dtype else y.to(x.dtype)

    def _forward_native(self, x: torch.Tensor) -> torch.Tensor:
        if self.bits == 4:
            return self._int4_mm_cpu(x, *self._native_int4_weights())
        if self.quantize_activations:
            x_q, x_scale = w8a8.quantize_per_token_int8(x)
            acc = torch._int_mm(x_q, self.weight.t())
            y = acc.to(torch.float32) * x_scale[:, None] * self.weight_scale.to(torch.float32)[None, :]
            return y.to(x.dtype)
        xb, weight = x.to(torch.bfloat16), self.weight
        pad = -self.in_features % INT8PACK_K_MULTIPLE
        if pad:  # torch 2.13's op returns garbage or crashes on other K: zero columns are exact
            key = (weight.data_ptr(), weight._version)
            if self._int8_padded_key != key:
                self._int8_padded, self._int8_padded_key = F.pad(weight, (0, pad)), key
            xb, weight = F.pad(xb, (0, pad)), self._int8_padded
        y = torch.ops.aten._weight_int8pack_mm(xb.contiguous(), weight, self.weight_scale.to(torch.bfloat16))
        return y.to(x.dtype)

    def _native_int4_weights(self) -> cpu_int4.CpuInt4:
        """(packed uint8, qScaleAndZeros bf16 [K'/G', N', 2], G', K') for the CPU int4 op, cached."""
        if self.cpu_only:  # the only copy: reloading a state dict replaces these buffers
            buffers = self._buffers
            return cpu_int4.CpuInt4(buffers["cpu_int4_packed"], buffers["cpu_int4_scales_zeros"], *self._cpu_int4_shape)
        buffers = self._buffers  # direct dict access: this check runs on every forward
        key = tuple((t.data_ptr(), t._version) for t in
                    (buffers["weight_packed"], buffers["weight_scale"], buffers["weight_zero_point"]) if t is not None)
        if key == self._native_int4_key:
            return self._native_int4
        group = self.in_features if self.group_size is None else self.group_size
        self._native_int4 = cpu_int4.build(self.weight_packed, self.weight_scale, self.weight_zero_point,
                                           group, self.in_features)
        self._native_int4_key = key
        return self._native_int4

    def drop_pack_quantized(self) -> bool:
        """Keep only the CPU int4 layout, the one the CPU op reads; whether it did.

        The pack-quantized copy would double the resident int4 bytes. Afterwards the layer is
        `cpu_only`: ``weight_packed``/``weight_scale``/``weight_zero_point`` are None and
        `pack_quantized()` rebuilds them on demand (exact). Skipped for int8, off-CPU tensors,
        or when this torch's layout is not the one `cpu_int4` reads back.
        """
        if self.cpu_only:
            return True
        if self.bits != 4 or self.weight_packed.device.type != "cpu" or not cpu_int4.layout_is_known():
            return False
        native = self._native_int4_weights()
        self._scale_dtype = self.weight_scale.dtype
        self._has_zero_point = self.weight_zero_point is not None
        self._cpu_int4_shape = (native.group, native.k_padded)
        self.weight_packed = self.weight_scale = self.weight_zero_point = None
        self.register_buffer("cpu_int4_packed", native.packed)
        self.register_buffer("cpu_int4_scales_zeros", native.scales_zeros)
        self._native_int4, self._native_int4_key = (), None
        self.cpu_only = True
        return True

    def pack_quantized(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(weight_packed, weight_scale, weight_zero_point) of an int4 layer, rebuilt if `cpu_only`."""
        if not self.cpu_only:
            return self.weight_packed, self.weight_scale, self.weight_zero_point
        group = self.in_features if self.group_size is None else self.group_size
        packed, scale, zero = cpu_int4.to_pack_quantized(self._native_int4_weights(), self.out_features,
                                                         self.in_features, group, self._has_zero_point)
        return packed, scale.to(self._scale_dtype), zero

    def dequantized_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Float32 [T, K] weight rows (output channels) `rows`, as the CPU op computes them."""
        if self.bits == 4 and (self.cpu_only or rows.device.type == "cpu") and cpu_int4.layout_is_known():
            return cpu_int4.dequantize_rows(self._native_int4_weights(), rows, self.in_features)
        if self.bits == 4:  # from the pack-quantized words: only the rows asked for
            zero = None if self.weight_zero_point is None else self.weight_zero_point[rows]
            return w4a16.dequantize_int4(self.weight_packed[rows], self.weight_scale[rows], zero,
                                         self.group_size, self.in_features)
        return self.weight[rows].to(torch.float32) * self.weight_scale[rows].to(torch.float32)[:, None]

    def extra_repr(self) -> str:
        group = "per-channel" if self.group_size is None else f"group={self.group_size}"
        asym = ", asym" if (self._has_zero_point if self.cpu_only else self.weight_zero_point is not None) else ""
        act = ", act=int8" if self.quantize_activations else ""
        cpu = ", cpu_int4 layout only" if self.cpu_only else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"{group}{asym}{act}, backend={self.backend}{cpu}")
