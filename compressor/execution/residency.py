"""Where the decoder layers' tensors live between uses: all on the device, or one layer at a time.

`ResidentLayers` is the whole model on the job's device (what fits). `SequentialLayers` is
the model as a skeleton whose decoder layers, embedding and head sit on the meta device:
`walk()` brings one layer onto the device (from the stored model's shards, memory-mapped,
or from the file of its own finished state), yields it, then writes its state to the job's
work folder and frees it. Methods that work per layer (RTN, GPTQ, export, evaluation) walk
the same way in both, so a model bigger than the device, or than RAM, compresses with the
same code and gives the same bytes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from compressor.execution.tensor_slots import tensor_slots, to_meta
from compressor.models.adapter import DecoderAdapter, DecoderLayerParts
from compressor.execution.host_memory import release_freed_memory
from compressor.models.shards import ShardedTensors, open_shards

OUTER_PARTS = ("embed", "head")  # the parts outside the decoder layers that sequential execution loads on demand


class ResidentLayers:
    """The whole model is on the device: walking is iteration, onloading is nothing."""

    sequential = False
    spill_dir: Path | None = None  # where calibration activations too big for memory go (None: they stay in memory)

    def __init__(self, model: nn.Module, adapter: DecoderAdapter):
        self.model, self.adapter = model, adapter

    def walk(self, save: bool = True) -> Iterator[DecoderLayerParts]:
        yield from self.adapter.all_layer_parts(self.model)

    def update_each(self, change: Callable[[DecoderLayerParts], int]) -> int:
        """Run `change` on every layer; it returns how many tensors it changed. The total comes back."""
        return sum(change(parts) for parts in self.walk())

    @contextmanager
    def outer(self, *parts: str, save: bool = False, dtype: torch.dtype | None = None) -> Iterator[None]:
        yield

    def state_groups(self, outer_dtype: torch.dtype | None = None) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
        """(module prefix, its state dict), in groups small enough to hold (here: the whole model)."""
        yield "", self.model.state_dict()

    def embeddings_tied(self, dtype: torch.dtype | None = None) -> bool:
        """Whether the head is the embedding's tensor (as `dtype` stores both): both are in memory."""
        return self.adapter.embeddings_tied(self.model, dtype)


