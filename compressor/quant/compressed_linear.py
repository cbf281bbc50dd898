"""`FakeQuantLinear`: a decoder linear with everything a method attached to it.

Nothing in it is packed: it holds the (possibly fake-quantized, i.e. dequantized) nn.Linear, an optional online transform of its input
(the Hadamard on down_proj's input, or a learned Kronecker transform), optional dynamic input quantization, and the integer
codes of its weight for export. Evaluation runs it in plain PyTorch; the packed module that
serves an artifact is `triton_kernels.quant_linear.QuantLinear`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn

from compressor.quant.float_formats import FloatQuantizedWeight, activation_args, fake_quantize_float_activation
from compressor.quant.kronecker import kron_apply, kron_dense
from compressor.quant.online_rotation import apply_input_rotation
from compressor.quant.quantizer import QuantizedWeight, fake_quantize_activation, fake_quantize_per_token
from compressor.spec import ActivationQuantConfig

if TYPE_CHECKING:
    from compressor.models.adapter import DecoderLayerParts


_BYPASS = ContextVar("compression_bypassed", default=False)


@contextmanager
def compression_bypassed() -> Iterator[None]:
    """Run the model as its plain weights describe: no online rotations, no activation/KV quantization.

    With untransformed base weights this is the original model, which is how learned
    transforms get their teacher without a second copy of the model in memory.
    """
    token = _BYPASS.set(True)
    try:
        yield
    finally:
        _BYPASS.reset(token)


def is_compression_bypassed() -> bool:
    return _BYPASS.get()


class FakeQuantLinear(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear
        self.register_buffer("input_rotation", None, persistent=False)  # x ← x @ R before quantization
        # or, from layer-wise learned transforms, x ← (x ⊙ c)(L ⊗ R) applied as two small matmuls
        self.register_buffer("input_smooth", None, persistent=False)
        self.register_buffer("input_kron_left", None, persistent=False)
        self.register_buffer("input_kron_right", None, persistent=False)
        self.input_clip: torch.Tensor | float | None = None  # learned per-token clipping factor (int inputs); None: the config's
        # calibrated scales of a static float input quantizer (fp8 per tensor; the nvfp4 global scale)
        self.register_buffer("input_scale", None, persistent=False)
        self.register_buffer("input_global_scale", None, persistent=False)
        self.input_quant = None
        self.input_observer: Callable[[torch.Tensor], None] | None = None  # set while static scales are calibrated
        self.quantized_weight: QuantizedWeight | FloatQuantizedWeight | None = None

    @property
    def input_quant(self) -> ActivationQuantConfig | None:
        return self._input_quant

    @input_quant.setter
    def input_quant(self, cfg: ActivationQuantConfig | None) -> None:
        """A new input quantizer; a float one gets its compressed-tensors args, and any calibrated scales are dropped."""
        self._input_quant = cfg
        self.input_args = None if cfg is None or cfg.format == "int" else activation_args(cfg)
        self.input_scale = None
        self.input_global_scale = None

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    @property
    def out_features(self) -> int:
        return self.linear.out_features

    def set_input_rotation(self, rotation: torch.Tensor) -> None:
        self.input_rotation = rotation.to(device=self.linear.weight.device, dtype=torch.float32)  # once, not per forward

    def set_input_kronecker(self, smooth: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> None:
        """x ← (x ⊙ smooth)(left ⊗ right) before quantization (tensors kept as given: training hands live ones).

        Written into `_buffers` directly: assigning a Parameter by attribute would register it as one of ours.
        """
        self._buffers.update(input_smooth=smooth, input_kron_left=left, input_kron_right=right)

    def take_input_transform(self, other: FakeQuantLinear) -> None:
        """Read its input through `other`'s online transform and clipping (a fused projection's parts share them)."""
        self.input_rotation = other.input_rotation
        self._buffers.update(input_smooth=other.input_smooth, input_kron_left=other.input_kron_left,
                             input_kron_right=other.input_kron_right)
        self.input_clip = other.input_clip

    def input_transform_tensors(self) -> tuple[torch.Tensor | None, ...]:
        """What defines the online input transform (rotation; scale and Kronecker factors): equal tuples, equal transforms."""
        return (self.input_rotation, self.input_smooth, self.input_kron_left, self.input_kron_right)

    def input_matrix(self) -> torch.Tensor | None:
        """The online input transform as one dense matrix M (x ← x M), for export; None when there is none."""
        if self.input_kron_left is not None:
            kron = kron_dense(self.input_kron_left.detach().double(), self.input_kron_right.detach().double())
            return (self.input_smooth.detach().double().unsqueeze(1) * kron).float()
        return self.input_rotation

    def rotate_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_kron_left is not None:
            left = self.input_kron_left
            return kron_apply(x.to(left.dtype) * self.input_smooth, left, self.input_kron_right).to(x.dtype)
        if self.input_rotation is None:
            return x
        return apply_input_rotation(x, self.input_rotation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _BYPASS.get():
            return self.linear(x)
        x = self.rotate_input(x)
        if self.input_observer is not None:
            self.input_observer(x)
        elif self.input_args is not None:
            x = fake_quantize_float_activation(x, self.input_args, self.input_scale, self.input_global_scale)
        elif self.input_quant is not None and self.input_clip is not None:
            x = fake_quantize_per_token(x, self.input_quant.bits, self.input_quant.symmetric, self.input_clip)
        elif self.input_quant is not None:
            x = fake_quantize_activation(x, self.input_quant)
        return self.linear(x)


def wrap_linear(parent: nn.Module, attr: str) -> FakeQuantLinear:
    """The FakeQuantLinear at `parent.attr`, wrapping the plain linear there in place on first use."""
    module = getattr(parent, attr)
    if isinstance(module, FakeQuantLinear):
        return module
    wrapped = FakeQuantLinear(module)
    setattr(parent, attr, wrapped)
    return wrapped


def plain_linear(module: nn.Module) -> nn.Linear:
    return module.linear if isinstance(module, FakeQuantLinear) else module


@torch.no_grad()
def install_quantized_weight(parts: DecoderLayerParts, name: str, q: QuantizedWeight | FloatQuantizedWeight) -> dict[str, Any]:
    """Put `q` into the layer's linear `name` (e.g. "self_attn.q_proj"): dequantized weight in place, codes kept for export.

    Every method that quantizes weights leaves this same state, so export and evaluation
    need nothing method-specific. Returns the weight's error record for the report's layers.
    """
    parent_name, attr = name.split(".")
    wrapped = wrap_linear(getattr(parts.layer, parent_name), attr)
    w = wrapped.linear.weight
    deq = q.dequantize()
    rel = (torch.linalg.norm(deq - w.data.float()) / torch.linalg.norm(w.data.float())).item()
    w.data.copy_(deq.to(w.dtype))
    wrapped.quantized_weight = q
    return {"name": f"model.layers.{parts.index}.{name}", "layer": parts.index, "kind": attr, "rel_error": rel}
