"""The ProSparse fine-tuning loop: LM loss + λ(step)·Σ_layers mean|x₁|, full or HFT, on calibration chunks.

Batches are calibration chunks in a seeded shuffled order; the learning rate warms up
linearly and decays along a cosine to 10% of its peak. Each step reports loss, λ, learning
rate and the training batch's activation sparsity through the progress hooks, and honours
cancellation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from compressor.checkpoints import CheckpointStore
from compressor.checkpoints.records import optimizer_from_unit, optimizer_to_unit
from compressor.progress import Progress
from compressor.sparsity.hft import apply_frozen_half, draw_frozen_half, optimizer_over_trainable, trainable_parameters
from compressor.sparsity.intermediate import tracking
from compressor.sparsity.schedule import lambda_at, stage_of
from compressor.spec import ProSparseConfig

MIN_LR_FRACTION = 0.1


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to MIN_LR_FRACTION·peak at `total`."""
    if warmup and step <= warmup:
        return peak * step / warmup
    f = (step - warmup) / max(total - warmup, 1)
    return peak * (MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * min(f, 1.0))))


def batches(tokens: torch.Tensor, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless [batch_size, seqlen] batches: each pass over the chunks in a fresh seeded order."""
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(tokens.shape[0], generator=g)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield tokens[order[start : start + batch_size]]
        if len(order) < batch_size:
            raise ValueError(f"batch_size {batch_size} exceeds the {len(order)} calibration chunks")


def finetune(model: nn.Module, tokens: torch.Tensor, cfg: ProSparseConfig, progress: Progress | None = None,
             checkpoints: CheckpointStore | None = None, series: str = "prosparse:step:") -> list[dict[str, Any]]:
    """Train `model` in place under the config's λ schedule; returns one record per step.

    With `checkpoints`, the weights, optimizer moments and step are saved every
    `step_interval_s` under `series`, and a later call continues from the newest of them:
    the batch order and the HFT draw are functions of the seed and step, so they are replayed.
    """
    progress = progress or Progress()
    checkpoints = checkpoints or CheckpointStore(None)
    total = sum(cfg.stage_steps)
    device = next(model.parameters()).device
    was_trainable = {p: p.requires_grad for p in model.parameters()}

    def make(params: Any) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    history: list[dict[str, Any]] = []
    optimizer: torch.optim.Optimizer | None = None
    stage = -1
    stream = batches(tokens, cfg.batch_size, cfg.seed)
    first, elapsed = 1, 0.0
    saved = checkpoints.latest(series)
    if saved is not None:
        unit = saved[1]
        done = unit.meta["step"]
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(unit.tensors[f"model.{name}"])
        stage = stage_of(done, cfg.stage_steps)
        if cfg.finetune == "hft":
            apply_frozen_half(model, draw_frozen_half(len(model.model.layers), cfg.seed, stage))
        else:
            for p in model.parameters():
                p.requires_grad_(True)
        optimizer = optimizer_over_trainable(model, make)
        optimizer_from_unit("optimizer", unit.tensors, optimizer)
        history, first, elapsed = list(unit.meta["history"]), done + 1, unit.seconds
        for _ in range(done):
            next(stream)
    started = time.perf_counter()
    model.train()
    try:
        with tracking(model) as stats:
            for step in range(first, total + 1):
                if stage_of(step, cfg.stage_steps) != stage:
                    stage = stage_of(step, cfg.stage_steps)
                    if cfg.finetune == "hft":
                        apply_frozen_half(model, draw_frozen_half(len(model.model.layers), cfg.seed, stage))
                        optimizer = optimizer_over_trainable(model, make, optimizer)
                    elif optimizer is None:
                        for p in model.parameters():
                            p.requires_grad_(True)
                        optimizer = optimizer_over_trainable(model, make)
                assert optimizer is not None
                lam = lambda_at(step, cfg.lambdas, cfg.stage_steps)
                lr = learning_rate(step, total, cfg.lr, cfg.warmup_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                batch = next(stream).to(device)
                started = time.perf_counter()
                stats.reset()
                lm_loss = model(batch, labels=batch, use_cache=False).loss
                l1 = stats.l1_penalty()
                loss = lm_loss + lam * l1 if lam > 0 else lm_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable_parameters(model), cfg.grad_clip)
                optimizer.step()
                record = {
                    "step": step, "stage": stage, "lambda": lam, "lr": lr, "loss": loss.item(), "lm_loss": lm_loss.item(),
                    "l1": l1.item(), "sparsity": stats.sparsity(), "seconds": time.perf_counter() - started,
                }
                stats.l1 = []  # drop the graph references before the next step
                history.append(record)
                if checkpoints.step_due(series, last=step == total):
                    state = {f"model.{name}": p for name, p in model.named_parameters()}
                    state.update(optimizer_to_unit("optimizer", optimizer))
                    checkpoints.save(f"{series}{step:05d}", state, {"step": step, "history": history},
                                     seconds=elapsed + time.perf_counter() - started, replaces=series)
                progress.emit("step", f"prosparse step {step}/{total}: loss {record['loss']:.3f} λ {lam:.3g} "
                              f"sparsity {record['sparsity']:.3f}", fraction=step / total, data=record)
                progress.check_cancel()
    finally:
        model.eval()
        for p, flag in was_trainable.items():
            p.requires_grad_(flag)
        if optimizer is not None:
            optimizer.state.clear()
    return history
