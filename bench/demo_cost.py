"""`make demo`'s job, timed and measured against another checkout of the project, side by side in one run.

The demo's job (`compressor run --model smollm2-135m --recipe w4a16-gptq`) runs in a fresh
process for each tree: this one and `--baseline` (a git worktree of an earlier commit, e.g.
`git worktree add /tmp/baseline <commit>`), alternating `--repeat` times so that a noisy
machine slows both alike. Reported per tree: wall seconds, CPU seconds and the process's peak
RSS (VmHWM, interpreter and imports included), and the ratios this/baseline.

    python bench/demo_cost.py --baseline /tmp/baseline [--repeat 1] [--out bench/results/demo_cost.json]
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
import json, resource, sys, time
def status(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1])
from compressor.cli import main
t0, c0 = time.perf_counter(), time.process_time()
rc = main(["run", "--model", "smollm2-135m", "--recipe", "w4a16-gptq", "--out", sys.argv[1]])
print(json.dumps({"rc": rc, "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
                  "peak_rss_kb": status("VmHWM:")}))
"""


def run_demo(tree: Path, home: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "COMPRESSOR_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", RUN, str(out)], env=env, cwd=tree, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: {done.stderr[-3000:]}")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    report = json.loads((out / "report.json").read_text())
    return {**measured, "perplexity": report["perplexity"], "kl": report["kl"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", type=Path, required=True, help="another checkout of the project (a git worktree)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "demo_cost.json")
    args = ap.parse_args()

    from compressor.machine import machine_info

    trees = {"this": REPO, "baseline": args.baseline.resolve()}
    commits = {k: subprocess.run(["git", "-C", str(t), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
               for k, t in trees.items()}
    runs = alternate({name: (lambda home, out, tree=tree: run_demo(tree, home, out)) for name, tree in trees.items()},
                     args.repeat)
    med = medians(runs, ("seconds", "cpu_seconds", "peak_rss_kb"))
    write_result(args.out, {
        "job": "compressor run --model smollm2-135m --recipe w4a16-gptq (make demo)",
        "command": "python bench/demo_cost.py " + " ".join(sys.argv[1:]),
        "commits": commits, "machine": machine_info().model_dump(mode="json"), "runs": runs,
        "median": {k: {"seconds": round(v["seconds"], 1), "cpu_seconds": round(v["cpu_seconds"], 1),
                       "peak_rss_mb": round(v["peak_rss_kb"] / 1024, 1)} for k, v in med.items()},
        "ratio_this_over_baseline": ratios(med, "this", "baseline"),
    })


if __name__ == "__main__":
    main()
