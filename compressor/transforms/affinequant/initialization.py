"""Initial transforms of a layer: SmoothQuant diagonals from the activations the layer sees.

Training starts from s = act_max^α / w_max^(1−α) on every diagonal (α = `alpha`, the
migration strength) with the off-diagonals at zero, so epoch 0 is SmoothQuant plus learned
clipping and everything after it can only be learned on top. The activation maxima come from
the full-precision pass that also produces the layer's training targets, so they cost nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from compressor.models.adapter import DecoderAdapter, DecoderLayerParts
from compressor.quant.compressed_linear import plain_linear
from compressor.spec import AffineQuantConfig
from compressor.transforms.affinequant.matrices import (
    DiagonalTransform,
    LayerTransforms,
    MaskedMatrix,
    RopePairMatrix,
)
from compressor.transforms.smoothing import smoothquant_scale, update_channel_max, weight_column_max


class ActivationMaxima:
    """Per-channel |x| maxima of the two norm outputs and of o_proj's input, gathered by hooks."""

    def __init__(self) -> None:
        self.maxima: dict[str, torch.Tensor] = {}

    def _update(self, key: str, x: torch.Tensor) -> None:
        update_channel_max(self.maxima, key, x)

    @contextmanager
    def recording(self, parts: DecoderLayerParts) -> Iterator[ActivationMaxima]:
        handles = [
            parts.input_norm.register_forward_hook(lambda _m, _a, out: self._update("ln_attn", out)),
            parts.post_attention_norm.register_forward_hook(lambda _m, _a, out: self._update("ln_mlp", out)),
            plain_linear(parts.o_proj).register_forward_pre_hook(lambda _m, args: self._update("vo", args[0])),
        ]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()


def initial_transforms(parts: DecoderLayerParts, adapter: DecoderAdapter, maxima: ActivationMaxima, cfg: AffineQuantConfig) -> LayerTransforms:
    """The layer's transforms at their SmoothQuant starting point (`cfg` decides which exist and their form)."""
    gradual = cfg.mask == "gradual"
    dense_ln = cfg.ln_matrix == "dense" and gradual  # held at the diagonal, a dense LN matrix is a plain scale
    sf, epochs = cfg.stability_factor, cfg.epochs
    transforms = {}
    for key, readers in (("ln_attn", (parts.q_proj, parts.k_proj, parts.v_proj)), ("ln_mlp", (parts.gate_proj, parts.up_proj))):
        s = smoothquant_scale(maxima.maxima[key], weight_column_max(*readers), cfg.alpha)
        transforms[key] = MaskedMatrix(s, epochs, sf, gradual) if dense_ln else DiagonalTransform(s)

    kv, d = adapter.num_kv_heads, adapter.head_dim
    groups = adapter.num_heads // kv
    act = maxima.maxima["vo"].view(kv, groups, d).amax(dim=1)
    weight = weight_column_max(parts.o_proj).view(kv, groups, d).amax(dim=1)
    transforms["vo"] = MaskedMatrix(smoothquant_scale(act, weight, cfg.alpha), epochs, sf, gradual)
    if cfg.qk_matrix:
        adapter.require_query_key_transform()  # Qwen3 / Gemma 3: the per-head q/k norms block it
        transforms["qk"] = RopePairMatrix(kv, d, epochs, sf, gradual)
    return LayerTransforms(transforms)
