"""The OSTQuant calibration loop: transforms trained end to end against the model's own teacher.

Teacher = the same modules with base weights and compression bypassed (no second model in
memory). Student = the same modules, each decoder layer run with its transformed (and, for
weight-only targets, fake-quantized) weights built inside its own, checkpointed, forward
(`student.py`), with activation and KV quantizers active when the target quantizes them. Embedding and head use the rotation on
the activations (E[tokens]·R1 and (h·R1ᵀ)·Wᵀ), which avoids a 49152×576 product per step.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F

from compressor.checkpoints.records import optimizer_from_unit, optimizer_to_unit, state_blob, state_from_blob
from compressor.context import CompressionContext
from compressor.models.adapter import DecoderLayerParts
from compressor.quant.compressed_linear import compression_bypassed
from compressor.quant.kl_top import kl_top_loss
from compressor.quant.quantizer import as_groups, round_ste, scale_zero_from_range
from compressor.spec import OSTQuantConfig, WeightQuantConfig
from compressor.transforms.ostquant.effective import effective_layer_weights
from compressor.transforms.ostquant.parameters import OSTParameters
from compressor.transforms.ostquant.stiefel import CayleyAdam
from compressor.transforms.ostquant.student import transformed_layers


def fake_quantize_weight_ste(w: torch.Tensor, cfg: WeightQuantConfig) -> torch.Tensor:
    """Per-channel/group RTN with a straight-through gradient (ranges from the current weight)."""
    rows, cols = w.shape
    wg = as_groups(w, cols if cfg.strategy != "group" else cfg.group_size)
    scale, zero = scale_zero_from_range(wg.amin(-1, keepdim=True), wg.amax(-1, keepdim=True), cfg.bits, cfg.symmetric)
    qmin, qmax = (-(2 ** (cfg.bits - 1)), 2 ** (cfg.bits - 1) - 1) if cfg.symmetric else (0, 2**cfg.bits - 1)
    q = torch.clamp(round_ste(wg / scale) + zero, qmin, qmax)
    return ((q - zero) * scale).view(rows, -1)[:, :cols]


def calibration_loss(teacher: torch.Tensor, student: torch.Tensor, tokens: torch.Tensor, cfg: OSTQuantConfig) -> torch.Tensor:
    if cfg.loss == "kl_top":
        return kl_top_loss(teacher, student, k=cfg.k, renormalize=cfg.renormalize)
    if cfg.loss == "kl":
        return kl_top_loss(teacher, student, k=teacher.shape[-1])
    return F.cross_entropy(student[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())


def training_state(params: OSTParameters, opts: list[torch.optim.Optimizer], schedules: list[Any],
                   gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Everything the next step depends on: the transforms, optimizer moments, LR schedule, batch generator."""
    tensors = {f"params.{k}": v for k, v in params.state_dict().items()}
    for i, o in enumerate(opts):
        tensors.update(optimizer_to_unit(f"opt.{i}", o))
    tensors.update({f"schedule.{i}": state_blob(sch.state_dict()) for i, sch in enumerate(schedules)})
    tensors["generator"] = gen.get_state()
    return tensors


def restore_training_state(tensors: dict[str, torch.Tensor], params: OSTParameters, opts: list[torch.optim.Optimizer],
                           schedules: list[Any], gen: torch.Generator) -> None:
    with torch.no_grad():
        for k, v in params.state_dict().items():
            v.copy_(tensors[f"params.{k}"])
    for i, o in enumerate(opts):
        optimizer_from_unit(f"opt.{i}", tensors, o)
    for i, sch in enumerate(schedules):
        sch.load_state_dict(state_from_blob(tensors[f"schedule.{i}"]))
    gen.set_state(tensors["generator"])


def train_transforms(
    ctx: CompressionContext, params: OSTParameters, cfg: OSTQuantConfig,
    weight_target: WeightQuantConfig | None, down_hadamard_seed: int | None,
) -> list[float]:
    """Run `cfg.steps` optimizer steps; returns the loss per step."""
    model, adapter = ctx.model, ctx.adapter
    if cfg.steps == 0:
        return []
    body = model.model
    # trained in fp32 whatever the working dtype (no copy when the model is fp32)
    embedding, head = adapter.embeddings(model).weight.detach().float(), adapter.lm_head(model).weight.detach().float()
    layers = adapter.all_layer_parts(model)
    tokens = ctx.calibration_tokens()
    gen = torch.Generator().manual_seed(cfg.seed)
    opts: list[torch.optim.Optimizer] = []
    if params.rotations():
        opts.append(CayleyAdam(params.rotations(), lr=cfg.rotation_lr))
    if params.scales():
        opts.append(torch.optim.Adam(params.scales(), lr=cfg.scale_lr))
    decay = (lambda step: 1.0 - step / cfg.steps) if cfg.lr_schedule == "linear" else (lambda step: 1.0)
    schedules = [torch.optim.lr_scheduler.LambdaLR(opt, decay) for opt in opts]
    for p in model.parameters():
        p.requires_grad_(False)

    losses: list[float] = []
    series, elapsed = ctx.unit_key("step", 0).rsplit(":", 1)[0] + ":", 0.0
    first = 0
    saved = ctx.checkpoints.latest(series)
    if saved is not None:  # a previous attempt trained this far: continue from its exact state
        unit = saved[1]
        restore_training_state(unit.tensors, params, opts, schedules, gen)
        first, losses, elapsed = unit.meta["step"], list(unit.meta["losses"]), unit.seconds
    started = time.perf_counter()
    for step in range(first, cfg.steps):
        batch = tokens[torch.randint(0, tokens.shape[0], (cfg.batch_size,), generator=gen)]
        with torch.no_grad(), compression_bypassed():
            teacher = model(batch, use_cache=False).logits
        r1 = params.r1.float() if params.r1 is not None else None

        def layer_weights(parts: DecoderLayerParts, r1: torch.Tensor | None = r1) -> dict[torch.nn.Parameter, torch.Tensor]:
            weights = effective_layer_weights(parts, adapter, params, torch.float32, r1, down_hadamard_seed)
            if weight_target is not None:
                weights = {p: fake_quantize_weight_ste(v, weight_target) if v.dim() == 2 else v for p, v in weights.items()}
            return weights

        embeds = embedding[batch] @ r1 if r1 is not None else embedding[batch]
        with transformed_layers(layers, layer_weights, checkpointed=cfg.activation_checkpointing):
            hidden = body(inputs_embeds=embeds, use_cache=False)[0]
        logits = (hidden @ r1.T if r1 is not None else hidden) @ head.T
        loss = calibration_loss(teacher, logits, batch, cfg)
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        lr_factor = opts[0].param_groups[0]["lr"] / opts[0].defaults["lr"] if opts else 0.0  # the rate this step uses
        for opt in opts:
            opt.step()
        for schedule in schedules:
            schedule.step()
        losses.append(loss.item())
        if ctx.checkpoints.step_due(series, last=step + 1 == cfg.steps):
            ctx.checkpoints.save(ctx.unit_key("step", step + 1), training_state(params, opts, schedules, gen),
                                 {"step": step + 1, "losses": losses}, seconds=elapsed + time.perf_counter() - started,
                                 replaces=series)
        ctx.progress.emit("step", f"step {step + 1}/{cfg.steps} loss {losses[-1]:.4f}", fraction=(step + 1) / cfg.steps,
                          data={"step": step + 1, "loss": losses[-1], "lr_factor": lr_factor})
        ctx.progress.check_cancel()
    return losses
