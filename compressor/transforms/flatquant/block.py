"""A decoder layer run through its learnable input transforms, differentiable in them.

The layer's own forward runs through `torch.func.functional_call` with each linear's weight
swapped for its transformed (and, when the target quantizes weights, LWC fake-quantized)
version; the activation side is the layer's own `FakeQuantLinear`s, handed the live
transforms each step (`set_input_kronecker`), so training runs exactly the online path that
evaluation and `compressor.load` run afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.func import functional_call

from compressor.models.adapter import DecoderLayerParts
from compressor.quant.compressed_linear import FakeQuantLinear, plain_linear, wrap_linear
from compressor.transforms.affinequant.block import path_in
from compressor.transforms.affinequant.clipping import LearnableClipping
from compressor.transforms.flatquant.transforms import ActivationClip, InputTransform

# Which learned transform each linear reads its input through (DecoderLayerParts names).
TRANSFORM_OF = {
    "self_attn.q_proj": "attn_in", "self_attn.k_proj": "attn_in", "self_attn.v_proj": "attn_in",
    "self_attn.o_proj": "o_in", "mlp.gate_proj": "mlp_in", "mlp.up_proj": "mlp_in", "mlp.down_proj": "down_in",
}


def readers_of(key: str) -> list[str]:
    return [name for name, k in TRANSFORM_OF.items() if k == key]


class FlatQuantBlock:
    """One decoder layer with its transforms, weight clipping (training only) and activation clipping."""

    def __init__(
        self, parts: DecoderLayerParts, transforms: dict[str, InputTransform],
        weight_clips: dict[str, LearnableClipping] | None, activation_clips: dict[str, ActivationClip] | None,
    ):
        self.parts, self.transforms = parts, transforms
        self.weight_clips, self.activation_clips = weight_clips, activation_clips
        self.wrapped: dict[str, FakeQuantLinear] = {}
        for name in parts.linears():
            parent, attr = name.split(".")
            self.wrapped[name] = wrap_linear(getattr(parts.layer, parent), attr)
        linears = {name: plain_linear(m) for name, m in self.wrapped.items()}
        self.dtype = {name: lin.weight.dtype for name, lin in linears.items()}
        self.weights = {name: lin.weight.detach().float() for name, lin in linears.items()}  # the untransformed weights
        self.paths = {name: path_in(parts.layer, lin) for name, lin in linears.items()}

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for t in self.transforms.values() for p in t.parameters() if p.requires_grad]

    def clip_parameters(self) -> list[torch.nn.Parameter]:
        clips = [*(self.weight_clips or {}).values(), *(self.activation_clips or {}).values()]
        return [p for c in clips for p in c.parameters() if p.requires_grad]

    def _install(self, live: bool) -> None:
        """Hand every reader its transform's online side (live tensors for training, detached copies after)."""
        sides = {key: (t.smooth(), t.left, t.right) for key, t in self.transforms.items()}
        if not live:  # one detached copy per transform, shared by the linears that read it
            sides = {key: tuple(v.detach().clone() for v in side) for key, side in sides.items()}
        for name, wrapped in self.wrapped.items():
            key = TRANSFORM_OF[name]
            if key in sides:
                wrapped.set_input_kronecker(*sides[key])
            clip = (self.activation_clips or {}).get(key)
            if clip is not None:
                wrapped.input_clip = clip.factor() if live else float(clip.factor().detach())

    def forward(self, hidden: torch.Tensor, kwargs: dict[str, Any], quantize_weights: bool = True) -> torch.Tensor:
        """The layer's output with the current transforms (weights fake-quantized when clips are set)."""
        self._install(live=True)
        params: dict[str, torch.Tensor] = {}
        for name, w in self.weights.items():
            t = self.transforms.get(TRANSFORM_OF[name])
            w = t.weight_side(w) if t is not None else w
            if quantize_weights and self.weight_clips is not None:
                w = self.weight_clips[name].fake_quantize(w)
            params[f"{self.paths[name]}.weight"] = w.to(self.dtype[name])
        out = functional_call(self.parts.layer, params, (hidden,), kwargs)
        return out[0] if isinstance(out, tuple) else out

    @torch.no_grad()
    def fuse(self) -> None:
        """Write the weight side into the weights (float64) and leave the online side installed, detached."""
        for name, wrapped in self.wrapped.items():
            t = self.transforms.get(TRANSFORM_OF[name])
            if t is not None:
                weight = wrapped.linear.weight
                weight.data.copy_(t.fused_weight(self.weights[name].to(weight.device)).to(weight.dtype))
        self._install(live=False)

    @contextmanager
    def weights_fake_quantized(self) -> Iterator[None]:
        """After `fuse`: the installed layer with its weights rounded by the learned clipping (to make the next layer's inputs)."""
        if self.weight_clips is None:
            yield
            return
        fused = {name: w.linear.weight.data.clone() for name, w in self.wrapped.items()}
        with torch.no_grad():
            for name, w in self.wrapped.items():
                w.linear.weight.data.copy_(self.weight_clips[name].fake_quantize(fused[name]))
        try:
            yield
        finally:
            for name, w in self.wrapped.items():
                w.linear.weight.data.copy_(fused[name])
