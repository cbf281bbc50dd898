"""The `ostquant` recipe stage: fold norms, attach fixed online Hadamards, learn R and S, fuse, report QSUR."""

from __future__ import annotations

from typing import Any

import torch

from compressor.context import CompressionContext
from compressor.quant.attention import set_kv_quant, use_compressed_attention
from compressor.quant.calibration import capture_linear_inputs
from compressor.quant.compressed_linear import compression_bypassed, plain_linear, wrap_linear
from compressor.registry import register_stage
from compressor.spec import OSTQuantConfig
from compressor.transforms.fusion import fold_norms_into_linears
from compressor.transforms.hadamard import random_hadamard_matrix
from compressor.transforms.online_rotations import attach_online_rotations, resolve_online_qk
from compressor.transforms.ostquant.effective import fuse_ost_transforms
from compressor.transforms.ostquant.parameters import OSTParameters
from compressor.transforms.ostquant.stiefel import orthogonality_error
from compressor.transforms.ostquant.training import train_transforms
from compressor.transforms.ostquant.warm_start import warm_start
from compressor.transforms.qsur import ActivationMoments, qsur_per_dim, smoothing_transform, transformed_moments

@torch.no_grad()
def capture_input_moments(ctx: CompressionContext, samples: int) -> dict[tuple[int, str], ActivationMoments]:
    """Mean/covariance of the (untransformed) inputs of q_proj, gate_proj and down_proj in every layer."""
    moments: dict[tuple[int, str], ActivationMoments] = {}
    linears = {}
    for parts in ctx.adapter.all_layer_parts(ctx.model):
        for kind, module in (("qkv", parts.q_proj), ("gate_up", parts.gate_proj), ("down", parts.down_proj)):
            lin = plain_linear(module)
            moments[(parts.index, kind)] = ActivationMoments(lin.in_features)
            linears[f"{parts.index}:{kind}"] = lin

    def add(name: str, x: torch.Tensor) -> None:
        layer, kind = name.split(":")
        moments[(int(layer), kind)].add(x)

    with capture_linear_inputs(linears, add), compression_bypassed():
        for batch in ctx.calibration_tokens()[:samples].split(2):
            ctx.model(batch, use_cache=False)
    return moments


def qsur_table(ctx: CompressionContext, params: OSTParameters, moments: dict, down_seed: int | None) -> list[dict[str, Any]]:
    """QSUR per layer input for: original, smoothing only, rotation only, rotation + scaling (learned)."""
    rows = []
    r1 = params.r1.detach().double() if params.r1 is not None else None
    for (layer, kind), acc in sorted(moments.items()):
        mean, cov = acc.moments()
        d = mean.numel()
        eye = torch.eye(d, dtype=torch.float64, device=mean.device)
        if kind == "down":
            rotation = random_hadamard_matrix(d, seed=down_seed).to(mean.device) if down_seed is not None else eye
            scale = params.log_ud[layer] if params.has_scales else None
            rotation_scaling = torch.diag((-scale.detach().double()).exp()) @ rotation if scale is not None else rotation
        else:
            rotation = r1 if r1 is not None else eye
            scale = (params.log_attn if kind == "qkv" else params.log_ffn)[layer] if params.has_scales else None
            rotation_scaling = rotation @ torch.diag((-scale.detach().double()).exp()) if scale is not None else rotation
        values = {
            "original": qsur_per_dim(mean, cov),
            "smoothing": qsur_per_dim(*transformed_moments(mean, cov, smoothing_transform(cov, mean))),
            "rotation": qsur_per_dim(*transformed_moments(mean, cov, rotation)),
            "rotation_scaling": qsur_per_dim(*transformed_moments(mean, cov, rotation_scaling)),
        }
        rows.append({"layer": layer, "name": f"model.layers.{layer}.{kind}_input", "kind": kind, "values": values})
    return rows


@register_stage(OSTQuantConfig)
def run_ostquant(ctx: CompressionContext, cfg: OSTQuantConfig) -> dict[str, Any]:
    model, adapter = ctx.model, ctx.adapter
    target = ctx.next_quantize_config()
    if target is None:  # `Recipe` refuses such a recipe (spec/order.py); a hand-built context may not
        raise ValueError(f"recipe.stages[{ctx.stage_index}].ostquant: needs a later quantize stage (it trains for that target)")
    fold_norms_into_linears(model, adapter)
    moments = capture_input_moments(ctx, cfg.qsur_samples) if cfg.qsur_samples else {}

    for parts in adapter.all_layer_parts(model):
        for name in parts.linears():
            parent, attr = name.split(".")
            wrapped = wrap_linear(getattr(parts.layer, parent), attr)
            wrapped.input_quant = target.activations  # active in training only for W4A4-style targets
        set_kv_quant(parts.layer.self_attn, target.kv_cache)
    qk = resolve_online_qk(cfg.online_qk, ctx.recipe.final_kv_cache())
    down_seed = attach_online_rotations(model, adapter, cfg.seed, down_proj=cfg.online_down_proj, qk=qk, fuse_down_proj=False)
    if target.kv_cache is not None:
        use_compressed_attention(model)

    params = OSTParameters(model, adapter, cfg).to(ctx.device)  # trained where the model is
    # weight-only targets train through fake-quantized weights; W4A4 targets through activations only
    weight_target = target.weights if target.activations is None else None
    warm = warm_start(ctx, params, cfg, weight_target, down_seed) if cfg.warm_start is not None else []
    losses = train_transforms(ctx, params, cfg, weight_target, down_seed)
    fuse_ost_transforms(model, adapter, params, down_seed)
    if moments:
        ctx.report_sections["qsur"] = qsur_table(ctx, params, moments, down_seed)
    ctx.report_sections.setdefault("training", {})["ostquant_loss"] = losses
    if warm:
        ctx.report_sections["training"]["ostquant_warm_start"] = warm
    ortho = max((orthogonality_error(r.detach()) for r in params.rotations()), default=0.0)
    return {
        "steps": cfg.steps, "loss": cfg.loss, "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None, "orthogonality_error": ortho, "online_qk": qk,
        **({"warm_start_seconds": round(sum(r["seconds"] for r in warm), 1),
            "warm_start_first_loss": sum(r["epoch_loss"][0] for r in warm) / len(warm),
            "warm_start_last_loss": sum(r["epoch_loss"][-1] for r in warm) / len(warm)} if warm else {}),
    }
