"""What a calibrating method hears of a layer: the inputs each of its linears sees.

The layer-to-layer part (inputs entering each decoder layer) is `compressor.execution.layer_inputs`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn


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
