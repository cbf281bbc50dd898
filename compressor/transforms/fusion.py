"""Fusing equivalent transforms into weights (float64), shared by every rotation/scaling method.

Row-vector convention: a linear computes y = x Wᵀ. Rotating the residual stream by an
orthogonal Q (h' = h Q) means input-side weights become W Q and output-side weights Qᵀ W.
All products are formed in float64 on the weights' device (a transform built on the CPU
is moved there) and cast back, so a fused model with quantization off
matches the original to ~1e-6 relative in fp32.
"""

from __future__ import annotations

import torch
from torch import nn

from compressor.models.adapter import DecoderAdapter
from compressor.export.format import RuntimeRequirement
from compressor.quant.compressed_linear import plain_linear, wrap_linear


def _set(param: torch.Tensor, value: torch.Tensor) -> None:
    param.data.copy_(value.to(param.dtype))


def scale_input_columns(linear: nn.Module, scale: torch.Tensor) -> None:
    """W ← W diag(scale): the layer now expects inputs divided by `scale`."""
    w = plain_linear(linear).weight
    _set(w, w.data.double() * scale.to(w.device, torch.float64).unsqueeze(0))


def rotate_input_side(linear: nn.Module, q: torch.Tensor) -> None:
    """W ← W Q, for a linear reading a stream that is now h Q."""
    w = plain_linear(linear).weight
    _set(w, w.data.double() @ q.to(w.device, torch.float64))


def rotate_output_side(linear: nn.Module, q: torch.Tensor) -> None:
    """W ← Qᵀ W (and b ← b Q), for a linear whose output stream is now y Q."""
    lin = plain_linear(linear)
    q = q.to(lin.weight.device, torch.float64)
    _set(lin.weight, q.T @ lin.weight.data.double())
    if lin.bias is not None:
        _set(lin.bias, lin.bias.data.double() @ q)


def fold_norms_into_linears(model: nn.Module, adapter: DecoderAdapter) -> None:
    """Move every RMSNorm weight γ into the linears it feeds (W ← W diag γ) and set γ = 1.

    Needed before rotating the residual stream: RMSNorm commutes with an orthogonal Q
    only when its weight is all ones. The gain is the adapter's (Gemma: 1 + w, left at w = 0).
    Norms on block outputs (Gemma) and per-head q/k norms stay: no linear reads them directly.
    """
    for parts in adapter.all_layer_parts(model):
        fold_layer_norms(parts, adapter)
    fold_final_norm(model, adapter)


def fold_layer_norms(parts, adapter: DecoderAdapter) -> None:
    """`fold_norms_into_linears` for one decoder layer."""
    for norm, linears in (
        (parts.input_norm, (parts.q_proj, parts.k_proj, parts.v_proj)),
        (parts.post_attention_norm, (parts.gate_proj, parts.up_proj)),
    ):
        _fold_norm(adapter, norm, linears)


def fold_final_norm(model: nn.Module, adapter: DecoderAdapter) -> None:
    _fold_norm(adapter, adapter.final_norm(model), (adapter.lm_head(model),))


def _fold_norm(adapter: DecoderAdapter, norm: nn.Module, linears) -> None:
    gain = adapter.norm_gain(norm)
    for lin in linears:
        scale_input_columns(lin, gain)
    adapter.set_norm_gain(norm, torch.ones_like(gain))


def rotate_residual_stream(model: nn.Module, adapter: DecoderAdapter, q: torch.Tensor) -> None:
    """Fuse a global orthogonal Q (hidden × hidden) into embeddings and every residual reader/writer."""
    adapter.require_residual_rotation()
    for parts in adapter.all_layer_parts(model):
        rotate_layer_residual(parts, q)
    rotate_outer_residual(model, adapter, q)


def rotate_layer_residual(parts, q: torch.Tensor) -> None:
    """`rotate_residual_stream` for one decoder layer: its readers W Q, its writers Qᵀ W."""
    for lin in (parts.q_proj, parts.k_proj, parts.v_proj, parts.gate_proj, parts.up_proj):
        rotate_input_side(lin, q)
    for lin in (parts.o_proj, parts.down_proj):
        rotate_output_side(lin, q)


