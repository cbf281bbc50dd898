"""The block-wise reconstruction loop (OmniQuant's, which AffineQuant builds on).

Inputs of decoder layer 0 are captured once for the calibration set. Then, per layer:
the original layer's outputs on the full-precision inputs are the targets (optionally also its
outputs on the quantized inputs: `aug_loss`); the transforms and clipping factors are trained
for E epochs on the transformed, quantized layer run on the quantized inputs; the transforms
are fused in float64, the weights quantized, and the quantized layer's outputs become the next
layer's quantized inputs. Memory holds one layer's activations for the calibration set (a few
copies of [samples, seqlen, hidden]), never the whole model's.

Objectives: `mse` of the block outputs (the paper's), or `kl_top` through the logit lens:
each block's output is read by the model's own final norm and lm_head, and the KL-Top of the
original's logits to the quantized block's logits is minimized on `kl_top_positions` random
positions per sample. For the last layer these are exactly the model's logits; for earlier
layers it weights the output error by how much it moves the prediction one would read from it.
Chosen over an end-to-end fine-tune because it keeps layer-by-layer memory and costs one
lm_head product per scored position on CPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import torch
from torch import nn

from compressor.checkpoints import CheckpointStore, Unit
from compressor.execution.residency import ResidentLayers
from compressor.models.adapter import DecoderAdapter
from compressor.progress import Progress
from compressor.execution.layer_inputs import (
    LayerInputs,
    capture_layer0_inputs,
    layer_outputs,
)
from compressor.quant.compressed_linear import plain_linear, wrap_linear
from compressor.spec import AffineQuantConfig
from compressor.transforms.affinequant.block import TransformedBlock
from compressor.transforms.block_training import LogitLens, block_loss, guarded_step
from compressor.transforms.affinequant.clipping import LearnableClipping
from compressor.transforms.affinequant.initialization import (
    ActivationMaxima,
    initial_transforms,
)
from compressor.transforms.affinequant.merge import (
    merge_layer_transforms,
    quantize_layer,
)


@dataclass
class LayerRecord:
    """What training one layer did: losses and the dominance guard's log, per epoch."""

    layer: int
    seconds: float = 0.0
    epoch_loss: list[float] = field(default_factory=list)  # mean over the epoch's steps
    epoch_min_margin: list[float] = field(default_factory=list)  # smallest dominance margin seen (before repairs)
    rows_repaired: int = 0
    epochs_lost_dominance: int = 0
    skipped_steps: int = 0  # non-finite losses (none expected: matrices are repaired before inversion)


