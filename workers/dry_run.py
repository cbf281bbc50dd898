"""A stand-in for `compressor.run` that needs no model and no torch (`COMPRESSOR_JOB_RUNNER=dry-run`).

It smoke-tests a deployment (API, queue, workers, artifact store) end to end in seconds: it
walks through fake layers, honours cancel, and writes what the real pipeline writes, in the
same shapes: `checkpoint/` with a `manifest.json` listing each file as {name, size, sha256},
and a `report.json` that is a `compressor.eval.report.Report` like the pipeline's (`dry_run: true`
inside `job`). The
recipe name steers it: a name containing `fail` raises ValueError, `crash` kills the
process, `slow` sleeps long. `COMPRESSOR_DRY_RUN_LAYER_S` sets seconds per layer (default 0.1).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compressor.eval.report import (
    JobInfo, LayerError, LinearBackend, ReloadCheck, Report, SizeInfo, SpeedSection, StageReport, Throughput, job_info,
)
from compressor.export.engines import engine_support, engine_table, engines_summary
from compressor.export.format import library_versions, write_manifest
from compressor.progress import Progress, ProgressEvent
from compressor.spec import JobSpec

CHECKPOINT_DIR = "checkpoint"  # as compressor.pipeline.CHECKPOINT_DIR
NUM_LAYERS = 6
# the checkpoint shape the dry run pretends to write (int4 W4A16, group 128), judged by the real engine rules
DRY_QUANTIZATION_CONFIG = {
    "quant_method": "compressed-tensors", "format": "pack-quantized",
    "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": None, "output_activations": None,
                                  "weights": {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group",
                                              "group_size": 128, "dynamic": False}}},
}


@dataclass
class DryRunResult:
    out_dir: Path
    report: dict[str, Any]
    artifacts: list[Path] = field(default_factory=list)


def run(spec: JobSpec, out_dir: Path, progress: Callable[[ProgressEvent], None] | None = None,
        should_cancel: Callable[[], bool] | None = None, home: Path | None = None) -> DryRunResult:
    recipe = spec.recipe
    name = recipe.name or ""
    layer_s = float(os.environ.get("COMPRESSOR_DRY_RUN_LAYER_S", "0.1")) * (50 if "slow" in name else 1)
    p = Progress(progress, should_cancel)
    t0 = time.time()
    p.stage = "quantize"
    p.emit("stage_start", "dry run: quantize")
    layers = []
    for i in range(NUM_LAYERS):
        time.sleep(layer_s)
        if "crash" in name and i == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        if "fail" in name and i == 2:
            raise ValueError("dry run asked to fail (recipe name contains 'fail')")
        layers.append({"layer": i, "name": f"model.layers.{i}.mlp.down_proj", "kind": "down_proj", "rel_error": 0.01 * (i + 1)})
        p.layer(i, NUM_LAYERS)
    p.emit("stage_end", "dry run: quantize done")
    quantize_s = time.time() - t0

    p.stage = "export"
    checkpoint = Path(out_dir) / CHECKPOINT_DIR
    checkpoint.mkdir(parents=True, exist_ok=True)
    (checkpoint / "model.safetensors").write_bytes(os.urandom(4096))
    (checkpoint / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "dry_run": True}))
    job = job_info(spec.model, recipe).model_dump(mode="json")
    support = engine_support(DRY_QUANTIZATION_CONFIG, [])
    write_manifest(checkpoint, {**job, "format": "dry-run", "versions": library_versions(),
                                "engines": engines_summary(support), "engine_support": engine_table(support),
                                "not_servable_reasons": ["a dry run holds random bytes"], "runtime_requirements": [],
                                "online_transforms": []})
    checkpoint_bytes = sum(f.stat().st_size for f in checkpoint.iterdir())

    p.stage = "eval:wiki"
    p.emit("metric", "wiki perplexity 20.500", data={"dataset": "wiki", "perplexity": 20.5})
    seconds = round(time.time() - t0, 3)
    report = Report(
        job=JobInfo(**job, dry_run=True),
        versions=library_versions(),
        perplexity={"original": {"wiki": 20.0}, "compressed": {"wiki": 20.5}},
        kl={"wiki": 0.01},
        eval_tokens={"wiki": recipe.eval.max_tokens},
        size=SizeInfo(bits_per_weight=4.25, checkpoint_bytes=checkpoint_bytes, original_bytes=8192),
        stages=[StageReport(name="0:quantize", seconds=round(quantize_s, 3), peak_rss_mb=1.0)],
        layers=[LayerError(**layer) for layer in layers],
        seconds=seconds,
        peak_rss_mb=1.0,
        speed=dry_speed_section(recipe.eval.speed) if recipe.eval.speed is not None else None,
        engines=engine_table(support),
    ).model_dump(mode="json")
    (Path(out_dir) / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    p.stage = None
    p.emit("message", f"dry run done in {seconds:.1f} s")
    return DryRunResult(Path(out_dir), report, sorted(checkpoint.iterdir()) + [Path(out_dir) / "report.json"])


def dry_speed_section(cfg) -> SpeedSection:  # noqa: ANN001  (compressor.spec.SpeedConfig)
    """The pipeline's speed section in its shape, with stand-in numbers (nothing is loaded or timed)."""
    reload = ReloadCheck(dataset="wiki", windows=cfg.windows, tokens=cfg.windows * 511, fake_quant_perplexity=20.5,
                         reloaded_perplexity=20.51, relative_difference=0.01 / 20.5, tolerance=cfg.tolerance,
                         passed=0.01 / 20.5 <= cfg.tolerance)
    rows = [Throughput(phase=phase, batch=b, tokens_per_sequence=tokens, original_tokens_per_s=100.0 * b,
                       compressed_tokens_per_s=150.0 * b, speedup=1.5)
            for b in cfg.batch_sizes for phase, tokens in (("prefill", cfg.prompt_tokens), ("decode", cfg.decode_tokens))]
    return SpeedSection(device="cpu", dtype="float32", threads=1, reload=reload, throughput=rows,
                        backends=[LinearBackend(kind="int4", backend="dry-run", kernel="none (dry run)", modules=NUM_LAYERS)],
                        weight_bytes={"original": 8192, "compressed": 4096}, rounds=cfg.rounds)
