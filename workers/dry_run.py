"""A stand-in for `compressor.run` that needs no model and no torch.

Set `COMPRESSOR_JOB_RUNNER=workers.dry_run:run` to smoke-test a deployment (API, queue,
workers, artifact store) end to end in seconds. It walks through fake layers, honours
cancel, writes a small checkpoint-like file and a report. The recipe name steers it:
a name containing `fail` raises ValueError, `crash` kills the process, `slow` sleeps long.
`COMPRESSOR_DRY_RUN_LAYER_S` sets seconds per layer (default 0.1).
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

from compressor.progress import Progress, ProgressEvent


@dataclass
class DryRunResult:
    out_dir: Path
    report: dict[str, Any]
    artifacts: list[Path] = field(default_factory=list)


def run(spec: Any, out_dir: Path, progress: Callable[[ProgressEvent], None] | None = None,
        should_cancel: Callable[[], bool] | None = None) -> DryRunResult:
    name = spec.recipe.name or ""
    layer_s = float(os.environ.get("COMPRESSOR_DRY_RUN_LAYER_S", "0.1")) * (50 if "slow" in name else 1)
    num_layers = 6
    p = Progress(progress, should_cancel)
    t0 = time.time()
    p.stage = "quantize"
    p.emit("stage_start", "dry run: quantize")
    for i in range(num_layers):
        time.sleep(layer_s)
        if "crash" in name and i == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        if "fail" in name and i == 2:
            raise ValueError("dry run asked to fail (recipe name contains 'fail')")
        p.layer(i, num_layers)
    p.emit("stage_end", "dry run: quantize done")
    p.stage = "eval"
    p.emit("metric", "perplexity", data={"wiki": 20.5})
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / "model.safetensors"
    weights.write_bytes(os.urandom(4096))
    report = {
        "model": spec.model, "recipe": name, "dry_run": True,
        "perplexity": {"original": {"wiki": 20.0}, "compressed": {"wiki": 20.5}},
        "kl": {"wiki": 0.01}, "seconds": round(time.time() - t0, 3), "peak_rss_mb": 1.0,
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    (out_dir / "manifest.json").write_text(json.dumps({"format": "dry-run", "files": ["model.safetensors"]}))
    return DryRunResult(out_dir, report, sorted(out_dir.iterdir()))
