"""Dataclass records (a `QuantizedWeight`, …) to and from a unit's tensors + metadata.

Tensor fields become tensors under `<prefix>.<field>`, pydantic fields their JSON, the rest JSON metadata; the class is
recorded by module and name, so any quantized-weight record a method returns round-trips
without this module knowing it.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
from typing import Any

import torch
from pydantic import BaseModel


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _class(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _plain(value: Any) -> Any:
    """A pydantic model's field values as JSON: torch dtypes by name, enums by value (its own dumps leave some fields out)."""
    if isinstance(value, torch.dtype):
        return {"torch_dtype": str(value).removeprefix("torch.")}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _unplain(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"torch_dtype"}:
            return getattr(torch, value["torch_dtype"])
        return {k: _unplain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unplain(v) for v in value]
    return value


def record_to_unit(prefix: str, record: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensor fields as tensors; pydantic fields (e.g. compressed-tensors' QuantizationArgs) as their JSON; the rest as is."""
    tensors, meta = {}, {"class": _class_path(type(record)), "fields": {}, "models": {}}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if isinstance(value, torch.Tensor):
            tensors[f"{prefix}.{f.name}"] = value
        elif isinstance(value, BaseModel):
            meta["models"][f.name] = {"class": _class_path(type(value)), "value": _plain({k: getattr(value, k) for k in type(value).model_fields})}
        else:
            meta["fields"][f.name] = value
    return tensors, meta


def record_from_unit(prefix: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Any:
    cls = _class(meta["class"])
    values = dict(meta["fields"])
    for name, model in meta.get("models", {}).items():
        values[name] = _class(model["class"]).model_validate(_unplain(model["value"]))
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
