"""The student's decoder layers: each runs with its transformed weights, built inside its own forward.

Building a layer's weights inside that layer's forward (not all up front) lets the forward
be wrapped in activation checkpointing: backward then keeps only each layer's input, and
recomputes the layer's transformed weights and intermediates when it reaches the layer, so
a step's memory grows with one layer, not with the model's depth (what lets an end-to-end
method train a model that only just fits the device). Without checkpointing the same
function runs once and autograd keeps everything, which is faster when memory is ample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

from compressor.models.adapter import DecoderLayerParts

LayerWeights = Callable[[DecoderLayerParts], dict[nn.Parameter, torch.Tensor]]


@contextmanager
def transformed_layers(layers: Sequence[DecoderLayerParts], weights_of: LayerWeights, checkpointed: bool) -> Iterator[None]:
    """While active, calling a decoder layer runs it with `weights_of(parts)` in place of its parameters.

    Each layer's instance `forward` is replaced: the model's own loop still calls the layers
    with their masks and position embeddings. `functional_call` runs the class's forward with
    the new weights (the guard tells its inner call from the model's); recomputation in
    backward (non-reentrant checkpointing) calls the same closure, so it rebuilds the same
    weights from the same transforms.
    """
    for parts in layers:
        parts.layer.forward = _layer_forward(parts, weights_of, checkpointed)
    try:
        yield
    finally:
        for parts in layers:
            del parts.layer.forward


def _layer_forward(parts: DecoderLayerParts, weights_of: LayerWeights, checkpointed: bool) -> Callable[..., Any]:
    layer = parts.layer
    class_forward = type(layer).forward
    names = {id(p): n for n, p in layer.named_parameters()}
    inside = [False]

    def run(*args: Any, **kwargs: Any) -> Any:
        weights = {names[id(p)]: v for p, v in weights_of(parts).items()}
        inside[0] = True
        try:
            return functional_call(layer, weights, args, kwargs)
        finally:
            inside[0] = False

    def forward(*args: Any, **kwargs: Any) -> Any:
        if inside[0]:  # functional_call's own call of the layer, its weights in place
            return class_forward(layer, *args, **kwargs)
        if checkpointed and torch.is_grad_enabled():
            return checkpoint(run, *args, use_reentrant=False, **kwargs)
        return run(*args, **kwargs)

    return forward
