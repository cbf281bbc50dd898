"""The model's forward a decoder layer at a time: token windows in, final-norm hidden states out.

The same walk as GPTQ's calibration, so a model that only fits a layer at a time is
evaluated with the weights it was compressed with, and resident and sequential jobs score
the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from compressor.execution.layer_inputs import activation_buffer, capture_layer0_inputs, layer_outputs
from compressor.execution.residency import ResidentLayers
from compressor.models.adapter import DecoderAdapter

BATCH_WINDOWS = 2


@torch.no_grad()
def final_hidden_states(model: nn.Module, adapter: DecoderAdapter, layers: ResidentLayers, tokens: torch.Tensor,
                        on_layer: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """[n, L, hidden] after the final norm for `tokens` [n, L]."""
    with layers.outer("embed"):
        inputs = capture_layer0_inputs(model, adapter, tokens, batch_size=min(BATCH_WINDOWS, tokens.shape[0]),
                                       spill_dir=layers.spill_dir)
    for parts in layers.walk(save=False):
        inputs.hidden = layer_outputs(parts.layer, inputs)
        if on_layer is not None:
            on_layer(parts.index + 1, adapter.num_layers)
    norm = adapter.final_norm(model)
    out = activation_buffer(inputs.hidden.shape, inputs.hidden.dtype, inputs.hidden.device, layers.spill_dir)
    for rows, _ in inputs.batches():
        out[rows] = norm(inputs.hidden[rows])
    return out
