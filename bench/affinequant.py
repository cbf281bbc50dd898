"""AffineQuant against the same loop with the mask held at the diagonal (OmniQuant-style) and RTN.

Rows go into bench/results/quality.json (merged by configuration key, see bench/quality.py):
`affinequant` (gradual mask), `diagonal` (mask held at the diagonal), `affinequant-kl_top`
(KL-Top objective instead of block MSE), `affinequant-dense` (dense norm->q/k/v and norm->gate/up
matrices as in the paper's weight-only scripts; not servable by stock engines), and the `fp` / `rtn` references, each for W4A16 and
W4A4 (per-channel symmetric int4 weights; per-token asymmetric int4 activations; KV cache in
full precision). Evaluation is the quality bench's protocol (wiki and news, 16,384 tokens in
512-token windows) unless --max-tokens shortens it; then the fp / rtn references are stored as
`fp@N` / `rtn@N` so they never replace full-protocol rows. Block-wise training is CPU-bound, so
calibration is far smaller than the recipes'; every row records what it used.

    .venv/bin/python bench/affinequant.py [--only affinequant diagonal ...] [--activations 16 4]
        [--samples 32] [--seqlen 256] [--epochs 5] [--batch-size 4] [--max-tokens 16384] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from compressor.pipeline import run
from compressor.spec import JobSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import RESULTS, merge_rows

WEIGHTS = {"bits": 4, "symmetric": True, "strategy": "channel", "method": "rtn"}
ACTIVATIONS = {"bits": 4, "symmetric": False}
METHODS = ("fp", "rtn", "diagonal", "affinequant", "affinequant-kl_top", "affinequant-dense")
TRAINED = ("diagonal", "affinequant", "affinequant-kl_top", "affinequant-dense")
FULL_EVAL_TOKENS = 16384


def stages(method: str, a_bits: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    activations = ACTIVATIONS if a_bits < 16 else None
    if method == "fp":
        return []
    if method == "rtn":
        return [{"quantize": {"weights": WEIGHTS, **({"activations": activations} if activations else {})}}]
    w4a4 = activations is not None
    cfg: dict[str, Any] = {
        "weights": WEIGHTS, "activations": activations, "epochs": args.epochs, "batch_size": args.batch_size,
        "mask": "diagonal" if method == "diagonal" else "gradual",
        "stability_factor": 0.1 if w4a4 else 0.01, "alpha": 0.75 if w4a4 else 0.5,
        "transform_lr": args.transform_lr or (1e-3 if w4a4 else 5e-3), "clip_lr": args.clip_lr,
    }
    if method == "affinequant-dense":  # the paper's weight-only form: dense norm matrices, inverse applied at run time
        cfg.update(ln_matrix="dense")
    if method == "affinequant-kl_top":
        cfg.update(loss="kl_top", kl_top_k=1000, kl_top_positions=args.kl_top_positions)
    return [{"affinequant": cfg}]


def measure(method: str, a_bits: int, args: argparse.Namespace) -> dict[str, Any]:
    recipe = {
        "stages": stages(method, a_bits, args),
        "calibration": {"dataset": "wiki", "samples": args.samples, "seqlen": args.seqlen},
        "eval": {"datasets": ["wiki", "news"], "max_tokens": args.max_tokens, "window": 512, "kl": False, "original": False},
        "export": {"format": "none"},
    }
    with tempfile.TemporaryDirectory() as out:
        report = run(JobSpec.model_validate({"model": "smollm2-135m", "recipe": recipe}), Path(out)).report
    ppl = report["perplexity"]["compressed"]
    stage = next((s for s in report["stages"] if s["name"].endswith("affinequant")), None)
    details = stage["details"] if stage else {}
    trained = method in TRAINED
    # baselines re-measured under a shortened evaluation get their own key, never replacing full-protocol rows
    name = method if trained or args.max_tokens == FULL_EVAL_TOKENS else f"{method}@{args.max_tokens}"
    bits = 16 if method == "fp" else 4
    return {
        "method": name, "weights": bits, "activations": 16 if method == "fp" else a_bits, "kv": 16, "group": None,
        "wiki_ppl": round(ppl["wiki"], 4), "news_ppl": round(ppl["news"], 4),
        "seconds": round(report["seconds"], 1), "peak_rss_mb": round(report["peak_rss_mb"]),
        "seconds_per_layer": round(details["seconds_per_layer"], 2) if trained else None,
        "stage_seconds": round(stage["seconds"], 1) if stage else None,
        "calibration_samples": args.samples if trained else 0,
        "calibration_seqlen": args.seqlen if trained else 0,
        "epochs": args.epochs if trained else 0,
        "rows_repaired": details.get("rows_repaired"),
        "min_dominance_margin": details.get("min_dominance_margin"),
        "final_block_loss": [round(r["epoch_loss"][-1], 5) for r in details.get("layers", [])] or None,
        "torch_threads": torch.get_num_threads(),
        "eval_tokens": args.max_tokens,
        "recipe": recipe,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=METHODS, help="methods to (re)run (default: all)")
    parser.add_argument("--activations", nargs="*", type=int, default=[16, 4], choices=[16, 4], help="activation bits: 16 (W4A16), 4 (W4A4)")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--transform-lr", type=float, default=None, help="default: 5e-3 (W4A16), 1e-3 (W4A4), as in the paper")
    parser.add_argument("--clip-lr", type=float, default=1e-2)
    parser.add_argument("--kl-top-positions", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=16384)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core machine)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    for a_bits in args.activations:
        for method in args.only or METHODS:
            row = measure(method, a_bits, args)
            print(json.dumps({k: v for k, v in row.items() if k not in ("recipe", "final_block_loss")}), flush=True)
            merge_rows([row], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