def train_block(
    block: TransformedBlock, inputs: LayerInputs, target: torch.Tensor, aug_target: torch.Tensor | None,
    cfg: AffineQuantConfig, record: LayerRecord, lens: LogitLens | None, progress: Progress, generator: torch.Generator,
) -> None:
    groups = [{"params": list(block.transforms.parameters()), "lr": cfg.transform_lr}]
    clip_params = [p for c in block.clips.values() for p in c.parameters() if p.requires_grad]
    if clip_params:
        groups.append({"params": clip_params, "lr": cfg.clip_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    steps = cfg.epochs * math.ceil(inputs.hidden.shape[0] / inputs.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps) if cfg.lr_schedule == "cosine" else None
    with block.norm_hooks(), torch.enable_grad():
        for epoch in range(cfg.epochs):
            losses, min_margin, lost = [], math.inf, False
            for rows, kwargs in inputs.batches(block.parts.layer):
                for check in block.transforms.check(epoch, cfg.min_dominance).values():  # before any inverse
                    min_margin = min(min_margin, check.min_margin)
                    record.rows_repaired += check.rows_repaired
                    lost |= check.lost_dominance
                out = block.forward(inputs.hidden[rows], kwargs, epoch)
                loss = block_loss(out, target[rows], None if aug_target is None else aug_target[rows], cfg, lens, generator)
                value = guarded_step(optimizer, loss)
                if value is None:
                    record.skipped_steps += 1
                else:
                    losses.append(value)
                if schedule is not None:  # every batch, skipped or not, so the decay ends at the last step
                    schedule.step()
            record.epoch_loss.append(sum(losses) / len(losses) if losses else math.nan)
            record.epoch_min_margin.append(min_margin)
            record.epochs_lost_dominance += lost
            progress.emit("step", f"layer {record.layer} epoch {epoch + 1}/{cfg.epochs} loss {record.epoch_loss[-1]:.4g}",
                          fraction=None, data={"layer": record.layer, "epoch": epoch, "loss": record.epoch_loss[-1]})
            progress.check_cancel()


def _rounded(value: Any) -> Any:
    """Floats to 4 significant digits, so the per-epoch log stays readable in reports."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def _replay_layer(parts: Any, adapter: DecoderAdapter, unit: Unit, cfg: AffineQuantConfig,
                  generator: torch.Generator) -> tuple[LayerRecord, list[dict[str, Any]]]:
    """Merge and quantize a layer a previous attempt trained, from its final matrices and clipping factors (same bits)."""
    matrices = {k.removeprefix("matrix."): v for k, v in unit.tensors.items() if k.startswith("matrix.")}
    merge_layer_transforms(parts, adapter, matrices)
    clips = {}
    for name, lin in parts.linears().items():
        clips[name] = LearnableClipping(plain_linear(lin).weight.shape, cfg.weights, cfg.learnable_clipping)
        clips[name].load_state_dict({k.removeprefix(f"clip.{name}."): v for k, v in unit.tensors.items()
                                     if k.startswith(f"clip.{name}.")})
    generator.set_state(unit.tensors["generator"])
    return LayerRecord(**unit.meta["record"]), quantize_layer(parts, clips, cfg.activations)


def _layer_unit(matrices: dict[str, torch.Tensor], clips: dict[str, LearnableClipping], generator: torch.Generator) -> dict[str, torch.Tensor]:
    tensors = {f"matrix.{k}": v for k, v in matrices.items()}
    for name, clip in clips.items():
        tensors.update({f"clip.{name}.{k}": v for k, v in clip.state_dict().items()})
    tensors["generator"] = generator.get_state()
    return tensors


def affinequant_quantize(
    model: nn.Module, adapter: DecoderAdapter, tokens: torch.Tensor, cfg: AffineQuantConfig, progress: Progress | None = None,
    checkpoints: CheckpointStore | None = None, layer_key: Callable[[int], str] = lambda i: f"affinequant:layer:{i:05d}",
    layers: ResidentLayers | None = None,
) -> dict[str, Any]:
    """Run AffineQuant on `model` in place with calibration `tokens` [samples, seqlen]; returns the per-layer log.

    With `checkpoints`, each trained layer (final matrices, clipping factors, the loss
    generator) is saved under `layer_key(i)`; a later call merges those layers from it and
    trains only the rest. `layers` walks the decoder layers (one at a time on the device in
    sequential execution; the head stays loaded for the KL-Top loss's logit lens).
    """
    layers = layers or ResidentLayers(model, adapter)
    progress = progress or Progress()
    checkpoints = checkpoints or CheckpointStore(None)
    requires_grad = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    generator = torch.Generator().manual_seed(0)
    lens = LogitLens(model, adapter) if cfg.loss == "kl_top" else None
    try:
        with ExitStack() as resident:
            if lens is not None:
                resident.enter_context(layers.outer("head"))
            records, weight_errors = _reconstruct_layers(model, adapter, tokens, cfg, progress, checkpoints, layer_key,
                                                         layers, lens, generator)
    finally:
        for p, flag in requires_grad.items():
            p.requires_grad_(flag)
    return {
        "layers": [_rounded(asdict(r)) for r in records],
        "weight_errors": weight_errors,
        "seconds_per_layer": sum(r.seconds for r in records) / max(len(records), 1),
        "rows_repaired": sum(r.rows_repaired for r in records),
        "min_dominance_margin": min((m for r in records for m in r.epoch_min_margin), default=math.nan),
        "skipped_steps": sum(r.skipped_steps for r in records),
    }


def _reconstruct_layers(
    model: nn.Module, adapter: DecoderAdapter, tokens: torch.Tensor, cfg: AffineQuantConfig, progress: Progress,
    checkpoints: CheckpointStore, layer_key: Callable[[int], str], layers: ResidentLayers, lens: LogitLens | None,
    generator: torch.Generator,
) -> tuple[list[LayerRecord], list[dict[str, Any]]]:
    """The block-wise loop: each layer trained on the outputs of the already-quantized layers before it."""
    records: list[LayerRecord] = []
    weight_errors: list[dict[str, Any]] = []
    with layers.outer("embed"):
        inputs = capture_layer0_inputs(model, adapter, tokens, batch_size=min(cfg.batch_size, tokens.shape[0]),
                                       spill_dir=layers.spill_dir)
    fp_hidden = quant_hidden = inputs.hidden
    for parts in layers.walk():
        index = parts.index
        start = time.perf_counter()
        saved = checkpoints.load(layer_key(index))
        if saved is not None:
            later = any(not checkpoints.has(layer_key(i)) for i in range(index + 1, adapter.num_layers))
            target = layer_outputs(parts.layer, inputs.with_hidden(fp_hidden)) if later else fp_hidden
            for name in parts.linears():
                parent, attr = name.split(".")
                wrap_linear(getattr(parts.layer, parent), attr).input_quant = cfg.activations
            record, errors = _replay_layer(adapter.layer_parts(model, index), adapter, saved, cfg, generator)
            weight_errors += errors
            if later:
                quant_hidden = layer_outputs(parts.layer, inputs.with_hidden(quant_hidden))
            fp_hidden = target
            records.append(record)
            progress.layer(index, adapter.num_layers, data={"loss": record.epoch_loss[-1], "seconds": record.seconds})
            continue
        maxima = ActivationMaxima()
        with maxima.recording(parts):
            target = layer_outputs(parts.layer, inputs.with_hidden(fp_hidden))
        aug_target = None
        if cfg.aug_loss and quant_hidden is not fp_hidden:
            aug_target = layer_outputs(parts.layer, inputs.with_hidden(quant_hidden))

        for name in parts.linears():
            parent, attr = name.split(".")
            wrap_linear(getattr(parts.layer, parent), attr).input_quant = cfg.activations
        parts = adapter.layer_parts(model, index)
        transforms = initial_transforms(parts, adapter, maxima, cfg)
        clips = {name: LearnableClipping(plain_linear(lin).weight.shape, cfg.weights, cfg.learnable_clipping)
                 for name, lin in parts.linears().items()}
        block = TransformedBlock(parts, adapter, transforms, clips)
        record = LayerRecord(layer=index)
        train_block(block, inputs.with_hidden(quant_hidden), target, aug_target, cfg, record, lens, progress, generator)

        last = cfg.epochs - 1
        for check in transforms.check(last, cfg.min_dominance).values():
            record.rows_repaired += check.rows_repaired
        final = transforms.final(last)
        merge_layer_transforms(parts, adapter, final)
        weight_errors += quantize_layer(parts, clips, cfg.activations)
        quant_hidden = layer_outputs(parts.layer, inputs.with_hidden(quant_hidden))
        fp_hidden = target
        record.seconds = time.perf_counter() - start
        records.append(record)
        checkpoints.save(layer_key(index), _layer_unit(final, clips, generator), {"record": asdict(record)},
                         seconds=record.seconds)
        progress.layer(index, adapter.num_layers, data={"loss": record.epoch_loss[-1], "seconds": record.seconds})
    return records, weight_errors
