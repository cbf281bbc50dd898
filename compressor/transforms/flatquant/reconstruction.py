"""The layer by layer loop: capture, train each decoder layer's transforms, fuse, and hand the next layer its inputs.

Per layer: the original layer's outputs on the full-precision inputs are the targets (their
pass also records each input's channel maxima, for the scales' SmoothQuant start, and its
moments, for QSUR); the transforms and clipping factors train for E epochs on the layer run
on the quantized-chain inputs, with the target's quantizers (the recipe's next quantize stage)
fake-applied; then the weight side is fused in float64, the online side installed, and the
layer's outputs with its weights rounded by the learned clipping become the next layer's
inputs. Memory holds one layer's activations for the calibration set (a few copies of
[samples, seqlen, hidden]); each finished layer is checkpointed, so a resumed job retrains
none of them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from compressor.checkpoints import CheckpointStore, Unit
from compressor.execution.layer_inputs import LayerInputs, capture_layer0_inputs, layer_outputs
from compressor.execution.residency import ResidentLayers
from compressor.models.adapter import DecoderAdapter, DecoderLayerParts
from compressor.progress import Progress
from compressor.quant.attention import set_kv_quant, set_qk_rotation, use_compressed_attention
from compressor.quant.compressed_linear import plain_linear, wrap_linear
from compressor.spec import FlatQuantConfig, QuantizeConfig
from compressor.transforms.affinequant.clipping import LearnableClipping
from compressor.transforms.block_training import LogitLens, block_loss, guarded_step
from compressor.transforms.flatquant.block import FlatQuantBlock, readers_of
from compressor.transforms.flatquant.transforms import ActivationClip, InputTransform
from compressor.transforms.fusion import rotate_value_heads
from compressor.transforms.hadamard import random_hadamard_matrix
from compressor.transforms.online_rotations import QK_SEED_OFFSET, VALUE_HEAD_SEED_OFFSET
from compressor.transforms.smoothing import smoothquant_scale, update_channel_max, weight_column_max
from compressor.transforms.qsur import ActivationMoments, qsur_per_dim, transformed_moments


@dataclass
class LayerRecord:
    """What training one layer did: losses per epoch, the transforms' final condition numbers, repairs, clipping."""

    layer: int
    seconds: float = 0.0
    epoch_loss: list[float] = field(default_factory=list)  # mean over the epoch's steps
    condition: dict[str, float] = field(default_factory=dict)  # cond(L ⊗ R) per transform at the end
    factors_repaired: int = 0  # condition-guard clamps over the layer's steps
    activation_clip: dict[str, float] = field(default_factory=dict)
    skipped_steps: int = 0  # non-finite losses


class InputStatistics:
    """Channel maxima (and, for the first `moment_rows` rows, moments) of each transformed input, from the fp pass."""

    def __init__(self, keys: list[str], moment_rows: int):
        self.keys, self.moment_rows = keys, moment_rows
        self.maxima: dict[str, torch.Tensor] = {}
        self.moments: dict[str, ActivationMoments] = {}
        self.seen: dict[str, int] = {}

    def _add(self, key: str, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1])
        update_channel_max(self.maxima, key, x)
        room = self.moment_rows - self.seen.get(key, 0)
        if room > 0:
            self.moments.setdefault(key, ActivationMoments(x.shape[-1])).add(x[:room])
            self.seen[key] = self.seen.get(key, 0) + min(room, x.shape[0])

    @contextmanager
    def recording(self, parts: DecoderLayerParts) -> Iterator[None]:
        linears = parts.linears()
        handles = [plain_linear(linears[readers_of(key)[0]]).register_forward_pre_hook(
            lambda _m, args, key=key: self._add(key, args[0])) for key in self.keys]
        try:
            yield
        finally:
            for h in handles:
                h.remove()