def rotate_outer_residual(model: nn.Module, adapter: DecoderAdapter, q: torch.Tensor) -> None:
    """`rotate_residual_stream` for the embedding (E Q) and the head (W Q)."""
    emb = adapter.embeddings(model)
    _set(emb.weight, emb.weight.data.double() @ q.to(emb.weight.device, torch.float64))
    rotate_input_side(adapter.lm_head(model), q)


def rotate_value_heads(parts, adapter: DecoderAdapter, rotations: list[torch.Tensor]) -> None:
    """Rotate each KV head's values by its own orthogonal matrix (head_dim square), fused into v_proj and o_proj.

    `rotations[j]` acts on KV head j; every query head of its group sees the same rotation on
    o_proj's input columns, so grouped-query attention stays exact.
    """
    d, groups = adapter.head_dim, adapter.num_heads // adapter.num_kv_heads
    v, o = plain_linear(parts.v_proj), plain_linear(parts.o_proj)
    wv, wo = v.weight.data.double(), o.weight.data.double()
    for j, r in enumerate(rotations):
        r = r.to(wv.device, torch.float64)
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
    wrapped = wrap_linear(parent, attr)
    rotate_input_side(wrapped, rotation)
    wrapped.set_input_rotation(rotation)


# --------------------------------------------------------------------------- general invertible transforms
#
# An invertible A between a producer and the linears reading it: the readers get x A⁻¹ and
# W Aᵀ, so x A⁻¹ (W Aᵀ)ᵀ = x Wᵀ. The two pure functions below build the new weights without
# touching the model (any dtype, autograd-friendly), so a method can train through exactly the
# products it later fuses in float64.


