"""Dataclass records (a `QuantizedWeight`, …) to and from a unit's tensors + metadata.

Tensor fields become tensors under `<prefix>.<field>`, the rest JSON metadata; the class is
recorded by module and name, so any quantized-weight record a method returns round-trips
without this module knowing it.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import torch


def record_to_unit(prefix: str, record: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, meta = {}, {"class": f"{type(record).__module__}:{type(record).__qualname__}", "fields": {}}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if isinstance(value, torch.Tensor):
            tensors[f"{prefix}.{f.name}"] = value
        else:
            meta["fields"][f.name] = value
    return tensors, meta


def record_from_unit(prefix: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Any:
    module, _, name = meta["class"].partition(":")
    cls = getattr(importlib.import_module(module), name)
    values = dict(meta["fields"])
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}"
        if key in tensors:
            values[f.name] = tensors[key]
    return cls(**values)


def state_blob(state: Any) -> torch.Tensor:
    """An optimizer/scheduler `state_dict()` (nested dicts of tensors and numbers) as one uint8 tensor.

    Read back with `weights_only=True`, which admits tensors and plain containers only, so a
    checkpoint folder cannot smuggle code into the job that resumes from it.
    """
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def state_from_blob(blob: torch.Tensor) -> Any:
    import io

    return torch.load(io.BytesIO(blob.numpy().tobytes()), weights_only=True)


def optimizer_to_unit(prefix: str, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """An optimizer's state: each moment tensor on its own (large), the rest (groups, counters) in one blob."""
    state = optimizer.state_dict()
    tensors, rest = {}, {"param_groups": state["param_groups"], "state": {}}
    for index, values in state["state"].items():
        rest["state"][index] = {}
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{index}.{name}"] = value
            else:
                rest["state"][index][name] = value
    tensors[f"{prefix}.rest"] = state_blob(rest)
    return tensors


def optimizer_from_unit(prefix: str, tensors: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer) -> None:
    rest = state_from_blob(tensors[f"{prefix}.rest"])
    state = {int(index): dict(values) for index, values in rest["state"].items()}
    for key, value in tensors.items():
        if key.startswith(f"{prefix}.") and key != f"{prefix}.rest":
            index, name = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"param_groups": rest["param_groups"], "state": state})
