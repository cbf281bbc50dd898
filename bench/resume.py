"""Crash and resume on the bundled model: the `w4a16-gptq` job SIGKILLed at 50%, 75% and 90% of GPTQ, then resumed.

Each run is a real `compressor run` process (wall and CPU seconds are both recorded: on a
shared machine the CPU seconds are the steadier measure of the work a resume saves); `COMPRESSOR_FAILPOINT` kills it with SIGKILL
right after layer k's checkpoint is written (k = 15, 22, 27 of 30). Measured: wall time to
finish after the kill with `--resume` against a fresh restart (the uninterrupted job's wall
time), checkpoint bytes on disk at the kill, and that the resumed model.safetensors has the
uninterrupted run's sha256. Evaluation is off (the job is the GPTQ stage and the export),
so the times are the quantization's.

    .venv/bin/python bench/resume.py [--recipe w4a16-gptq] [--fractions 0.5 0.75 0.9] [--samples N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from compressor.checkpoints import failpoint
from compressor.checkpoints.store import JOURNAL
from compressor.export.format import sha256_file
from compressor.machine import machine_info
from compressor.spec import load_recipe

RESULTS = Path(__file__).resolve().parent / "results" / "resume.json"
REPO = Path(__file__).resolve().parent.parent
LAYERS = 30


def compressor_run(args: list[str], kill_after: str | None = None) -> tuple[int, float, float, str]:
    """(exit code, wall seconds, CPU seconds, stderr tail) of one `compressor run` process.

    CPU seconds (user + system of the child) are what a shared machine's load disturbs least.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(failpoint.ENV, None)
    if kill_after:
        env[failpoint.ENV] = kill_after
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "compressor.cli", "run", *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc.returncode, wall, cpu, proc.stderr[-2000:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="w4a16-gptq")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.5, 0.75, 0.9])
    parser.add_argument("--samples", type=int, default=None, help="calibration chunks (default: the recipe's, 128)")
    args = parser.parse_args()
    recipe = load_recipe(args.recipe).model_dump(mode="json")
    recipe["eval"] = {**recipe["eval"], "datasets": []}
    if args.samples:
        recipe["calibration"] = {**recipe["calibration"], "samples": args.samples}
    with tempfile.TemporaryDirectory() as tmp:
        recipe_file = Path(tmp) / "recipe.json"
        recipe_file.write_text(json.dumps(recipe))
        job = ["--model", "smollm2-135m", "--recipe", str(recipe_file)]
        rc, fresh_s, fresh_cpu, err = compressor_run([*job, "--out", f"{tmp}/fresh"])
        assert rc == 0, err
        fresh_sha = sha256_file(Path(tmp) / "fresh" / "checkpoint" / "model.safetensors")
        rows = []
        for fraction in args.fractions:
            done = round(fraction * LAYERS)
            out = Path(tmp) / f"kill{done}"
            rc, until_kill_s, _, err = compressor_run([*job, "--out", str(out)], kill_after=f"s0:layer:{done - 1:05d}")
            assert rc == -signal.SIGKILL, err
            journal = json.loads((out / "resume" / JOURNAL).read_text())
            bytes_at_kill = sum(u["bytes"] for u in journal["units"].values())
            rc, resume_s, resume_cpu, err = compressor_run(["--resume", str(out)])
            assert rc == 0, err
            report = json.loads((out / "report.json").read_text())
            rows.append({
                "killed_after_layers": done, "fraction": fraction, "seconds_until_kill": round(until_kill_s, 1),
                "resume_seconds": round(resume_s, 1), "fresh_restart_seconds": round(fresh_s, 1),
                "resume_over_restart": round(resume_s / fresh_s, 3),
                "resume_cpu_seconds": round(resume_cpu, 1), "fresh_restart_cpu_seconds": round(fresh_cpu, 1),
                "resume_over_restart_cpu": round(resume_cpu / fresh_cpu, 3),
                "checkpoint_bytes_at_kill": bytes_at_kill, "units_at_kill": len(journal["units"]),
                "resumed_from": report["resume"]["resumed_from"], "seconds_saved_reported": report["resume"]["seconds_saved"],
                "same_sha256": sha256_file(out / "checkpoint" / "model.safetensors") == fresh_sha,
            })
            print(json.dumps(rows[-1]), flush=True)
    result = {"recipe": args.recipe, "calibration": recipe["calibration"], "eval": "off", "layers": LAYERS, "fresh_sha256": fresh_sha,
              "fresh_seconds": round(fresh_s, 1), "fresh_cpu_seconds": round(fresh_cpu, 1), "machine": machine_info().model_dump(mode="json"), "rows": rows,
              "note": "wall times of whole `compressor run` processes (import, load, GPTQ, export) on a shared machine"}
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
