"""`run(spec)`: load the model, run the recipe's stages in order, export, evaluate, report.

The one entry the CLI, the workers and the tests call. Progress goes out through the
caller's hook; cancellation is honoured between layers and evaluation batches.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import compressor.stages  # noqa: F401  (registers every stage handler)
from compressor.context import CompressionContext
from compressor.data import eval_windows, load_text
from compressor.eval.perplexity import score_windows
from compressor.eval.report_html import write_report_html
from compressor.eval.resources import CostMeter
from compressor.export.compressed_tensors_format import (
    export_compressed_tensors,
    group_size_problems,
    quantized_bits_per_weight,
)
from compressor.export.manifest import library_versions
from compressor.models.adapter import adapter_for
from compressor.models.store import ModelStore
from compressor.paths import compressor_home
from compressor.progress import CancelCheck, Progress, ProgressHook
from compressor.registry import stage_handler
from compressor.spec import AffineQuantConfig, JobSpec, QuantizeConfig

CHECKPOINT_DIR = "checkpoint"


@dataclass
class RunResult:
    out_dir: Path
    report: dict[str, Any]
    artifacts: list[Path] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _check_group_sizes(ctx: CompressionContext) -> None:
    """Refuse an export the format cannot hold before any long computation starts.

    The one recipe rule that needs the model (its linear widths), so it runs after loading, not in `Recipe`.
    """
    if ctx.recipe.export.format != "compressed-tensors":
        return
    names = ctx.adapter.linear_names(ctx.model)
    for index, cfg in enumerate(ctx.recipe.stage_configs()):
        weights = cfg.weights if isinstance(cfg, (QuantizeConfig, AffineQuantConfig)) else None
        if weights is not None and weights.strategy == "group":
            problems = group_size_problems(ctx.model, weights.group_size, names)
            if problems:
                shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
                raise ValueError(
                    f"recipe.stages[{index}].{cfg.stage}.weights.group_size {weights.group_size} does not divide the input "
                    f"width of {len(problems)} linears, which compressed-tensors cannot store: {shown}. "
                    f"Choose a group size that divides them, or set export.format: none for a fake-quant evaluation."
                )


def evaluate(ctx: CompressionContext, reference: torch.nn.Module | None, meter: CostMeter) -> tuple[dict, dict, dict]:
    cfg = ctx.recipe.eval
    ppl: dict[str, dict[str, float]] = {"original": {}, "compressed": {}}
    kl: dict[str, float] = {}
    tokens: dict[str, int] = {}
    for name in cfg.datasets:
        ctx.progress.stage = f"eval:{name}"
        windows = eval_windows(ctx.tokenizer, load_text(name, "eval", ctx.data_dir), cfg.max_tokens, cfg.window)

        def on_batch(done: int, total: int) -> None:
            ctx.progress.emit("step", f"{name}: {done}/{total} windows", fraction=done / total)
            ctx.progress.check_cancel()

        with meter.measure(f"eval:{name}"):
            scores = score_windows(ctx.model, windows, reference=reference, on_batch=on_batch)
        ppl["compressed"][name] = scores.perplexity
        if reference is not None:
            ppl["original"][name] = scores.reference_perplexity
            if cfg.kl:
                kl[name] = scores.kl
        tokens[name] = scores.tokens
        ctx.progress.emit("metric", f"{name} perplexity {scores.perplexity:.3f}", data={"dataset": name, "perplexity": scores.perplexity})
    if not ppl["original"]:
        del ppl["original"]
    return ppl, kl, tokens


def run_stages(ctx: CompressionContext, meter: CostMeter) -> list[dict[str, Any]]:
    """Apply the recipe's stages to `ctx.model` in order; one report entry (details, cost) per stage."""
    prog, stages = ctx.progress, ctx.recipe.stage_configs()
    stage_reports = []
    for index, cfg in enumerate(stages):
        name, handler = stage_handler(cfg)
        ctx.stage_index = index
        prog.stage = name
        prog.emit("stage_start", f"stage {index + 1}/{len(stages)}: {name}")
        with meter.measure(f"{index}:{name}") as cost:
            details = handler(ctx, cfg)
        stage_reports.append({"name": name, "details": details, "cost": cost})
        prog.emit("stage_end", f"{name} done in {cost.seconds:.1f} s")
        prog.check_cancel()
    return stage_reports


def run(
    spec: JobSpec,
    out_dir: Path,
    progress: ProgressHook | None = None,
    should_cancel: CancelCheck | None = None,
    home: Path | None = None,
) -> RunResult:
    """Run one compression job; writes the checkpoint, report.json and report.html under `out_dir`."""
    spec = JobSpec.model_validate(spec)
    recipe = spec.recipe
    home = home or compressor_home()
    store = ModelStore(home)
    store.resolve(spec.model)  # unknown model: fail before anything else
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prog = Progress(progress, should_cancel)
    meter = CostMeter()
    seed_everything(recipe.seed)

    prog.stage = "load"
    prog.emit("stage_start", f"loading {spec.model}")
    with meter.measure("load"):
        model, tokenizer = store.load(spec.model)
        adapter = adapter_for(model)
        want_reference = recipe.eval.original or recipe.eval.kl
        reference = copy.deepcopy(model) if want_reference and recipe.eval.datasets else None
    ctx = CompressionContext(model, tokenizer, adapter, recipe, prog, data_dir=home / "data")
    _check_group_sizes(ctx)

    stage_reports = run_stages(ctx, meter)

    artifacts: list[Path] = []
    checkpoint_bytes = None
    if recipe.export.format == "compressed-tensors":
        prog.stage = "export"
        prog.emit("stage_start", "writing compressed-tensors checkpoint")
        kv = next((c.kv_cache for c in recipe.stage_configs() if isinstance(c, QuantizeConfig) and c.kv_cache), None)
        with meter.measure("export"):
            manifest_info = {"model": spec.model, "recipe": recipe.model_dump(mode="json"), "recipe_sha256": recipe.sha256(), "seed": recipe.seed}
            artifacts = export_compressed_tensors(model, tokenizer, out_dir / CHECKPOINT_DIR, manifest_info, kv_cache=kv)
        checkpoint_bytes = sum(p.stat().st_size for p in artifacts)

    ppl, kl, eval_tokens = evaluate(ctx, reference, meter) if recipe.eval.datasets else ({}, {}, {})

    params = sum(p.numel() for p in model.parameters())
    report: dict[str, Any] = {
        "job": {"model": spec.model, "recipe": recipe.model_dump(mode="json"), "recipe_sha256": recipe.sha256(), "seed": recipe.seed},
        "versions": library_versions(),
        "perplexity": ppl,
        "kl": kl,
        "eval_tokens": eval_tokens,
        "size": {
            "bits_per_weight": quantized_bits_per_weight(model),
            "checkpoint_bytes": checkpoint_bytes,
            "original_bytes": params * 2,  # the same model stored in bf16
        },
        "stages": [
            {"name": name, "seconds": c.seconds, "peak_rss_mb": c.peak_rss_mb, "details": next(
                (s["details"] for s in stage_reports if s["cost"] is c), {})}
            for name, c in meter.stages.items()
        ],
        "layers": ctx.layer_errors,
        **ctx.report_sections,
        "seconds": meter.total_seconds,
        "peak_rss_mb": meter.peak_rss_mb,
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    write_report_html(report, out_dir / "report.html")
    prog.stage = None
    prog.emit("message", f"done in {meter.total_seconds:.1f} s; artifacts in {out_dir}")
    return RunResult(out_dir=out_dir, report=report, artifacts=artifacts + [out_dir / "report.json", out_dir / "report.html"])
