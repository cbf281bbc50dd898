"""Layer-by-layer calibration: capture decoder-layer inputs once, then walk the layers.

Methods that need data (GPTQ, block-wise reconstruction) see one decoder layer at a time,
so memory holds one layer's activations for the calibration set, not the whole model's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from compressor.models.adapter import LlamaFamilyAdapter


class _StopForward(Exception):
    pass


@dataclass
class LayerInputs:
    """Hidden states entering a decoder layer for every calibration sample, plus the layer's keyword arguments."""

    hidden: torch.Tensor  # [samples, seqlen, hidden]
    kwargs: dict[str, Any]
    batch_size: int

    def batches(self) -> Iterator[tuple[slice, dict[str, Any]]]:
        n = self.hidden.shape[0]
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            yield slice(start, stop), _fit_batch(self.kwargs, self.batch_size, stop - start)


def _fit_batch(kwargs: dict[str, Any], captured: int, actual: int) -> dict[str, Any]:
    """Slice tensors captured for a batch of `captured` samples down to `actual` (position tensors repeat per sample)."""
    if actual == captured:
        return kwargs

    def fit(v: Any) -> Any:
        if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == captured:
            return v[:actual]
        if isinstance(v, tuple):
            return tuple(fit(x) for x in v)
        return v

    return {k: fit(v) for k, v in kwargs.items()}


@torch.no_grad()
def capture_layer0_inputs(model: nn.Module, adapter: LlamaFamilyAdapter, tokens: torch.Tensor, batch_size: int = 8) -> LayerInputs:
    layer0 = adapter.decoder_layers(model)[0]
    captured: list[torch.Tensor] = []
    layer_kwargs: dict[str, Any] = {}

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        captured.append(hidden.detach())
        if not layer_kwargs:
            layer_kwargs.update({k: v for k, v in kwargs.items() if k != "hidden_states"})
        raise _StopForward

    handle = layer0.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for start in range(0, tokens.shape[0], batch_size):
            try:
                model(tokens[start : start + batch_size], use_cache=False)
            except _StopForward:
                pass
    finally:
        handle.remove()
    layer_kwargs.pop("past_key_values", None)
    layer_kwargs.pop("cache", None)
    layer_kwargs["use_cache"] = False
    return LayerInputs(hidden=torch.cat(captured), kwargs=layer_kwargs, batch_size=min(batch_size, tokens.shape[0]))


@torch.no_grad()
def layer_outputs(layer: nn.Module, inputs: LayerInputs) -> torch.Tensor:
    out = torch.empty_like(inputs.hidden)
    for rows, kwargs in inputs.batches():
        result = layer(inputs.hidden[rows], **kwargs)
        out[rows] = result[0] if isinstance(result, tuple) else result
    return out


@contextmanager
def capture_linear_inputs(linears: dict[str, nn.Linear], on_input: Callable[[str, torch.Tensor], None]) -> Iterator[None]:
    """Call `on_input(name, x)` with the input each plain linear sees (after any online rotation)."""
    handles = [
        lin.register_forward_hook(lambda _m, args, _out, name=name: on_input(name, args[0].detach()))
        for name, lin in linears.items()
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