class SequentialLayers(ResidentLayers):
    """Decoder layers, embedding and head on meta; one at a time on the device, read from shards or the work folder."""

    sequential = True

    def __init__(self, model: nn.Module, adapter: DecoderAdapter, source_dir: Path, work_dir: Path,
                 device: torch.device, dtype: torch.dtype, tied: bool):
        super().__init__(model, adapter)
        self.source_dir, self.work_dir = Path(source_dir), Path(work_dir)
        self.device, self.dtype, self.tied = device, dtype, tied
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.spill_dir = self.work_dir
        self._names = {id(m): n for n, m in model.named_modules()}
        self._written: set[int] = set()
        self._outer_written: set[str] = set()
        self._tied_now: dict[torch.dtype | None, bool] = {}  # embeddings_tied(dtype) since the last write of either part

    # ------------------------------------------------------------------ one decoder layer

    def _read(self, tensors: ShardedTensors, key: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A stored tensor in the working dtype (or `dtype`; integers as stored) on the device, converted as it is read."""
        want = (dtype or self.dtype) if tensors.stored_dtype(key).is_floating_point else None
        return tensors.get_tensor(key, want).to(self.device)

    def _restore(self, module: nn.Module, path: Path, dtype: torch.dtype | None = None) -> None:
        """Every tensor slot of `module` from a state file this job wrote (dtypes as they were, or floats as `dtype`)."""
        state = ShardedTensors([path])
        for slot in tensor_slots(module):  # converted as read (a few MB at a time), no full copy in the written dtype
            want = dtype if dtype is not None and state.stored_dtype(slot.key).is_floating_point else None
            slot.set(state.get_tensor(slot.key, want).to(self.device))

    def _layer_file(self, index: int) -> Path:
        return self.work_dir / f"layer-{index:05d}.safetensors"

    def onload(self, index: int) -> DecoderLayerParts:
        layer = self.adapter.decoder_layers(self.model)[index]
        slots = tensor_slots(layer)
        if index in self._written:  # its own state, as a stage left it: every tensor, dtypes as they were
            self._restore(layer, self._layer_file(index))
        else:
            prefix = self._names[id(layer)]
            with open_shards(self.source_dir) as tensors:
                for slot in slots:
                    if slot.get().device.type == "meta":
                        key = f"{prefix}.{slot.key}"
                        if key not in tensors:  # a linear a stage wrapped (FakeQuantLinear) before its first visit
                            key = key.replace(".linear.", ".")
                        slot.set(self._read(tensors, key))
        return self.adapter.layer_parts(self.model, index)

    def offload(self, index: int, save: bool) -> None:
        layer = self.adapter.decoder_layers(self.model)[index]
        slots = tensor_slots(layer)
        if save:
            state, seen = {}, set()
            for slot in slots:
                t = slot.get().detach()
                ptr = (t.untyped_storage().data_ptr(), t.storage_offset())
                state[slot.key] = (t.clone() if ptr in seen else t).contiguous().cpu()
                seen.add(ptr)
            tmp = self._layer_file(index).with_suffix(".tmp")
            save_file(state, str(tmp))
            tmp.replace(self._layer_file(index))
            self._written.add(index)
        to_meta(slots)
        release_freed_memory()

    def walk(self, save: bool = True) -> Iterator[DecoderLayerParts]:
        """Each layer on the device in turn; with `save`, its state as the caller left it is kept for later walks."""
        for index in range(self.adapter.num_layers):
            parts = self.onload(index)
            try:
                yield parts
            finally:
                self.offload(index, save)

    def update_each(self, change: Callable[[DecoderLayerParts], int]) -> int:
        """Like the resident walk, but only a layer `change` reports changed is written back.

        A pass that changes few layers (rounding a model a stage left in bf16) writes few files,
        where `walk(save=True)` would rewrite the whole model.
        """
        total = 0
        for index in range(self.adapter.num_layers):
            changed = 0
            try:
                changed = change(self.onload(index))
                total += changed
            finally:
                self.offload(index, save=changed > 0)
        return total

    # ------------------------------------------------------------------ embedding and head

    def _outer_modules(self, part: str) -> list[nn.Module]:
        if part == "embed":
            return [self.adapter.embeddings(self.model)]
        if part == "head":
            return [self.adapter.lm_head(self.model)]
        raise ValueError(f"outer part {part!r}: allowed {', '.join(OUTER_PARTS)}")

    def _source_key(self, module: nn.Module, tensors: object) -> str:
        key = f"{self._names[id(module)]}.weight"
        if key not in tensors and self.tied and module is self.adapter.lm_head(self.model):
            key = f"{self._names[id(self.adapter.embeddings(self.model))]}.weight"
        return key

    def _outer_file(self, part: str) -> Path:
        return self.work_dir / f"{part}.safetensors"

    @contextmanager
    def outer(self, *parts: str, save: bool = False, dtype: torch.dtype | None = None) -> Iterator[None]:
        """The embedding and/or head on the device for the duration: as a stage left them (`save`), else as stored.

        `dtype` reads a part in that dtype instead of the working one (or the one a stage wrote): the
        exporter takes the embedding straight to bfloat16, without a float32 copy beside it. A part
        read so is for reading only (`save` would write it back in that dtype).
        """
        loaded = []
        with open_shards(self.source_dir) as tensors:
            for part in parts:
                for m in self._outer_modules(part):
                    if m.weight.device.type != "meta":
                        continue
                    loaded.append((part, m))
                    if part in self._outer_written:
                        self._restore(m, self._outer_file(part), dtype)
                    else:
                        m.weight = nn.Parameter(self._read(tensors, self._source_key(m, tensors), dtype), requires_grad=False)
        try:
            yield
        finally:
            for part, m in loaded:
                slots = tensor_slots(m)
                if save:
                    tmp = self._outer_file(part).with_suffix(".tmp")
                    save_file({slot.key: slot.get().detach().contiguous().cpu() for slot in slots}, str(tmp))
                    tmp.replace(self._outer_file(part))
                    self._outer_written.add(part)
                    self._tied_now.clear()
                to_meta(slots)
            release_freed_memory()

    @contextmanager
    def original(self, part: str) -> Iterator[nn.Module]:
        """A copy of the embedding or head as stored, whatever the stages did to the model's (KL's reference head)."""
        module = copy.deepcopy(self._outer_modules(part)[0])  # on meta: the structure only
        with open_shards(self.source_dir) as tensors:
            module.weight = nn.Parameter(self._read(tensors, self._source_key(self._outer_modules(part)[0], tensors)),
                                         requires_grad=False)
        try:
            yield module
        finally:
            to_meta(tensor_slots(module))
            release_freed_memory()

    # ------------------------------------------------------------------ export

    def state_groups(self, outer_dtype: torch.dtype | None = None) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
        """The state dict a group at a time: every decoder layer on its own, then the rest (embedding, norm, head).

        `outer_dtype`: the dtype the caller converts the embedding and head to anyway (read so, when stored).
        """
        for parts in self.walk(save=False):
            prefix = f"{self._names[id(parts.layer)]}."
            yield prefix, {f"{prefix}{k}": v for k, v in parts.layer.state_dict().items()}
        layer_prefixes = tuple(f"{self._names[id(layer)]}." for layer in self.adapter.decoder_layers(self.model))
        head_prefix = f"{self._names[id(self.adapter.lm_head(self.model))]}."
        with self.outer("embed", dtype=outer_dtype):  # then the embedding with the small rest (final norm), and the head alone
            yield "", {k: v for k, v in self.model.state_dict().items() if not k.startswith((*layer_prefixes, head_prefix))}
        if not self.embeddings_tied(outer_dtype):  # a tied head is the embedding: the exporter writes it once
            with self.outer("head", dtype=outer_dtype):
                yield "", {k: v for k, v in self.model.state_dict().items() if k.startswith(head_prefix)}

    def embeddings_tied(self, dtype: torch.dtype | None = None) -> bool:
        """Tied as stored and still one tensor: once a stage wrote either part, the two are compared (read as `dtype`).

        A rotation changes the embedding and head differently (untied); rounding changes both alike.
        """
        if not self.tied or not self._outer_written:
            return self.tied
        if dtype not in self._tied_now:
            with self.outer(*OUTER_PARTS, dtype=dtype):
                self._tied_now[dtype] = self.adapter.embeddings_tied(self.model, dtype)
        return self._tied_now[dtype]
