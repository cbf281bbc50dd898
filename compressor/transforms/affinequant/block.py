"""One decoder layer run with transformed, fake-quantized weights, differentiable in the transforms.

The layer's own forward (attention backend, RoPE, the FakeQuantLinear wrappers with their
activation quantizers) runs unchanged through `torch.func.functional_call`; only the weights
it reads are swapped for W' = transform(W) → LWC fake quant, built by the same pure functions
(`compressor.transforms.fusion`) that later fuse the transforms in float64. The norms' side
(x A⁻¹ after each RMSNorm) is a temporary forward hook.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from compressor.models.adapter import DecoderAdapter, DecoderLayerParts
from compressor.quant.compressed_linear import plain_linear
from compressor.transforms.affinequant.clipping import LearnableClipping
from compressor.transforms.affinequant.matrices import LayerTransforms, StepMatrices
from compressor.transforms.fusion import head_input_weights, head_output_weights

ATTN_READERS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
MLP_READERS = ("mlp.gate_proj", "mlp.up_proj")
NORM_TRANSFORMS = {"ln_attn": "input_norm", "ln_mlp": "post_attention_norm"}


def transform_input_side(w: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """W Aᵀ for a diagonal (vector) or dense A."""
    return w * a if a.dim() == 1 else w @ a.T


def transformed_weights(
    weights: dict[str, torch.Tensor], biases: dict[str, torch.Tensor | None], step: StepMatrices, groups: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor | None]]:
    """Weights and biases of a layer after its transforms (names as in `DecoderLayerParts.linears`)."""
    w, b = dict(weights), dict(biases)
    mats, invs = step.matrices, step.inverses
    for key, readers in (("ln_attn", ATTN_READERS), ("ln_mlp", MLP_READERS)):
        if key in mats:
            for name in readers:
                w[name] = transform_input_side(w[name], mats[key])
    if "qk" in mats:
        q, k = "self_attn.q_proj", "self_attn.k_proj"
        w[q], b[q] = head_output_weights(w[q], b[q], invs["qk"].repeat_interleave(groups, dim=0))
        w[k], b[k] = head_output_weights(w[k], b[k], mats["qk"].transpose(1, 2))
    if "vo" in mats:
        v, o = "self_attn.v_proj", "self_attn.o_proj"
        w[v], b[v] = head_output_weights(w[v], b[v], invs["vo"])
        w[o] = head_input_weights(w[o], mats["vo"].transpose(1, 2).repeat_interleave(groups, dim=0))
    return w, b


class TransformedBlock:
    """A decoder layer (linears already wrapped in FakeQuantLinear) with learnable transforms and clipping."""

    def __init__(
        self, parts: DecoderLayerParts, adapter: DecoderAdapter, transforms: LayerTransforms,
        clips: dict[str, LearnableClipping] | None,
    ):
        self.parts, self.transforms, self.clips = parts, transforms, clips
        self.groups = adapter.num_heads // adapter.num_kv_heads
        linears = {name: plain_linear(module) for name, module in parts.linears().items()}
        # transformed in fp32 whatever the working dtype (no copy when the model is fp32), handed back in the layer's dtype
        self.dtype = {name: lin.weight.dtype for name, lin in linears.items()}
        self.weights = {name: lin.weight.detach().float() for name, lin in linears.items()}
        self.biases = {name: None if lin.bias is None else lin.bias.detach().float() for name, lin in linears.items()}
        self.paths = {name: path_in(parts.layer, lin) for name, lin in linears.items()}
        self._norm_inverses: dict[str, torch.Tensor] = {}

    @contextmanager
    def norm_hooks(self) -> Iterator[None]:
        """While active, each norm whose readers are transformed hands out x A⁻¹ of the current step."""
        handles = []
        for key, attr in NORM_TRANSFORMS.items():
            if key in self.transforms.transforms:
                norm = getattr(self.parts, attr)
                handles.append(norm.register_forward_hook(lambda _m, _a, out, key=key: self._times_inverse(key, out)))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _times_inverse(self, key: str, out: torch.Tensor) -> torch.Tensor:
        inv = self._norm_inverses[key].to(out.dtype)
        return out * inv if inv.dim() == 1 else out @ inv

    def parameters_for(self, epoch: int, quantize: bool = True) -> dict[str, torch.Tensor]:
        """The layer's linear weights (and biases) for this step: transformed, then fake-quantized."""
        step = self.transforms.step(epoch)
        self._norm_inverses = {key: step.inverses[key] for key in NORM_TRANSFORMS if key in step.inverses}
        weights, biases = transformed_weights(self.weights, self.biases, step, self.groups)
        params: dict[str, torch.Tensor] = {}
        for name, w in weights.items():
            if quantize and self.clips is not None:
                w = self.clips[name].fake_quantize(w)
            params[f"{self.paths[name]}.weight"] = w.to(self.dtype[name])
            if biases[name] is not None:
                params[f"{self.paths[name]}.bias"] = biases[name].to(self.dtype[name])
        return params

    def forward(self, hidden: torch.Tensor, kwargs: dict[str, Any], epoch: int, quantize: bool = True) -> torch.Tensor:
        """Must run inside `norm_hooks()`."""
        params = self.parameters_for(epoch, quantize)
        out = functional_call(self.parts.layer, params, (hidden,), kwargs)
        return out[0] if isinstance(out, tuple) else out


def path_in(root: nn.Module, target: nn.Module) -> str:
    for name, module in root.named_modules():
        if module is target:
            return name
    raise ValueError(f"{type(target).__name__} is not inside the decoder layer")
