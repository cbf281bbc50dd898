"""OSTQuant's training with and without activation checkpointing on the bundled model, side by side.

Each variant runs the same short job (OSTQuant for `--steps` steps on seqlen-512 chunks, then
RTN W4 per channel, no evaluation) in a fresh process, alternating `--repeat` times so that a
noisy machine slows both alike. Reported per variant: the OSTQuant stage's seconds per step
and the process's peak RSS during that stage (VmHWM, interpreter and imports included), the
job's memory estimate, the losses (they must agree: recomputation runs the same ops), and the
ratios checkpointed / plain.

    python bench/ostquant_memory.py [--steps 4] [--repeat 1] [--out bench/results/ostquant_memory.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from alternating import alternate, medians, ratios, write_result  # noqa: E402

RUN = """
import json, sys
from pathlib import Path
from compressor.pipeline import run
from compressor.spec import JobSpec
spec = JobSpec.model_validate({"model": "smollm2-135m", "recipe": json.loads(sys.argv[1])})
run(spec, Path(sys.argv[2]), home=Path(sys.argv[3]), device="cpu")
"""


def recipe(steps: int, checkpointing: bool) -> dict:
    return {"stages": [{"ostquant": {"steps": steps, "qsur_samples": 0, "activation_checkpointing": checkpointing}},
                       {"quantize": {"weights": {"bits": 4, "strategy": "channel", "method": "rtn"}}}],
            "eval": {"datasets": []}, "calibration": {"samples": 8, "seqlen": 512}}


def run_variant(steps: int, checkpointing: bool, home: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", RUN, json.dumps(recipe(steps, checkpointing)), str(out), str(home)],
                          env=env, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    report = json.loads((out / "report.json").read_text())
    stage = next(s for s in report["stages"] if s["name"].endswith("ostquant"))
    return {"stage_seconds": round(stage["seconds"], 1), "seconds_per_step": round(stage["seconds"] / steps, 2),
            "stage_peak_rss_mb": round(stage["peak_rss_mb"], 1), "estimate_peak_mb": report["execution"]["estimate_peak_mb"],
            "losses": report["training"]["ostquant_loss"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "ostquant_memory.json")
    args = ap.parse_args()

    from compressor.machine import machine_info

    variants = {name: (lambda home, out, on=on: run_variant(args.steps, on, home, out))
                for name, on in (("plain", False), ("checkpointed", True))}
    runs = alternate(variants, args.repeat)
    med = medians(runs, ("seconds_per_step", "stage_peak_rss_mb"))
    write_result(args.out, {
        "job": f"smollm2-135m: ostquant {args.steps} steps (batch 1 x 512 tokens, KL-Top) + RTN W4 per channel, no eval",
        "command": "python bench/ostquant_memory.py " + " ".join(sys.argv[1:]),
        "machine": machine_info().model_dump(mode="json"), "runs": runs, "median": med,
        "same_losses": all(a["losses"] == b["losses"] for a, b in zip(runs["plain"], runs["checkpointed"])),
        "ratio_checkpointed_over_plain": ratios(med, "checkpointed", "plain"),
    })


if __name__ == "__main__":
    main()
