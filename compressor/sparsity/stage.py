"""The `prosparse` recipe stage: ReLU swap, L1-scheduled fine-tuning (full or HFT), FATReLU, sparsity report.

Runs before quantization in a recipe (sparse and low-bit together): later `quantize`
stages see an ordinary Llama whose gate activation is FATReLU, and the export carries the
threshold in config.json (see `activation`).
"""

from __future__ import annotations

from typing import Any

import torch

from compressor.context import CompressionContext
from compressor.data import eval_windows, load_text
from compressor.registry import register_stage
from compressor.sparsity.activation import set_gate_activation
from compressor.sparsity.metrics import activation_sparsity, ppl_p_sparsity
from compressor.sparsity.training import finetune
from compressor.spec import ProSparseConfig

SPARSITY_TEXT = "wiki"  # held-out split of the bundled corpus: never seen by calibration


def sparsity_windows(ctx: CompressionContext, max_tokens: int) -> torch.Tensor:
    window = min(ctx.recipe.eval.window, max_tokens)
    return eval_windows(ctx.tokenizer, load_text(SPARSITY_TEXT, "eval", ctx.data_dir), max_tokens, window)


@register_stage(ProSparseConfig)
def run_prosparse(ctx: CompressionContext, cfg: ProSparseConfig) -> dict[str, Any]:
    model = ctx.model
    set_gate_activation(model, 0.0)  # train with plain ReLU; the threshold shift comes after training
    history = finetune(model, ctx.calibration_tokens(), cfg, ctx.progress, ctx.checkpoints, ctx.unit_key("step", 0)[:-5])
    set_gate_activation(model, cfg.fatrelu_threshold)

    windows = sparsity_windows(ctx, cfg.sparsity_eval_tokens)
    per_layer = activation_sparsity(model, windows)
    section: dict[str, Any] = {
        "per_layer": per_layer,
        "mean": sum(per_layer) / len(per_layer),
        "fatrelu_threshold": cfg.fatrelu_threshold,
        "eval_tokens": int(windows.numel()),
        "finetune": cfg.finetune,
        "steps": len(history),
    }
    ctx.progress.emit("metric", f"activation sparsity {section['mean']:.3f}", data={"sparsity": section["mean"]})
    if cfg.ppl_p is not None:
        cett_windows = sparsity_windows(ctx, cfg.cett_eval_tokens)
        result = ppl_p_sparsity(model, cett_windows, cett_windows[:1], p=cfg.ppl_p,
                                on_step=lambda probe: ctx.progress.emit("metric", f"CETT probe {probe}", data=probe))
        section.update({"ppl_p": cfg.ppl_p, "ppl_p_sparsity": result["sparsity"], "cett": result["cett"]})
        section["ppl_p_per_layer"] = result["per_layer"]
    ctx.report_sections["sparsity"] = section
    ctx.report_sections.setdefault("training", {})["prosparse"] = [
        {k: r[k] for k in ("step", "lambda", "loss", "lm_loss", "sparsity")} for r in history
    ]
    return {
        "steps": len(history), "finetune": cfg.finetune, "sparsity": section["mean"],
        "first_loss": history[0]["lm_loss"] if history else None, "last_loss": history[-1]["lm_loss"] if history else None,
        "ppl_p_sparsity": section.get("ppl_p_sparsity"),
    }
