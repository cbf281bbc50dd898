"""`run(spec)`: load the model, run the recipe's stages in order, export, evaluate, report.

The one entry the CLI, the workers and the tests call. Progress goes out through the
caller's hook; cancellation is honoured between layers and evaluation batches.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import compressor.stages  # noqa: F401  (registers every stage handler)
from compressor.context import CompressionContext
from compressor.eval.evaluation import evaluate, measure_reference
from compressor.checkpoints import CheckpointStore
from compressor.checkpoints.fingerprint import job_fingerprint
from compressor.checkpoints.rng import restore_rng, rng_unit
from compressor.checkpoints.store import Observer
from compressor.eval.report import EvalScores, Report, SizeInfo, build_report, job_info, resume_section
from compressor.eval.report_html import write_report_html
from compressor.eval.resources import CostMeter
from compressor.eval.speed import measure_speed, speed_job
from compressor.execution.plan import execution_section, plan_execution
from compressor.export.stored_precision import round_to_stored_precision
from compressor.export.compressed_tensors_format import (
    export_compressed_tensors,
    quantized_bits_per_weight,
)
from compressor.export.format import library_versions, read_manifest
from compressor.execution.device import device_memory
from compressor.execution.layer_policy import choose_layers
from compressor.execution.residency import ResidentLayers
from compressor.execution.skeleton import load_skeleton
from compressor.models.adapter import adapter_for
from compressor.models.compatibility import check_recipe_against_model
from compressor.machine import machine_info
from compressor.models.store import ModelStore
from compressor.paths import compressor_home
from compressor.progress import CancelCheck, Progress, ProgressHook
from compressor.registry import stage_handler
from compressor.spec import JobSpec

CHECKPOINT_DIR = "checkpoint"
LAYERS_WORK_DIR = ".layers"  # sequential execution: each finished decoder layer's state until the job ends


@dataclass
class RunResult:
    """What a job left behind. `report` is report.json's content (for JSON consumers), `report_model` the same typed."""

    out_dir: Path
    report: dict[str, Any]
    report_model: Report | None = None
    artifacts: list[Path] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _layout_changes(config: dict[str, Any]) -> bool:
    """Whether the family's adapter changes the module layout while a job runs (Phi-3 splits fused projections)."""
    from compressor.models.adapters import ADAPTERS
    from compressor.models.adapters.base import DecoderAdapter

    arch = (config.get("architectures") or [""])[0]
    adapter = ADAPTERS.get(arch)
    return adapter is not None and adapter.restore_checkpoint_layout is not DecoderAdapter.restore_checkpoint_layout


def run_stages(ctx: CompressionContext, meter: CostMeter) -> list[dict[str, Any]]:
    """Apply the recipe's stages to `ctx.model` in order; one entry (name, meter key, details, cost) per stage.

    A stage a previous attempt finished runs again from its checkpointed units (cheap and
    bit-identical), then the random generators are set to where that attempt left them, so
    the stages after it see exactly what they would have seen without the crash.
    """
    prog, stages = ctx.progress, ctx.recipe.stage_configs()
    stage_reports = []
    for index, cfg in enumerate(stages):
        name, handler = stage_handler(cfg)
        ctx.stage_index = index
        prog.stage = name
        prog.emit("stage_start", f"stage {index + 1}/{len(stages)}: {name}")
        key = f"{index}:{name}"
        done = ctx.checkpoints.load(f"s{index}:done")
        with meter.measure(key) as cost:
            details = handler(ctx, cfg)
        if done is not None:
            restore_rng(done.tensors, done.meta)
        else:
            ctx.checkpoints.save(f"s{index}:done", *rng_unit())  # its work is in its units
        stage_reports.append({"name": name, "key": key, "details": details, "cost": cost})
        prog.emit("stage_end", f"{name} done in {cost.seconds:.1f} s")
        prog.check_cancel()
    return stage_reports


