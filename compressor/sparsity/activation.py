"""ReLU / FATReLU on the gate projection's output, and how an exported checkpoint carries the threshold.

ProSparse swaps SiLU for ReLU on the gate output only (the up projection stays linear), so
x₁ = ReLU(x W_gateᵀ) ⊙ (x W_upᵀ) is exactly zero wherever the gate is not positive. FATReLU
raises the cut from 0 to a small t: values ≤ t become 0 (the kept set is x > t, as in vLLM's
`FatreluAndMul`; for t = 0 this is plain ReLU).

Export choice: the checkpoint's config says `hidden_act: "relu"` (so a stock transformers
Llama loads a ReLU-gated FFN) plus an extra field `fatrelu_threshold: t`. `compressor.load`
honours the field and installs FATReLU(t); a stock engine ignores it and runs plain ReLU,
which differs only on gate values in (0, t]. The manifest names this as a runtime requirement.
"""

from __future__ import annotations

import torch
from torch import nn

from compressor.export.format import RuntimeRequirement
from compressor.models.families import LLAMA, Family, family_of

CONFIG_FIELD = "fatrelu_threshold"
RELU_ACT = "relu"


class FATReLU(nn.Module):
    """x where x > threshold, else 0 (threshold 0: ReLU). Gradient 1 on kept entries, 0 elsewhere."""

    def __init__(self, threshold: float = 0.0):
        super().__init__()
        self.threshold = float(threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.threshold == 0.0:
            return torch.relu(x)
        return x * (x > self.threshold).to(x.dtype)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}"


def _family(model: nn.Module) -> Family:
    family = family_of(type(model).__name__)
    return family if family is not None else LLAMA  # a Llama-layout model the store does not name


def gated_mlps(model: nn.Module) -> list[nn.Module]:
    """The FFN modules of every decoder layer (`model.layers[i].mlp`; the activation attribute is the family's)."""
    return [layer.mlp for layer in model.model.layers]


def _activation_fields(model: nn.Module) -> tuple[str, ...]:
    """Config fields that name the FFN activation: the family's own, and `hidden_act` where the config has it."""
    return tuple(dict.fromkeys(f for f in (_family(model).activation_field, "hidden_act") if hasattr(model.config, f)))


def _config_activation(model: nn.Module) -> str | None:
    return getattr(model.config, _family(model).activation_field, None)


def set_gate_activation(model: nn.Module, threshold: float) -> None:
    """Make every layer's gate activation FATReLU(threshold) and record it in the model config (exported as is).

    The gate is the first half of the FFN in every family here (Gemma's gelu-tanh, Phi-3's
    `activation_fn` on the gate half of `gate_up_proj`), so the swap is the same everywhere.
    """
    attr = _family(model).mlp_activation_attr
    for mlp in gated_mlps(model):
        setattr(mlp, attr, FATReLU(threshold))
    for field in _activation_fields(model) or ("hidden_act",):
        setattr(model.config, field, RELU_ACT)
    setattr(model.config, CONFIG_FIELD, float(threshold))


def gate_threshold(model: nn.Module) -> float | None:
    """The FATReLU threshold the model runs with, or None if its gate is not (FAT)ReLU."""
    attr = _family(model).mlp_activation_attr
    acts = [getattr(m, attr) for m in gated_mlps(model)]
    kinds = {type(a) for a in acts}
    if kinds == {FATReLU}:
        return acts[0].threshold
    if kinds == {nn.ReLU}:
        return 0.0
    return None


def apply_activation_from_config(model: nn.Module) -> float | None:
    """Loader side: install FATReLU(t) when the config carries `fatrelu_threshold`; returns t (None: untouched)."""
    threshold = getattr(model.config, CONFIG_FIELD, None)
    if threshold is None or _config_activation(model) != RELU_ACT:
        return None
    attr = _family(model).mlp_activation_attr
    for mlp in gated_mlps(model):
        setattr(mlp, attr, FATReLU(float(threshold)))
    return float(threshold)


def export_notes(model: nn.Module) -> tuple[list[str], list[str]]:
    """(not-servable reasons, runtime requirement codes) that a (FAT)ReLU gate adds to an export manifest."""
    threshold = getattr(model.config, CONFIG_FIELD, None)
    if _config_activation(model) != RELU_ACT or threshold is None:
        return [], []
    reason = (f"ReLU-gated FFN with FATReLU threshold {threshold} (config field {CONFIG_FIELD}): compressor.load runs it; "
              "stock transformers runs plain ReLU (threshold ignored); vLLM's Llama supports only SiLU")
    return [reason], [RuntimeRequirement.FATRELU_ACTIVATION.value]
