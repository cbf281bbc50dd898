"""Base weights + OSTQuant transforms → transformed weights, one function for training and fusion.

Training calls it in float32 with gradients to the transforms; fusion calls it once in
float64 and writes the result into the model, so what was trained is exactly what is fused.
Row-vector convention (y = x Wᵀ): a reader of a stream rotated by R gets W R, a writer Rᵀ W.
"""

from __future__ import annotations

import torch
from torch import nn

from compressor.models.adapter import DecoderAdapter, DecoderLayerParts
from compressor.quant.compressed_linear import plain_linear
from compressor.transforms.hadamard import apply_random_hadamard
from compressor.transforms.ostquant.parameters import OSTParameters


def _w(module: nn.Module, dtype: torch.dtype) -> torch.Tensor:
    return plain_linear(module).weight.detach().to(dtype)


def _b(module: nn.Module, dtype: torch.dtype) -> torch.Tensor | None:
    bias = plain_linear(module).bias
    return None if bias is None else bias.detach().to(dtype)


def effective_layer_weights(
    parts: DecoderLayerParts, adapter: DecoderAdapter, params: OSTParameters, dtype: torch.dtype,
    r1: torch.Tensor | None, down_hadamard_seed: int | None,
) -> dict[nn.Parameter, torch.Tensor]:
    """{parameter of the layer: its transformed value} (norm weights and q/k/v biases included)."""
    a, i = adapter, parts.index
    kv, d, hidden = a.num_kv_heads, a.head_dim, a.hidden_size
    groups = a.num_heads // kv
    read = (lambda w: w @ r1) if r1 is not None else (lambda w: w)  # noqa: E731
    write = (lambda w: r1.T @ w) if r1 is not None else (lambda w: w)  # noqa: E731
    s = params.layer_scales(i, dtype)

    wq, wk, wv = read(_w(parts.q_proj, dtype)), read(_w(parts.k_proj, dtype)), read(_w(parts.v_proj, dtype))
    wo, wg, wu = _w(parts.o_proj, dtype), read(_w(parts.gate_proj, dtype)), read(_w(parts.up_proj, dtype))
    wd = _w(parts.down_proj, dtype)
    bq, bk, bv = _b(parts.q_proj, dtype), _b(parts.k_proj, dtype), _b(parts.v_proj, dtype)  # Qwen2: q/k/v biases
    if params.r2 is not None:
        r2 = params.r2[i].to(dtype)  # [kv, d, d]
        wv = (r2.transpose(-1, -2) @ wv.view(kv, d, hidden)).reshape(kv * d, hidden)
        if bv is not None:
            bv = torch.einsum("hd,hde->he", bv.view(kv, d), r2).reshape(-1)
        wo = torch.einsum("ohd,hde->ohe", wo.view(hidden, a.num_heads, d), r2.repeat_interleave(groups, dim=0)).reshape(hidden, -1)
    out: dict[nn.Parameter, torch.Tensor] = {}
    if s is not None:
        wq = wq * s["attn"] / s["q"][:, None]
        wk = wk * s["attn"] * s["k"][:, None]
        wv = wv * s["attn"] / s["ov"][:, None]
        wo = wo * s["ov_q"]
        wg = wg * s["ffn"]
        wu = wu * s["ffn"] / s["ud"][:, None]
        wd = wd * s["ud"]
        bq = None if bq is None else bq / s["q"]
        bk = None if bk is None else bk * s["k"]
        bv = None if bv is None else bv / s["ov"]
        out[parts.input_norm.weight] = 1.0 / s["attn"]
        out[parts.post_attention_norm.weight] = 1.0 / s["ffn"]
    if down_hadamard_seed is not None:
        wd = apply_random_hadamard(wd, a.intermediate_size, down_hadamard_seed)
    for module, w in ((parts.q_proj, wq), (parts.k_proj, wk), (parts.v_proj, wv), (parts.o_proj, write(wo)),
                      (parts.gate_proj, wg), (parts.up_proj, wu), (parts.down_proj, write(wd))):
        out[plain_linear(module).weight] = w
    for module, b in ((parts.q_proj, bq), (parts.k_proj, bk), (parts.v_proj, bv)):
        if b is not None:
            out[plain_linear(module).bias] = b
    return out


@torch.no_grad()
def fuse_ost_transforms(model: nn.Module, adapter: DecoderAdapter, params: OSTParameters, down_hadamard_seed: int | None) -> None:
    """Write the transformed weights into the model, computed in float64 (norms already folded).

    A layer (then the embedding, then the head) at a time: float64 copies of the whole model
    would double its size at the end of training.
    """
    r1 = params.r1.detach().double() if params.r1 is not None else None
    for parts in adapter.all_layer_parts(model):
        _write(effective_layer_weights(parts, adapter, params, torch.float64, r1, down_hadamard_seed))
    if r1 is not None:
        weights = {id(m.weight): m.weight for m in (adapter.embeddings(model), adapter.lm_head(model))}  # tied: once
        for weight in weights.values():
            _write({weight: weight.detach().double() @ r1})


def _write(new: dict[nn.Parameter, torch.Tensor]) -> None:
    for param, value in new.items():
        param.data.copy_(value.to(param.dtype))
