"""One low-bit matmul for projections that read the same input (q/k/v, gate/up).

At decode sizes the CPU int4 op costs about as much per call as per byte, so one
576→960 call beats 576→576 + 2×576→192 by ~40%, and 576→3072 beats 2×576→1536 by ~10%.
Fusing is exact: the packed int4 rows, scales and zero points of the members are stacked
along the output dimension, nothing is requantized.

The transformers modules keep calling `q_proj(x)`, `k_proj(x)`, `v_proj(x)` one after the
other; each is a `ProjectionSlice` of a shared `FusedProjection`, which computes the stacked
output once per input tensor (same object, same version) and hands out slices of it.
"""

from __future__ import annotations

import torch
from torch import nn

from triton_kernels.quant_linear import QuantLinear


def can_fuse(linears: list[nn.Module]) -> bool:
    """Int4 QuantLinears (pack-quantized copy kept) with the same input width, group size, zero-point presence and backend, no bias."""
    if len(linears) < 2 or not all(isinstance(m, QuantLinear) and m.bits == 4 and not m.cpu_only for m in linears):
        return False
    first = linears[0]
    return all(
        m.in_features == first.in_features and m.group_size == first.group_size and m.backend == first.backend
        and (m.weight_zero_point is None) == (first.weight_zero_point is None) and m.bias is None
        and m.weight_scale.dtype == first.weight_scale.dtype
        and not (m._forward_hooks or m._forward_pre_hooks)  # a hook would be lost with the module
        for m in linears
    )


def fuse_int4(linears: list[QuantLinear]) -> QuantLinear:
    """One QuantLinear computing the members' outputs side by side (exact)."""
    first = linears[0]
    zeros = None if first.weight_zero_point is None else torch.cat([m.weight_zero_point for m in linears])
    return QuantLinear(
        first.in_features, sum(m.out_features for m in linears), 4,
        torch.cat([m.weight_packed for m in linears]), torch.cat([m.weight_scale for m in linears]),
        zeros, first.group_size, backend=first.backend,
    )


def _version(x: torch.Tensor) -> int:
    """In-place update counter; inference tensors have none (the cache then relies on identity and
    on the last member releasing it, i.e. on the members being called back to back)."""
    if x.is_inference():  # asking raises, and a raised error costs more than the projection's bookkeeping
        return -2
    return x._version


class FusedProjection(nn.Module):
    """A stacked QuantLinear whose last output is reused while its input is the same tensor."""

    def __init__(self, linear: QuantLinear):
        super().__init__()
        self.linear = linear
        # [input, its version, output], mutated in place: nn.Module.__setattr__ costs microseconds
        # per assignment, several per decode-step projection
        self._cache: list = [None, -1, None]

    def output_for(self, x: torch.Tensor) -> torch.Tensor:
        cache, version = self._cache, _version(x)
        if x is not cache[0] or version != cache[1]:
            cache[2] = self.linear(x)
            cache[0], cache[1] = x, version
        return cache[2]

    def release(self) -> None:
        self._cache[0] = self._cache[2] = None


class ProjectionSlice(nn.Module):
    """Output columns [start, stop) of a FusedProjection; stands where one projection stood."""

    def __init__(self, fused: FusedProjection, start: int, stop: int, in_features: int):
        super().__init__()
        self.fused = fused
        self.start, self.stop = start, stop
        self.in_features, self.out_features = in_features, stop - start
        self.last = False  # the last member drops the cached tensors once it has read them

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = self._modules["fused"]  # direct: nn.Module attribute lookup costs more than the slice
        y = fused.output_for(x)[..., self.start : self.stop]
        if self.last:
            fused.release()
        return y

    def extra_repr(self) -> str:
        return f"columns {self.start}:{self.stop} of a fused projection"


def fuse_projections(parent: nn.Module, names: list[str]) -> bool:
    """Replace `parent.<names>` by slices of one fused int4 matmul if they are compatible; whether it did."""
    members = [getattr(parent, n) for n in names]
    if not can_fuse(members):
        return False
    fused = FusedProjection(fuse_int4(members))
    start = 0
    slices = []
    for name, member in zip(names, members):
        part = ProjectionSlice(fused, start, start + member.out_features, member.in_features)
        setattr(parent, name, part)
        slices.append(part)
        start += member.out_features
    slices[-1].last = True
    return True
