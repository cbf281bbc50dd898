"""SmoothQuant's starting diagonal, shared by the learned-transform stages (AffineQuant, FlatQuant).

Both start each input's per-channel scale at s = act_max^α / w_max^(1−α), from the channel
maxima of the activations the fp pass records and of the weights that read them.
"""

from __future__ import annotations

import torch
from torch import nn

from compressor.quant.compressed_linear import plain_linear

SCALE_FLOOR = 1e-5  # smallest SmoothQuant statistic and initial diagonal, as in OmniQuant


def smoothquant_scale(act_max: torch.Tensor, weight_max: torch.Tensor, alpha: float) -> torch.Tensor:
    """s = act_max^α / w_max^(1−α): the diagonal that splits outliers between activations and weights."""
    act = act_max.float().clamp_min(SCALE_FLOOR)
    weight = weight_max.float().clamp_min(SCALE_FLOOR)
    return (act.pow(alpha) / weight.pow(1.0 - alpha)).clamp_min(SCALE_FLOOR)


def weight_column_max(*linears: nn.Module) -> torch.Tensor:
    """max_i |W_ij| over the rows of all `linears` (which read the same input)."""
    return torch.stack([plain_linear(lin).weight.detach().abs().amax(dim=0).float() for lin in linears]).amax(dim=0)


def update_channel_max(maxima: dict[str, torch.Tensor], key: str, x: torch.Tensor) -> None:
    """Fold |x|'s per-channel maximum over all tokens into `maxima[key]`."""
    m = x.detach().abs().reshape(-1, x.shape[-1]).amax(dim=0).float()
    maxima[key] = m if key not in maxima else torch.maximum(maxima[key], m)