def _build(parts: DecoderLayerParts, cfg: FlatQuantConfig, target: QuantizeConfig, stats: InputStatistics | None,
           device: torch.device) -> FlatQuantBlock:
    """The layer's transforms at their start (random Hadamard factors, SmoothQuant scales) and its clipping factors."""
    transforms = {}
    for k, key in enumerate(cfg.transforms):
        width = plain_linear(parts.linears()[readers_of(key)[0]]).in_features
        scale = None
        if cfg.scales and stats is not None:
            scale = smoothquant_scale(stats.maxima[key].cpu(), weight_column_max(*(parts.linears()[n] for n in readers_of(key))).cpu(), cfg.alpha)
        elif cfg.scales:
            scale = torch.ones(width)  # replaced by a checkpoint's
        transforms[key] = InputTransform(width, scale, cfg.kronecker, seed=cfg.seed + 8 * parts.index + 2 * k).to(device)
    weight_clips = None
    if target.weights is not None:
        weight_clips = {name: LearnableClipping(plain_linear(lin).weight.shape, target.weights, cfg.weight_clipping).to(device)
                        for name, lin in parts.linears().items()}
    activation_clips = None
    if target.activations is not None and cfg.activation_clipping:
        activation_clips = {key: ActivationClip(target.activations.clip_ratio, True).to(device) for key in cfg.transforms}
    for name, lin in parts.linears().items():
        parent, attr = name.split(".")
        wrap_linear(getattr(parts.layer, parent), attr).input_quant = target.activations
    set_kv_quant(parts.layer.self_attn, target.kv_cache)
    return FlatQuantBlock(parts, transforms, weight_clips, activation_clips)


def _block_state(block: FlatQuantBlock, generator: torch.Generator) -> dict[str, torch.Tensor]:
    tensors = {f"transform.{key}.{k}": v for key, t in block.transforms.items() for k, v in t.state_dict().items()}
    for name, clip in (block.weight_clips or {}).items():
        tensors.update({f"wclip.{name}.{k}": v for k, v in clip.state_dict().items()})
    for key, clip in (block.activation_clips or {}).items():
        tensors.update({f"aclip.{key}.{k}": v for k, v in clip.state_dict().items()})
    tensors["generator"] = generator.get_state()
    return tensors


def _load_block_state(block: FlatQuantBlock, unit: Unit, generator: torch.Generator) -> None:
    for prefix, modules in (("transform", block.transforms), ("wclip", block.weight_clips or {}), ("aclip", block.activation_clips or {})):
        for name, module in modules.items():
            module.load_state_dict({k.removeprefix(f"{prefix}.{name}."): v for k, v in unit.tensors.items()
                                    if k.startswith(f"{prefix}.{name}.")})
    generator.set_state(unit.tensors["generator"])


def train_block(block: FlatQuantBlock, inputs: LayerInputs, target: torch.Tensor, cfg: FlatQuantConfig, record: LayerRecord,
                lens: LogitLens | None, progress: Progress, generator: torch.Generator) -> None:
    groups = [{"params": block.parameters(), "lr": cfg.transform_lr}]
    if block.clip_parameters():
        groups.append({"params": block.clip_parameters(), "lr": cfg.clip_lr})
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=0.0)
    steps = cfg.epochs * math.ceil(inputs.hidden.shape[0] / inputs.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps) if cfg.lr_schedule == "cosine" else None
    with torch.enable_grad():
        for epoch in range(cfg.epochs):
            losses = []
            for rows, kwargs in inputs.batches(block.parts.layer):
                record.factors_repaired += sum(t.guard(cfg.max_condition) for t in block.transforms.values())
                out = block.forward(inputs.hidden[rows], kwargs)
                value = guarded_step(optimizer, block_loss(out, target[rows], None, cfg, lens, generator))
                if value is None:
                    record.skipped_steps += 1
                else:
                    losses.append(value)
                if schedule is not None:
                    schedule.step()
            record.epoch_loss.append(sum(losses) / len(losses) if losses else math.nan)
            progress.emit("step", f"layer {record.layer} epoch {epoch + 1}/{cfg.epochs} loss {record.epoch_loss[-1]:.4g}",
                          fraction=None, data={"layer": record.layer, "epoch": epoch, "loss": record.epoch_loss[-1]})
            progress.check_cancel()
    record.factors_repaired += sum(t.guard(cfg.max_condition) for t in block.transforms.values())


def _qsur_rows(index: int, block: FlatQuantBlock, stats: InputStatistics) -> list[dict[str, Any]]:
    rows = []
    for key, acc in stats.moments.items():
        mean, cov = acc.moments()
        after = transformed_moments(mean, cov, block.transforms[key].dense().to(mean.device))
        rows.append({"layer": index, "name": f"model.layers.{index}.{key}", "kind": key,
                     "values": {"original": qsur_per_dim(mean, cov), "flatquant": qsur_per_dim(*after)}})
    return rows


