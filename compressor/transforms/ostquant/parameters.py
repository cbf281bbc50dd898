"""The learnable transforms of OSTQuant and where each one sits in a Llama-family layer.

r1      hidden × hidden, one for the residual stream (fused into every reader and writer)
r2      head_dim × head_dim per layer and KV head, on the v_proj → o_proj path (GQA-exact)
scales  log-parametrized, so they stay positive:
  attn  hidden per layer: input norm → q/k/v        ffn  hidden per layer: post norm → gate/up
  ov    kv_heads·head_dim: v_proj rows / o_proj columns
  ud    intermediate: up_proj rows / down_proj columns (exact: the FFN is silu(gate) ⊙ up)
  qk    kv_heads × head_dim/2: k rows ×s, q rows ÷s, one value per rotary pair (i, i + d/2),
        the form that commutes with RoPE, so the model stays exactly equivalent. Not learned
        where queries and keys are RMS-normalised per head (Qwen3, Gemma 3): the norm would undo it;
        nor where RoPE rotates only part of each head (the pairs differ).
Families with norms on the block outputs (Gemma) admit no r1; their (1 + w) norms take no scales here.
Rotations are float64 so the Cayley steps keep them orthogonal to ~1e-14.
"""

from __future__ import annotations

import torch
from torch import nn

from compressor.models.adapter import DecoderAdapter, UnsupportedTransformError
from compressor.quant.compressed_linear import plain_linear
from compressor.spec import OSTQuantConfig
from compressor.transforms.hadamard import random_hadamard_matrix


def klt_rotation(rows: torch.Tensor) -> torch.Tensor:
    """Eigenvectors of the covariance of weight rows, strongest first (the KLT basis)."""
    rows = rows.double()
    cov = rows.T @ rows / rows.shape[0]
    _, vecs = torch.linalg.eigh(cov)
    return vecs.flip(-1)


class OSTParameters(nn.Module):
    def __init__(self, model: nn.Module, adapter: DecoderAdapter, cfg: OSTQuantConfig):
        super().__init__()
        n_layers, hidden, d, kv = adapter.num_layers, adapter.hidden_size, adapter.head_dim, adapter.num_kv_heads
        self.adapter = adapter
        if "r1" in cfg.rotations:
            adapter.require_residual_rotation()
        if cfg.scales and adapter.norm_offset:
            raise UnsupportedTransformError(
                f"{adapter.family.name}: OSTQuant's norm scales assume a norm that multiplies by w, not (1 + w); use scales: false"
            )
        self.r1 = None
        self.r2 = None
        if "r1" in cfg.rotations:
            r1 = random_hadamard_matrix(hidden, seed=cfg.seed)
            if cfg.init == "klt":
                readers = [plain_linear(lin).weight.data for p in adapter.all_layer_parts(model)
                           for lin in (p.q_proj, p.k_proj, p.v_proj, p.gate_proj, p.up_proj)]
                r1 = klt_rotation(torch.cat(readers)) @ r1
            self.r1 = nn.Parameter(r1)
        if "r2" in cfg.rotations:
            r2 = random_hadamard_matrix(d, seed=cfg.seed + 1).expand(n_layers, kv, d, d).clone()
            if cfg.init == "klt":
                groups = adapter.num_heads // kv
                for parts in adapter.all_layer_parts(model):
                    wo = plain_linear(parts.o_proj).weight.data.view(hidden, adapter.num_heads, d)
                    for j in range(kv):
                        cols = wo[:, j * groups : (j + 1) * groups].reshape(-1, d)
                        r2[parts.index, j] = klt_rotation(cols) @ r2[parts.index, j]
            self.r2 = nn.Parameter(r2)
        self.has_scales = cfg.scales
        if cfg.scales:
            zeros = lambda *shape: nn.Parameter(torch.zeros(*shape))  # noqa: E731
            self.log_attn = zeros(n_layers, hidden)
            self.log_ffn = zeros(n_layers, hidden)
            self.log_ov = zeros(n_layers, kv * d)
            self.log_ud = zeros(n_layers, adapter.intermediate_size)
            self.learn_qk = adapter.query_key_transform_block() is None  # q/k norms (Qwen3, Gemma 3), partial RoPE
            if self.learn_qk:
                self.log_qk = zeros(n_layers, kv, d // 2)
            else:
                self.register_buffer("log_qk", torch.zeros(n_layers, kv, d // 2))  # held at 1: the q/k norms block it

    def rotations(self) -> list[nn.Parameter]:
        return [p for p in (self.r1, self.r2) if p is not None]

    def scales(self) -> list[nn.Parameter]:
        if not self.has_scales:
            return []
        return [self.log_attn, self.log_ffn, self.log_ov, self.log_ud] + ([self.log_qk] if self.learn_qk else [])

    def layer_scales(self, layer: int, dtype: torch.dtype) -> dict[str, torch.Tensor] | None:
        """Positive scales of one layer, expanded to the rows/columns they multiply."""
        if not self.has_scales:
            return None
        a = self.adapter
        groups = a.num_heads // a.num_kv_heads
        half = self.log_qk[layer].to(dtype).exp()
        s_k = torch.cat([half, half], dim=-1)  # equal within each rotary pair (i, i + d/2)
        s_ov = self.log_ov[layer].to(dtype).exp()
        return {
            "attn": self.log_attn[layer].to(dtype).exp(),
            "ffn": self.log_ffn[layer].to(dtype).exp(),
            "ud": self.log_ud[layer].to(dtype).exp(),
            "k": s_k.reshape(-1),
            "q": s_k.repeat_interleave(groups, dim=0).reshape(-1),
            "ov": s_ov,
            "ov_q": s_ov.view(a.num_kv_heads, a.head_dim).repeat_interleave(groups, dim=0).reshape(-1),
        }
