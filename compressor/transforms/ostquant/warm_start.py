"""OSTQuant's layer-wise warm start: each decoder layer's R2 and scales trained on its block output, R1 held.

An end-to-end KL-Top step costs a forward and a backward of the whole model; on a CPU the
budget buys about a hundred, which moved the bundled model ~2% from its Hadamard start. A
layer at a time, on the block output MSE against the unquantized layer (FlatQuant's
objective), the per-layer transforms get many cheap steps first; the end-to-end steps then
refine everything, R1 included (it is shared by every layer, so it stays at its start here).

Both chains run in the R1 basis: the student's layers read the rotated stream (as in the
end-to-end student), and the unquantized layer's outputs are rotated by R1 before the MSE
(an orthogonal map, so the error is the one in the model's own basis). Each finished layer's
transforms are a checkpoint unit, so a resumed job retrains none of them.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F

from compressor.context import CompressionContext
from compressor.execution.layer_inputs import LayerInputs, capture_layer0_inputs, layer_outputs
from compressor.models.adapter import DecoderLayerParts
from compressor.quant.compressed_linear import compression_bypassed
from compressor.spec import OSTQuantConfig, WeightQuantConfig
from compressor.transforms.ostquant.effective import effective_layer_weights
from compressor.transforms.ostquant.parameters import OSTParameters
from compressor.transforms.ostquant.stiefel import CayleyAdam
from compressor.transforms.ostquant.student import transformed_layers
from compressor.transforms.ostquant.training import fake_quantize_weight_ste


def _layer_slices(params: OSTParameters, index: int) -> dict[str, torch.Tensor]:
    """The rows of the per-layer transforms that belong to decoder layer `index` (views: writable in place)."""
    per_layer = {"r2": params.r2} if params.r2 is not None else {}
    if params.has_scales:
        per_layer.update(log_attn=params.log_attn, log_ffn=params.log_ffn, log_ov=params.log_ov, log_ud=params.log_ud,
                         log_qk=params.log_qk)
    return {name: t.data[index] for name, t in per_layer.items()}


def _optimizers(params: OSTParameters, cfg: OSTQuantConfig, steps: int) -> tuple[list[torch.optim.Optimizer], list[Any]]:
    """Fresh optimizers for one layer (rows of other layers get no gradient, so their steps are zero).

    The walk's own rates where the recipe sets them: its steps are few per layer, where the
    end-to-end rates are sized for steps that move every layer at once."""
    w, opts = cfg.warm_start, []
    if params.r2 is not None:
        opts.append(CayleyAdam([params.r2], lr=w.rotation_lr or cfg.rotation_lr))
    if params.scales():
        opts.append(torch.optim.Adam(params.scales(), lr=w.scale_lr or cfg.scale_lr))
    return opts, [torch.optim.lr_scheduler.CosineAnnealingLR(o, steps) for o in opts]


def _train_layer(parts: DecoderLayerParts, inputs: LayerInputs, target: torch.Tensor, rotate: Any, params: OSTParameters,
                 cfg: OSTQuantConfig, weights_of: Any) -> list[float]:
    """The layer's epochs; returns the mean loss per epoch."""
    epochs = cfg.warm_start.epochs
    opts, schedules = _optimizers(params, cfg, epochs * math.ceil(inputs.hidden.shape[0] / inputs.batch_size))
    epoch_loss = []
    with torch.enable_grad(), transformed_layers([parts], weights_of, checkpointed=False):
        for _ in range(epochs):
            losses = []
            for rows, kwargs in inputs.batches(parts.layer):
                out = parts.layer(inputs.hidden[rows], **kwargs)
                loss = F.mse_loss(out[0] if isinstance(out, tuple) else out, rotate(target[rows]))
                if torch.isfinite(loss):  # a non-finite loss takes no step
                    for o in opts:
                        o.zero_grad(set_to_none=True)
                    loss.backward()
                    for o in opts:
                        o.step()
                    losses.append(loss.item())
                for s in schedules:
                    s.step()
            epoch_loss.append(sum(losses) / len(losses) if losses else math.nan)
    return epoch_loss


def warm_start(ctx: CompressionContext, params: OSTParameters, cfg: OSTQuantConfig, weight_target: WeightQuantConfig | None,
               down_hadamard_seed: int | None) -> list[dict[str, Any]]:
    """Train every layer's R2 and scales in place, first layer to last; returns one record per layer.

    `weight_target`: weight-only targets train through fake-quantized weights, as the end-to-end steps do.
    """
    model, adapter, w = ctx.model, ctx.adapter, cfg.warm_start
    r1 = params.r1.detach().float() if params.r1 is not None else None
    rotate = (lambda h: h @ r1) if r1 is not None else (lambda h: h)  # noqa: E731

    def weights_of(parts: DecoderLayerParts) -> dict[torch.nn.Parameter, torch.Tensor]:
        weights = effective_layer_weights(parts, adapter, params, torch.float32, r1, down_hadamard_seed)
        if weight_target is not None:
            weights = {p: fake_quantize_weight_ste(v, weight_target) if v.dim() == 2 else v for p, v in weights.items()}
        return weights

    tokens = ctx.calibration_tokens()[: w.samples]
    with compression_bypassed():
        inputs = capture_layer0_inputs(model, adapter, tokens, batch_size=min(w.batch_size, tokens.shape[0]))
    fp_hidden = inputs.hidden
    quant_hidden = rotate(fp_hidden)  # the student's stream, in the R1 basis
    records = []
    for parts in adapter.all_layer_parts(model):
        started = time.perf_counter()
        key = ctx.unit_key("layer", parts.index)
        saved = ctx.checkpoints.load(key)
        with compression_bypassed():  # the unquantized layer (base weights, no quantizers): the target
            target = layer_outputs(parts.layer, inputs.with_hidden(fp_hidden))
        if saved is None:
            epoch_loss = _train_layer(parts, inputs.with_hidden(quant_hidden), target, rotate, params, cfg, weights_of)
            record = {"layer": parts.index, "epoch_loss": epoch_loss, "seconds": time.perf_counter() - started}
            ctx.checkpoints.save(key, {k: v.clone() for k, v in _layer_slices(params, parts.index).items()},
                                 {"record": record}, seconds=record["seconds"])
        else:
            for name, value in _layer_slices(params, parts.index).items():
                value.copy_(saved.tensors[name])
            record = saved.meta["record"]
        with torch.no_grad(), transformed_layers([parts], weights_of, checkpointed=False):
            quant_hidden = layer_outputs(parts.layer, inputs.with_hidden(quant_hidden))
        fp_hidden = target
        records.append(record)
        ctx.progress.layer(parts.index, adapter.num_layers, data={"loss": record["epoch_loss"][-1], "seconds": record["seconds"]})
        ctx.progress.check_cancel()
    return records
