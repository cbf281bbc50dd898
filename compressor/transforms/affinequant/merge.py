"""Fuse a trained layer's transforms into its weights (float64), then quantize them with the learned clipping.

What stays after the merge: nothing for the diagonal LN form, v/o and q/k (the model is a plain
Llama again); for the dense LN form, A⁻¹ after each RMSNorm as a run-time matmul, marked with
`runtime_transform` so exports list it among the reasons the artifact is not servable.
"""

from __future__ import annotations

from typing import Any

import torch

from compressor.models.adapter import DecoderAdapter, DecoderLayerParts
from compressor.quant.compressed_linear import install_quantized_weight, wrap_linear
from compressor.spec import ActivationQuantConfig
from compressor.transforms.affinequant.clipping import LearnableClipping
from compressor.transforms.fusion import (
    attach_runtime_output_matrix,
    fold_smoothing_into_norm,
    fuse_input_transform,
    fuse_query_key_transforms,
    fuse_value_head_transforms,
)

DENSE_NORM_REASON = "AffineQuant dense matrix applied after an RMSNorm at run time (ln_matrix: dense)"


@torch.no_grad()
def merge_layer_transforms(parts: DecoderLayerParts, adapter: DecoderAdapter, matrices: dict[str, torch.Tensor]) -> None:
    """Fuse `matrices` (effective, float64; see `LayerTransforms.final`) into the layer's weights."""
    for key, norm, readers in (
        ("ln_attn", parts.input_norm, [parts.q_proj, parts.k_proj, parts.v_proj]),
        ("ln_mlp", parts.post_attention_norm, [parts.gate_proj, parts.up_proj]),
    ):
        a = matrices.get(key)
        if a is None:
            continue
        if a.dim() == 1:
            fold_smoothing_into_norm(norm, readers, a, adapter.norm_offset)
        else:
            fuse_input_transform(readers, a)
            attach_runtime_output_matrix(norm, torch.linalg.inv(a), DENSE_NORM_REASON)
    if "qk" in matrices:
        fuse_query_key_transforms(parts, adapter, matrices["qk"])
    if "vo" in matrices:
        fuse_value_head_transforms(parts, adapter, matrices["vo"])


@torch.no_grad()
def quantize_layer(
    parts: DecoderLayerParts, clips: dict[str, LearnableClipping], activations: ActivationQuantConfig | None
) -> list[dict[str, Any]]:
    """Quantize every linear of the (merged) layer in place and keep its codes; one error record per linear."""
    records = []
    for name in parts.linears():
        parent, attr = name.split(".")
        wrapped = wrap_linear(getattr(parts.layer, parent), attr)
        records.append(install_quantized_weight(parts, name, clips[name].quantize(wrapped.linear.weight.data)))
        wrapped.input_quant = activations
    return records