def _kv_path(model: nn.Module, adapter: DecoderAdapter, parts: DecoderLayerParts, cfg: FlatQuantConfig, qk: bool,
             kv_quantized: bool) -> None:
    """Fixed Hadamards on the KV path before training: value heads (fused into v/o) and Q/K after RoPE (online)."""
    if kv_quantized:
        r2 = random_hadamard_matrix(adapter.head_dim, seed=cfg.seed + VALUE_HEAD_SEED_OFFSET + parts.index)
        rotate_value_heads(parts, adapter, [r2] * adapter.num_kv_heads)
    if qk:
        set_qk_rotation(parts.layer.self_attn, random_hadamard_matrix(adapter.head_dim, seed=cfg.seed + QK_SEED_OFFSET))


def flatquant_calibrate(
    model: nn.Module, adapter: DecoderAdapter, tokens: torch.Tensor, cfg: FlatQuantConfig, target: QuantizeConfig,
    qk: bool, progress: Progress | None = None, checkpoints: CheckpointStore | None = None,
    layer_key: Callable[[int], str] = lambda i: f"flatquant:layer:{i:05d}", layers: ResidentLayers | None = None,
) -> dict[str, Any]:
    """Train, fuse and install every decoder layer's transforms in place; returns the per-layer log and QSUR rows."""
    layers = layers or ResidentLayers(model, adapter)
    progress, checkpoints = progress or Progress(), checkpoints or CheckpointStore(None)
    requires_grad = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    if qk or target.kv_cache is not None:
        use_compressed_attention(model)
    tokens = tokens[: cfg.samples] if cfg.samples is not None else tokens
    generator = torch.Generator().manual_seed(cfg.seed)
    lens = LogitLens(model, adapter) if cfg.loss == "kl_top" else None
    records: list[LayerRecord] = []
    qsur: list[dict[str, Any]] = []
    try:
        with ExitStack() as resident:
            if lens is not None:
                resident.enter_context(layers.outer("head"))
            with layers.outer("embed"):
                inputs = capture_layer0_inputs(model, adapter, tokens, batch_size=min(cfg.batch_size, tokens.shape[0]),
                                               spill_dir=layers.spill_dir)
            fp_hidden = quant_hidden = inputs.hidden
            moment_rows = cfg.qsur_samples * tokens.shape[1]
            for parts in layers.walk():
                index, start = parts.index, time.perf_counter()
                _kv_path(model, adapter, parts, cfg, qk, target.kv_cache is not None)
                saved = checkpoints.load(layer_key(index))
                later = any(not checkpoints.has(layer_key(i)) for i in range(index + 1, adapter.num_layers))
                stats = InputStatistics(list(cfg.transforms), moment_rows if saved is None else 0)
                if saved is None or later:
                    with stats.recording(parts):
                        target_hidden = layer_outputs(parts.layer, inputs.with_hidden(fp_hidden))
                else:
                    target_hidden = fp_hidden
                device = plain_linear(parts.q_proj).weight.device
                block = _build(parts, cfg, target, stats if saved is None else None, device)
                if saved is None:
                    record = LayerRecord(layer=index)
                    train_block(block, inputs.with_hidden(quant_hidden), target_hidden, cfg, record, lens, progress, generator)
                else:
                    _load_block_state(block, saved, generator)
                    record = LayerRecord(**saved.meta["record"])
                block.fuse()
                if saved is None:
                    record.condition = {key: round(t.condition(), 3) for key, t in block.transforms.items()}
                    record.activation_clip = {key: round(float(c.factor().detach()), 4) for key, c in (block.activation_clips or {}).items()}
                    layer_qsur = _qsur_rows(index, block, stats)
                else:
                    layer_qsur = saved.meta.get("qsur", [])
                qsur += layer_qsur
                if later:
                    with block.weights_fake_quantized():
                        quant_hidden = layer_outputs(parts.layer, inputs.with_hidden(quant_hidden))
                fp_hidden = target_hidden
                if saved is None:
                    record.seconds = time.perf_counter() - start
                    checkpoints.save(layer_key(index), _block_state(block, generator), {"record": asdict(record), "qsur": layer_qsur},
                                     seconds=record.seconds)
                records.append(record)
                progress.layer(index, adapter.num_layers, data={"loss": record.epoch_loss[-1], "seconds": record.seconds})
    finally:
        for p, flag in requires_grad.items():
            p.requires_grad_(flag)
    return {
        "layers": [asdict(r) for r in records],
        "qsur": qsur,
        "seconds_per_layer": sum(r.seconds for r in records) / max(len(records), 1),
        "factors_repaired": sum(r.factors_repaired for r in records),
        "max_condition": max((c for r in records for c in r.condition.values()), default=math.nan),
        "skipped_steps": sum(r.skipped_steps for r in records),
    }
