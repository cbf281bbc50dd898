"""Decoder-layer inputs for a batch of token sequences, captured once, then carried from layer to layer.

Everything that walks the model a layer at a time (GPTQ's calibration, block-wise
reconstruction, evaluation) starts here: the hidden states entering layer 0 for every
sequence, and the keyword arguments (masks, position embeddings) each layer receives. Only
the embedding runs to capture them (the decoder layers are passed through), so the layers
may sit anywhere, on the device or on meta, while this runs.
"""

from __future__ import annotations

import dataclasses
import math
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.models.adapter import DecoderAdapter


class _StopForward(Exception):
    pass


@dataclass
class LayerInputs:
    """Hidden states entering a decoder layer for every calibration sample, plus the layer's keyword arguments."""

    hidden: torch.Tensor  # [samples, seqlen, hidden]
    kwargs: dict[str, Any]
    batch_size: int
    # id(layer) -> that layer's own kwargs where they differ from layer 0's: sliding-window and
    # full-attention layers get different masks (Mistral, Gemma), Gemma 3 a local or global RoPE
    per_layer: dict[int, dict[str, Any]] = field(default_factory=dict)
    spill_dir: Path | None = None  # where activations too big for memory go (sequential execution's work folder)

    def with_hidden(self, hidden: torch.Tensor) -> LayerInputs:
        """The same layer arguments for other hidden states (a quantized chain beside the full-precision one)."""
        return dataclasses.replace(self, hidden=hidden)

    def kwargs_for(self, layer: nn.Module | None) -> dict[str, Any]:
        return self.per_layer.get(id(layer), self.kwargs) if layer is not None else self.kwargs

    def batches(self, layer: nn.Module | None = None) -> Iterator[tuple[slice, dict[str, Any]]]:
        n, kwargs = self.hidden.shape[0], self.kwargs_for(layer)
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            yield slice(start, stop), _fit_batch(kwargs, self.batch_size, stop - start)


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


IN_MEMORY_BYTES = int(os.environ.get("COMPRESSOR_ACTIVATIONS_IN_MEMORY_BYTES", 2 * 2**30))


def activation_buffer(shape: torch.Size | tuple[int, ...], dtype: torch.dtype, device: torch.device,
                      spill_dir: Path | None) -> torch.Tensor:
    """An empty activation tensor: in memory, or, when bigger than `IN_MEMORY_BYTES` on the CPU, backed by a file.

    The file is unlinked at once (the mapping keeps it until the tensor is freed), so a crash
    leaves nothing behind; the kernel pages it in and out as the layer walk reads it.
    """
    numel = math.prod(shape)
    if spill_dir is None or device.type != "cpu" or numel * dtype.itemsize <= IN_MEMORY_BYTES:
        return torch.empty(shape, dtype=dtype, device=device)
    spill_dir.mkdir(parents=True, exist_ok=True)
    path = spill_dir / f"activations-{uuid.uuid4().hex}.bin"
    t = torch.from_file(str(path), shared=True, size=numel, dtype=dtype).view(shape)
    path.unlink()
    return t


def _pass_through(hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return hidden_states


@torch.no_grad()
def capture_layer0_inputs(model: nn.Module, adapter: DecoderAdapter, tokens: torch.Tensor, batch_size: int = 8,
                          spill_dir: Path | None = None) -> LayerInputs:
    """Hidden states entering layer 0 for every row of `tokens`, and each layer's keyword arguments.

    The decoder layers are replaced by a pass-through while this runs, and the forward stops
    at the final norm: only the embedding (and the rotary tables) compute, so layers whose
    weights are not in memory are never touched.
    """
    layers = adapter.decoder_layers(model)
    captured: list[torch.Tensor] = []
    per_layer: dict[int, dict[str, Any]] = {}

    def record_kwargs(module: nn.Module, _args: tuple, kwargs: dict) -> None:
        if id(module) not in per_layer:
            per_layer[id(module)] = _layer_kwargs(kwargs)

    def stop_at_layer0(module: nn.Module, args: tuple, kwargs: dict) -> None:
        captured.append((args[0] if args else kwargs["hidden_states"]).detach())
        record_kwargs(module, args, kwargs)
        if len(per_layer) == len(layers):  # every layer's kwargs are known: later batches stop here
            raise _StopForward

    def stop(*_args: Any) -> None:
        raise _StopForward

    handles = [layer.register_forward_pre_hook(record_kwargs, with_kwargs=True) for layer in layers[1:]]
    handles.append(layers[0].register_forward_pre_hook(stop_at_layer0, with_kwargs=True))
    handles.append(adapter.final_norm(model).register_forward_pre_hook(stop))
    for layer in layers:
        layer.forward = _pass_through
    try:
        for start in range(0, tokens.shape[0], batch_size):
            try:
                model(tokens[start : start + batch_size], use_cache=False)
            except _StopForward:
                pass
    finally:
        for h in handles:
            h.remove()
        for layer in layers:
            del layer.forward
    first = captured[0]
    hidden = activation_buffer((sum(c.shape[0] for c in captured), *first.shape[1:]), first.dtype, first.device, spill_dir)
    torch.cat(captured, out=hidden)
    return LayerInputs(hidden=hidden, kwargs=per_layer[id(layers[0])], batch_size=min(batch_size, tokens.shape[0]),
                       per_layer=per_layer, spill_dir=spill_dir)


def _layer_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in kwargs.items() if k not in ("hidden_states", "past_key_values", "cache")}
    out["use_cache"] = False
    return out


@torch.no_grad()
def layer_outputs(layer: nn.Module, inputs: LayerInputs) -> torch.Tensor:
    out = activation_buffer(inputs.hidden.shape, inputs.hidden.dtype, inputs.hidden.device, inputs.spill_dir)
    for rows, kwargs in inputs.batches(layer):
        result = layer(inputs.hidden[rows], **kwargs)
        out[rows] = result[0] if isinstance(result, tuple) else result
    return out
