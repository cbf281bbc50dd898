"""Fusing equivalent transforms into weights (float64), shared by every rotation/scaling method.

Row-vector convention: a linear computes y = x Wᵀ. Rotating the residual stream by an
orthogonal Q (h' = h Q) means input-side weights become W Q and output-side weights Qᵀ W.
All products are formed in float64 and cast back, so a fused model with quantization off
matches the original to ~1e-6 relative in fp32.
"""

from __future__ import annotations

import torch
from torch import nn

from compressor.models.adapter import LlamaFamilyAdapter
from compressor.quant.compressed_linear import compressed, plain_linear


def _set(param: torch.Tensor, value: torch.Tensor) -> None:
    param.data.copy_(value.to(param.dtype))


def scale_input_columns(linear: nn.Module, scale: torch.Tensor) -> None:
    """W ← W diag(scale): the layer now expects inputs divided by `scale`."""
    w = plain_linear(linear).weight
    _set(w, w.data.double() * scale.double().unsqueeze(0))


def rotate_input_side(linear: nn.Module, q: torch.Tensor) -> None:
    """W ← W Q, for a linear reading a stream that is now h Q."""
    w = plain_linear(linear).weight
    _set(w, w.data.double() @ q.double())


def rotate_output_side(linear: nn.Module, q: torch.Tensor) -> None:
    """W ← Qᵀ W (and b ← b Q), for a linear whose output stream is now y Q."""
    lin = plain_linear(linear)
    _set(lin.weight, q.double().T @ lin.weight.data.double())
    if lin.bias is not None:
        _set(lin.bias, lin.bias.data.double() @ q.double())


def fold_norms_into_linears(model: nn.Module, adapter: LlamaFamilyAdapter) -> None:
    """Move every RMSNorm weight γ into the linears it feeds (W ← W diag γ) and set γ = 1.

    Needed before rotating the residual stream: RMSNorm commutes with an orthogonal Q
    only when its weight is all ones.
    """
    for parts in adapter.all_layer_parts(model):
        for norm, linears in (
            (parts.input_norm, (parts.q_proj, parts.k_proj, parts.v_proj)),
            (parts.post_attention_norm, (parts.gate_proj, parts.up_proj)),
        ):
            for lin in linears:
                scale_input_columns(lin, norm.weight.data)
            norm.weight.data.fill_(1.0)
    final = adapter.final_norm(model)
    scale_input_columns(adapter.lm_head(model), final.weight.data)
    final.weight.data.fill_(1.0)


def rotate_residual_stream(model: nn.Module, adapter: LlamaFamilyAdapter, q: torch.Tensor) -> None:
    """Fuse a global orthogonal Q (hidden × hidden) into embeddings and every residual reader/writer."""
    emb = adapter.embeddings(model)
    _set(emb.weight, emb.weight.data.double() @ q.double())
    for parts in adapter.all_layer_parts(model):
        for lin in (parts.q_proj, parts.k_proj, parts.v_proj, parts.gate_proj, parts.up_proj):
            rotate_input_side(lin, q)
        for lin in (parts.o_proj, parts.down_proj):
            rotate_output_side(lin, q)
    rotate_input_side(adapter.lm_head(model), q)


def rotate_value_heads(parts, adapter: LlamaFamilyAdapter, rotations: list[torch.Tensor]) -> None:
    """Rotate each KV head's values by its own orthogonal matrix (head_dim square), fused into v_proj and o_proj.

    `rotations[j]` acts on KV head j; every query head of its group sees the same rotation on
    o_proj's input columns, so grouped-query attention stays exact.
    """
    d, groups = adapter.head_dim, adapter.num_heads // adapter.num_kv_heads
    v, o = plain_linear(parts.v_proj), plain_linear(parts.o_proj)
    wv, wo = v.weight.data.double(), o.weight.data.double()
    for j, r in enumerate(rotations):
        r = r.double()
        rows = slice(j * d, (j + 1) * d)
        wv[rows] = r.T @ wv[rows]
        if v.bias is not None:
            v.bias.data[rows] = (v.bias.data[rows].double() @ r).to(v.bias.dtype)
        for h in range(j * groups, (j + 1) * groups):
            cols = slice(h * d, (h + 1) * d)
            wo[:, cols] = wo[:, cols] @ r
    _set(v.weight, wv)
    _set(o.weight, wo)


def attach_online_input_rotation(parent: nn.Module, attr: str, rotation: torch.Tensor) -> None:
    """Fuse W ← W R into `parent.attr` and rotate its input online (x ← x R) so y is unchanged."""
    wrapped = compressed(parent, attr)
    rotate_input_side(wrapped, rotation)
    wrapped.set_input_rotation(rotation)