def run(
    spec: JobSpec,
    out_dir: Path,
    progress: ProgressHook | None = None,
    should_cancel: CancelCheck | None = None,
    home: Path | None = None,
    resume_dir: Path | None = None,
    attempt: int | None = None,
    checkpoint_observer: Observer | None = None,
    device: str | None = None,
) -> RunResult:
    """Run one compression job; writes the checkpoint, report.json and report.html under `out_dir`.

    With `resume_dir`, finished layers, training steps and scores are checkpointed there and
    reused by a later call with the same job (same fingerprint); the folder is emptied when
    the job succeeds. `attempt` numbers the try for the events (the service's attempt count);
    `checkpoint_observer` hears of every checkpoint write (the service mirrors them to S3).
    `device` (`cpu`, `cuda:N`, `auto`; None: `COMPRESSOR_DEVICE`) is where every stage and the
    evaluation run; the weights are loaded in the working dtype it implies (`recipe.execution.dtype`).
    """
    spec = JobSpec.model_validate(spec)
    recipe = spec.recipe
    home = home or compressor_home()
    store = ModelStore(home)
    model_dir = store.resolve(spec.model)  # unknown model: fail before anything else
    config = store.config(spec.model)  # config.json, read once: the checks, the plan and the residency all use it
    problems = check_recipe_against_model(config, recipe)  # the family and widths, before any weight loads
    if problems:
        raise ValueError(f"the recipe cannot run on {spec.model}:\n  " + "\n  ".join(problems))
    plan = plan_execution(config, recipe, device)  # an end-to-end job that cannot fit fails here
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prog = Progress(progress, should_cancel)
    meter = CostMeter()
    seed_everything(recipe.seed)
    machine = machine_info(plan.target.device)
    checkpoints = CheckpointStore(None)
    if resume_dir is not None:
        fingerprint = job_fingerprint(spec, model_dir, home / "data", machine.device_kind)
        checkpoints = CheckpointStore(resume_dir, fingerprint, attempt, checkpoint_observer)
        if checkpoints.info.fresh_reason:
            prog.emit("message", f"starting fresh: {checkpoints.info.fresh_reason}")

    device, dtype = plan.target.torch_device(), plan.target.torch_dtype()
    info = store.info(spec.model)
    layers_mode, layers_why = choose_layers(recipe, int(info.get("params", 0)) * dtype.itemsize, device_memory(str(device))[0],
                                            layout_changes=_layout_changes(config))
    plan = plan.for_layers(config, recipe, layers_mode)
    prog.stage = "load"
    prog.emit("stage_start", f"loading {spec.model} ({layers_mode}: {layers_why})")
    prog.emit("message", f"running on {plan.target.describe()}", data={"device": plan.target.device, "dtype": plan.target.dtype})
    with meter.measure("load"):
        if layers_mode == "sequential":
            model, layer_store = load_skeleton(model_dir, out_dir / LAYERS_WORK_DIR, device, dtype)
            tokenizer = store.tokenizer(spec.model)
            adapter = layer_store.adapter
        else:
            model, tokenizer = store.load(spec.model, dtype=dtype)
            model.to(device)
            adapter = adapter_for(model)
            layer_store = ResidentLayers(model, adapter)
    ctx = CompressionContext(model, tokenizer, adapter, recipe, prog, data_dir=home / "data", checkpoints=checkpoints,
                             device=device, dtype=dtype, layers=layer_store)
    where = checkpoints.resume_point([c.stage for c in recipe.stage_configs()], adapter.num_layers)
    if where:
        checkpoints.info.resumed_from = where
        prog.emit("message", f"resumed at {where} (attempt {checkpoints.info.attempt})",
                  data={"resumed_from": where, "attempt": checkpoints.info.attempt})
    reference = measure_reference(ctx, meter)  # the original's side of the evaluation, before any stage changes it

    stage_reports = run_stages(ctx, meter)

    adapter.restore_checkpoint_layout(model)  # e.g. Phi-3's split projections fused back, as its checkpoint stores them
    rounded = round_to_stored_precision(model, layer_store)  # evaluate the checkpoint's bf16 tensors, not float32 ones
    if rounded:
        prog.emit("message", f"{rounded} dense tensors rounded to the checkpoint's bfloat16")
    artifacts: list[Path] = []
    checkpoint_bytes = engines = None
    if recipe.export.format == "compressed-tensors":
        prog.stage = "export"
        prog.emit("stage_start", "writing compressed-tensors checkpoint")
        with meter.measure("export"):
            manifest_info = {**job_info(spec.model, recipe).model_dump(mode="json"), "machine": machine.model_dump(mode="json")}
            artifacts = export_compressed_tensors(model, tokenizer, out_dir / CHECKPOINT_DIR, manifest_info, layer_store)
        checkpoint_bytes = sum(p.stat().st_size for p in artifacts)
        engines = read_manifest(out_dir / CHECKPOINT_DIR).get("engine_support")

    scores = evaluate(ctx, reference, meter) if recipe.eval.datasets else EvalScores()
    speed = None
    if recipe.eval.speed is not None and artifacts:  # the checkpoint reloaded with compressor.load: checked and timed
        prog.stage = "speed"
        with meter.measure("speed"):
            speed = measure_speed(speed_job(ctx, out_dir / CHECKPOINT_DIR, model_dir, recipe.eval.speed), recipe.eval.speed)

    params = sum(p.numel() for p in model.parameters())
    report = build_report(
        model=spec.model,
        recipe=recipe,
        versions=library_versions(),
        scores=scores,
        size=SizeInfo(
            bits_per_weight=quantized_bits_per_weight(model),
            checkpoint_bytes=checkpoint_bytes,
            original_bytes=params * 2,  # the same model stored in bf16
        ),
        costs=meter.stages,
        stage_details={s["key"]: s["details"] for s in stage_reports},
        layers=ctx.layer_errors,
        sections=ctx.report_sections,
        machine=machine,
        resume=resume_section(checkpoints.info) if resume_dir is not None else None,
        engines=engines,
        execution=execution_section(plan, meter.peak_rss_mb),
        speed=speed,
    )
    report_json = report.model_dump(mode="json")
    (out_dir / "report.json").write_text(json.dumps(report_json, indent=2) + "\n")
    write_report_html(report, out_dir / "report.html")
    checkpoints.clear()  # the job succeeded: its resume state has served
    shutil.rmtree(out_dir / LAYERS_WORK_DIR, ignore_errors=True)
    prog.stage = None
    if checkpoints.info.resumed_from:
        prog.emit("message", f"resumed job saved {checkpoints.info.seconds_saved:.1f} s of work "
                  f"({checkpoints.info.units_reused} checkpointed units reused)")
    prog.emit("message", f"done in {meter.total_seconds:.1f} s; artifacts in {out_dir}")
    return RunResult(
        out_dir=out_dir, report=report_json, report_model=report,
        artifacts=artifacts + [out_dir / "report.json", out_dir / "report.html"],
    )
