"""`weight_bytes`: the bytes of weights a loaded model holds, by kind (what bench/decode.py reports)."""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from compressor.inference.fused_projections import FusedProjection
from compressor.inference.modules import DequantizedLinear, InputKronecker, InputRotation
from triton_kernels.quant_linear import QuantLinear


def weight_bytes(model: nn.Module, include_runtime_layouts: bool = True) -> dict[str, int]:
    """Bytes of the weights a model holds, by kind; QuantLinear's lazily built CPU int4 layout counted if present."""
    seen: set[int] = set()
    out: Counter = Counter()

    def add(kind: str, t: torch.Tensor | None) -> None:
        if t is None or t.device.type == "meta":
            return
        key = t.untyped_storage().data_ptr()
        if key in seen:
            return
        seen.add(key)
        out[kind] += t.untyped_storage().nbytes()

    for name, module in model.named_modules():
        for pname, t in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            if pname in ("inv_freq", "original_inv_freq"):
                continue
            if module is getattr(model, "lm_head", None):
                kind = "lm_head"
            elif isinstance(module, (QuantLinear, FusedProjection)):
                kind = "quantized_linears"
            elif isinstance(module, (InputRotation, InputKronecker)):
                kind = "online_rotations"
            elif isinstance(module, nn.Embedding):
                kind = "embedding"
            elif isinstance(module, (nn.Linear, DequantizedLinear)):
                kind = "dense_linears"
            else:
                kind = "other"
            add(kind, t)
        if include_runtime_layouts and isinstance(module, QuantLinear):  # caches built on first use
            for t in [*(getattr(module, "_native_int4", ()) or ()), module._int8_padded]:
                if isinstance(t, torch.Tensor):
                    add("quantized_linears_cpu_layout", t)
    out["total"] = sum(out.values())
    return dict(out)
