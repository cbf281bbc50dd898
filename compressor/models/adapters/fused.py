"""Fused projections (Phi-3's `qkv_proj`, `gate_up_proj`) split into one linear per role while a job runs.

Every method works on q/k/v and gate/up separately (rotations touch v alone, scales differ per
role), so in memory the fused linear becomes its row blocks, registered on the same parent
(`self_attn.q_proj`, …), and the fused name holds `ConcatProjections`, which concatenates them
so the family's own forward runs unchanged. Row blocks quantize exactly as the fused rows
would (every quantizer here is per row or per (row, group)), so `fuse_projections` can stack
the parts' codes and scales back into one quantized linear under the checkpoint's name.
"""

from __future__ import annotations

import torch
from torch import nn

from compressor.quant.compressed_linear import FakeQuantLinear, plain_linear
from compressor.quant.quantizer import QuantizedWeight


class ConcatProjections(nn.Module):
    """Stands where the fused linear was: [parent.<part> (x) for part in parts] concatenated on the last dim."""

    def __init__(self, owner: nn.Module, parts: tuple[str, ...]):
        super().__init__()
        object.__setattr__(self, "_owner", owner)  # not a submodule: the parts stay registered on the owner only
        self.parts = parts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([getattr(self._owner, name)(x) for name in self.parts], dim=-1)

    def extra_repr(self) -> str:
        return f"concatenates {', '.join(self.parts)}"


def _row_block(linear: nn.Linear, rows: slice) -> nn.Linear:
    out = nn.Linear(linear.in_features, rows.stop - rows.start, bias=linear.bias is not None,
                    dtype=linear.weight.dtype, device=linear.weight.device)
    out.weight.data.copy_(linear.weight.data[rows])
    if linear.bias is not None:
        out.bias.data.copy_(linear.bias.data[rows])
    return out


def _slice_quantized(q: QuantizedWeight, rows: slice) -> QuantizedWeight:
    return QuantizedWeight(codes=q.codes[rows].clone(), scale=q.scale[rows].clone(), zero=q.zero[rows].clone(),
                           group_size=q.group_size, bits=q.bits, symmetric=q.symmetric)


def split_projection(owner: nn.Module, fused: str, parts: dict[str, int]) -> None:
    """Replace `owner.<fused>` by one linear per part (`parts`: name -> rows, in checkpoint order)."""
    module = getattr(owner, fused)
    if isinstance(module, ConcatProjections):
        return
    lin = plain_linear(module)
    if sum(parts.values()) != lin.out_features:
        raise ValueError(f"{fused}: parts {parts} do not add up to its {lin.out_features} rows")
    start = 0
    for name, size in parts.items():
        rows = slice(start, start + size)
        block = _row_block(lin, rows)
        if isinstance(module, FakeQuantLinear):
            wrapped = FakeQuantLinear(block)
            wrapped.input_quant = module.input_quant
            wrapped.take_input_transform(module)
            if module.quantized_weight is not None:
                wrapped.quantized_weight = _slice_quantized(module.quantized_weight, rows)
            block = wrapped
        setattr(owner, name, block)
        start += size
    setattr(owner, fused, ConcatProjections(owner, tuple(parts)))


def _same(values: list, what: str, fused: str):
    if any(v != values[0] for v in values[1:]):
        raise ValueError(f"{fused}: its parts carry different {what}; one fused linear cannot hold them")
    return values[0]


def fuse_projection(owner: nn.Module, fused: str) -> None:
    """Undo `split_projection`: one linear (quantized if its parts are) under the fused name again."""
    module = getattr(owner, fused)
    if not isinstance(module, ConcatProjections):
        return
    blocks = [getattr(owner, name) for name in module.parts]
    plains = [plain_linear(b) for b in blocks]
    weight = torch.cat([p.weight.data for p in plains])
    has_bias = plains[0].bias is not None
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=has_bias, dtype=weight.dtype, device=weight.device)
    lin.weight.data.copy_(weight)
    if has_bias:
        lin.bias.data.copy_(torch.cat([p.bias.data for p in plains]))
    wrapped = [b for b in blocks if isinstance(b, FakeQuantLinear)]
    result: nn.Module = lin
    if wrapped:
        if len(wrapped) != len(blocks):
            raise ValueError(f"{fused}: only some of its parts were compressed")
        result = FakeQuantLinear(lin)
        result.input_quant = _same([b.input_quant for b in wrapped], "input quantizers", fused)
        first = wrapped[0].input_transform_tensors()
        for b in wrapped[1:]:  # the factors themselves: a dense product would cost width² per part
            if any((t is None) != (u is None) or (t is not None and not torch.equal(t, u))
                   for t, u in zip(b.input_transform_tensors(), first)):
                raise ValueError(f"{fused}: its parts carry different online input transforms")
        _same([b.input_clip for b in wrapped], "input clipping", fused)
        result.take_input_transform(wrapped[0])
        qs = [b.quantized_weight for b in wrapped]
        if any(q is not None for q in qs):
            if any(q is None for q in qs):
                raise ValueError(f"{fused}: only some of its parts have quantized weights")
            _same([(q.bits, q.symmetric, q.group_size) for q in qs], "weight quantizers", fused)
            result.quantized_weight = QuantizedWeight(
                codes=torch.cat([q.codes for q in qs]), scale=torch.cat([q.scale for q in qs]),
                zero=torch.cat([q.zero for q in qs]), group_size=qs[0].group_size, bits=qs[0].bits, symmetric=qs[0].symmetric,
            )
    for name in module.parts:
        delattr(owner, name)
    setattr(owner, fused, result)