def head_output_weights(
    w: torch.Tensor, bias: torch.Tensor | None, m: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A projection whose per-head outputs y_h become y_h m_h: W_h ← m_hᵀ W_h, b_h ← b_h m_h.

    `m` is [heads, d, d] with heads · d = w.shape[0] (heads in output order).
    """
    heads, d, _ = m.shape
    new_w = torch.einsum("hde,hdi->hei", m, w.reshape(heads, d, -1)).reshape(w.shape)
    new_b = None if bias is None else torch.einsum("hd,hde->he", bias.reshape(heads, d), m).reshape(bias.shape)
    return new_w, new_b


def head_input_weights(w: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """A projection reading per-head inputs: W[:, h] ← W[:, h] m_h (its input x_h is now x_h m_h⁻ᵀ)."""
    heads, d, _ = m.shape
    return torch.einsum("ohd,hde->ohe", w.reshape(w.shape[0], heads, d), m).reshape(w.shape)


def _set_linear(linear: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    lin = plain_linear(linear)
    _set(lin.weight, weight)
    if bias is not None:
        _set(lin.bias, bias)


def _bias64(linear: nn.Module) -> torch.Tensor | None:
    bias = plain_linear(linear).bias
    return None if bias is None else bias.data.double()


def fuse_value_head_transforms(parts, adapter: DecoderAdapter, a: torch.Tensor) -> None:
    """v → o: every head of KV group j hands o_proj x A_j⁻¹ (W_v rows ← A_j⁻ᵀ W_v, b_v ← b_v A_j⁻¹), o_proj gets W_o A_jᵀ.

    `a` is [num_kv_heads, head_dim, head_dim]. Grouped-query attention: the value head j is
    shared by `num_heads / num_kv_heads` query heads, so its matrix is applied to the o_proj
    columns of all of them. Formed in float64.
    """
    a = a.to(plain_linear(parts.v_proj).weight.device, torch.float64)
    inv = torch.linalg.inv(a)
    groups = adapter.num_heads // adapter.num_kv_heads
    wv, bv = head_output_weights(plain_linear(parts.v_proj).weight.data.double(), _bias64(parts.v_proj), inv)
    _set_linear(parts.v_proj, wv, bv)
    wo = head_input_weights(plain_linear(parts.o_proj).weight.data.double(), a.transpose(1, 2).repeat_interleave(groups, dim=0))
    _set_linear(parts.o_proj, wo, None)


def fuse_query_key_transforms(parts, adapter: DecoderAdapter, a: torch.Tensor) -> None:
    """q ↔ k: per KV group j, queries become q A_j⁻¹ and keys k A_jᵀ, so every q kᵀ is unchanged.

    Exact for the model only when each A_j commutes with RoPE's rotations (they act between the
    projections and the product); `a` is [num_kv_heads, head_dim, head_dim]. Formed in float64.
    """
    adapter.require_query_key_transform()
    a = a.to(plain_linear(parts.q_proj).weight.device, torch.float64)
    inv = torch.linalg.inv(a)
    groups = adapter.num_heads // adapter.num_kv_heads
    wq, bq = head_output_weights(plain_linear(parts.q_proj).weight.data.double(), _bias64(parts.q_proj), inv.repeat_interleave(groups, dim=0))
    _set_linear(parts.q_proj, wq, bq)
    wk, bk = head_output_weights(plain_linear(parts.k_proj).weight.data.double(), _bias64(parts.k_proj), a.transpose(1, 2))
    _set_linear(parts.k_proj, wk, bk)


def fold_smoothing_into_norm(norm: nn.Module, linears: list[nn.Module], s: torch.Tensor, offset: float = 0.0) -> None:
    """Diagonal transform after an RMSNorm (SmoothQuant form): γ ← γ / s and W ← W diag(s) for every reader.

    `offset` is the norm's gain offset (Gemma's norm multiplies by 1 + w, so w ← (1 + w) / s − 1).
    """
    s = s.to(norm.weight.device, torch.float64)
    _set(norm.weight, (norm.weight.data.double() + offset) / s - offset)
    for lin in linears:
        scale_input_columns(lin, s)


def fuse_input_transform(linears: list[nn.Module], a: torch.Tensor) -> None:
    """W ← W Aᵀ for linears that will read x A⁻¹ (the producer or a run-time op supplies the A⁻¹)."""
    for lin in linears:
        w = plain_linear(lin).weight
        _set(w, w.data.double() @ a.to(w.device, torch.float64).T)


# --------------------------------------------------------------------------- run-time transforms
#
# Some transforms cannot be fused (AffineQuant's dense matrix after an RMSNorm). Such a module
# carries `runtime_transform` (a sentence saying what it computes), so the exporter can list
# it among the reasons an artifact is not servable by stock engines.

RUNTIME_TRANSFORM_ATTR = "runtime_transform"
# The buffer is persistent: its state-dict key `<module>.runtime_output_matrix` is part of the artifact format.
RUNTIME_OUTPUT_MATRIX = RuntimeRequirement.RUNTIME_OUTPUT_MATRIX.value


def _apply_runtime_output_matrix(module: nn.Module, _args: tuple, output: torch.Tensor) -> torch.Tensor:
    m = getattr(module, RUNTIME_OUTPUT_MATRIX)
    return (output.to(m.dtype) @ m).to(output.dtype)


def attach_runtime_output_matrix(module: nn.Module, matrix: torch.Tensor, reason: str) -> None:
    """Multiply `module`'s output by `matrix` at run time (a persistent buffer, so artifacts keep it)."""
    if getattr(module, RUNTIME_TRANSFORM_ATTR, None) is not None:
        raise ValueError(f"{type(module).__name__} already carries a run-time transform")
    module.register_buffer(RUNTIME_OUTPUT_MATRIX, matrix.to(torch.float32).contiguous())
    setattr(module, RUNTIME_TRANSFORM_ATTR, reason)
    module.register_forward_hook(_apply_runtime_output_matrix)


def runtime_transform_reasons(model: nn.Module) -> list[str]:
    """One line per distinct run-time transform in `model`, with how many modules carry it."""
    counts: dict[str, int] = {}
    for module in model.modules():
        reason = getattr(module, RUNTIME_TRANSFORM_ATTR, None)
        if reason:
            counts[reason] = counts.get(reason, 0) + 1
    return [f"{reason} ({n} modules)" for reason, n in counts.items()]
