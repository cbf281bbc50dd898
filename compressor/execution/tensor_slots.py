"""Every tensor a decoder layer holds, by a stable key, so a finished layer can leave memory and come back whole.

Besides parameters and buffers, methods keep tensors on modules as plain attributes: the
quantized weight's codes and scales (a dataclass), calibrated KV scales (a dict). A layer
that is offloaded must keep all of them, or its export and evaluation would change; this
walker finds them without each method having to register anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class TensorSlot:
    key: str  # e.g. "self_attn.q_proj.linear.weight", "mlp.down_proj.quantized_weight.codes", "self_attn.kv_scales.k"
    get: Callable[[], torch.Tensor]
    set: Callable[[torch.Tensor], None]


def _param_setter(module: nn.Module, name: str) -> Callable[[torch.Tensor], None]:
    def set_(t: torch.Tensor) -> None:
        old = module._parameters[name]
        module._parameters[name] = nn.Parameter(t, requires_grad=bool(old is not None and old.requires_grad))
    return set_


def tensor_slots(root: nn.Module) -> list[TensorSlot]:
    """Parameters, buffers and tensor-valued attributes (plain, in dicts, in dataclass fields) under `root`."""
    slots: list[TensorSlot] = []
    for prefix, module in root.named_modules():
        dot = f"{prefix}." if prefix else ""
        for name, p in module._parameters.items():
            if p is not None:
                slots.append(TensorSlot(f"{dot}{name}", lambda m=module, n=name: m._parameters[n], _param_setter(module, name)))
        for name, b in module._buffers.items():
            if b is not None:
                slots.append(TensorSlot(f"{dot}{name}", lambda m=module, n=name: m._buffers[n],
                                        lambda t, m=module, n=name: m._buffers.__setitem__(n, t)))
        for attr, value in vars(module).items():
            if attr.startswith("_"):
                continue
            if isinstance(value, torch.Tensor):
                slots.append(TensorSlot(f"{dot}{attr}", lambda m=module, a=attr: getattr(m, a),
                                        lambda t, m=module, a=attr: setattr(m, a, t)))
            elif isinstance(value, dict):
                for k, v in value.items():
                    if isinstance(v, torch.Tensor):
                        slots.append(TensorSlot(f"{dot}{attr}.{k}", lambda d=value, k=k: d[k],
                                                lambda t, d=value, k=k: d.__setitem__(k, t)))
            elif dataclasses.is_dataclass(value) and not isinstance(value, type):
                for f in dataclasses.fields(value):
                    if isinstance(getattr(value, f.name), torch.Tensor):
                        slots.append(TensorSlot(f"{dot}{attr}.{f.name}", lambda o=value, n=f.name: getattr(o, n),
                                                lambda t, o=value, n=f.name: setattr(o, n, t)))
    return slots


def to_meta(slots: list[TensorSlot]) -> None:
    """Free every slot's memory, keeping shapes and dtypes (the module tree and its settings stay)."""
    for slot in slots:
        t = slot.get()
        slot.set(torch.empty(t.shape, dtype=t.dtype, device="meta"))
