"""The `flatquant` recipe stage: learn each decoder layer's input transforms for the next quantize stage, fuse them.

Afterwards every decoder linear is a `FakeQuantLinear` with its weight side fused and its
online side, (x ⊙ c)(L ⊗ R), installed in front of it (plus the learned activation clipping);
the recipe's next quantize stage then quantizes the fused weights (GPTQ's Hessians see the
transformed inputs) and installs the activation and KV quantizers, so export, evaluation and
`compressor.load` run the transforms as they run any online input transform.
"""

from __future__ import annotations

from typing import Any

from compressor.context import CompressionContext
from compressor.registry import register_stage
from compressor.spec import FlatQuantConfig
from compressor.transforms.flatquant.reconstruction import flatquant_calibrate
from compressor.transforms.online_rotations import resolve_online_qk


@register_stage(FlatQuantConfig)
def run_flatquant(ctx: CompressionContext, cfg: FlatQuantConfig) -> dict[str, Any]:
    target = ctx.next_quantize_config()
    if target is None:  # `Recipe` refuses such a recipe (spec/order.py); a hand-built context may not
        raise ValueError(f"recipe.stages[{ctx.stage_index}].flatquant: needs a later quantize stage (it trains for that target)")
    qk = resolve_online_qk(cfg.online_qk, ctx.recipe.final_kv_cache())
    log = flatquant_calibrate(ctx.model, ctx.adapter, ctx.calibration_tokens(), cfg, target, qk, ctx.progress,
                              ctx.checkpoints, lambda i: ctx.unit_key("layer", i), ctx.layers)
    qsur = log.pop("qsur")
    if qsur:
        ctx.report_sections["qsur"] = qsur
    return {"transforms": list(cfg.transforms), "kronecker": cfg.kronecker, "scales": cfg.scales, "loss": cfg.loss,
            "epochs": cfg.epochs, "online_qk": qk, **log}
