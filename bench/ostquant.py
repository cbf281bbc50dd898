"""OSTQuant on the bundled model: quality rows and the ablation table.

    .venv/bin/python bench/ostquant.py quality  [--steps N]   # rows method=ostquant in bench/results/quality.json
    .venv/bin/python bench/ostquant.py ablation [--steps N]   # bench/results/ostquant_ablation.json

Quality rows use the full protocol of bench/quality.py (16,384 eval tokens, 128 × 512
calibration tokens for GPTQ). The ablation trains W4A4KV4 transforms with each loss
(KL-Top, cross-entropy, full KL) and each transform set (rotations, scales, both), with
calibration time and peak memory per run, on a cheaper protocol recorded in the file.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import merge_rows  # noqa: E402

from compressor.pipeline import run  # noqa: E402
from compressor.spec import JobSpec  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
W4 = {"bits": 4, "symmetric": True, "strategy": "channel", "method": "gptq", "clip_search": True}
A4KV4 = {"activations": {"bits": 4, "symmetric": False}, "kv_cache": {"bits": 4, "symmetric": False}}


def job(ost: dict[str, Any], quantize: dict[str, Any], samples: int, max_tokens: int, datasets: list[str]) -> dict[str, Any]:
    recipe = {
        "stages": [{"ostquant": ost}, {"quantize": quantize}],
        "calibration": {"dataset": "wiki", "samples": samples, "seqlen": 512},
        "eval": {"datasets": datasets, "max_tokens": max_tokens, "window": 512, "kl": False, "original": False},
        "export": {"format": "none"},
    }
    with tempfile.TemporaryDirectory() as out:
        report = run(JobSpec.model_validate({"model": "smollm2-135m", "recipe": recipe}), Path(out)).report
    ost_stage = next(s for s in report["stages"] if s["name"].endswith(":ostquant"))
    return {"recipe": recipe, "report": report, "ost_stage": ost_stage}


def quality(args: argparse.Namespace) -> None:
    for name, quantize, act, kv in (("w4a4kv4", {"weights": W4, **A4KV4}, 4, 4), ("w4a16", {"weights": W4}, 16, 16)):
        if args.only and name not in args.only:
            continue
        r = job({"steps": args.steps, "loss": "kl_top", "lr_schedule": args.lr_schedule}, quantize, 128, 16384, ["wiki", "news"])
        ppl = r["report"]["perplexity"]["compressed"]
        row = {"method": "ostquant", "weights": 4, "activations": act, "kv": kv, "group": None,
               "wiki_ppl": round(ppl["wiki"], 4), "news_ppl": round(ppl["news"], 4),
               "seconds": round(r["report"]["seconds"], 1), "peak_rss_mb": round(r["report"]["peak_rss_mb"]),
               "calibration_seconds": round(r["ost_stage"]["seconds"], 1), "steps": args.steps,
               "ostquant": r["ost_stage"]["details"], "recipe": r["recipe"]}
        print(json.dumps({k: v for k, v in row.items() if k != "recipe"}), flush=True)
        merge_rows([row])


ABLATIONS = {
    "untrained": {"steps": 0},  # random-Hadamard starts, unit scales: the Hadamard + GPTQ reference on this protocol
    "kl_top/both": {"loss": "kl_top"},
    "cross_entropy/both": {"loss": "cross_entropy"},
    "kl/both": {"loss": "kl"},
    "kl_top/rotations": {"loss": "kl_top", "scales": False},
    "kl_top/scales": {"loss": "kl_top", "rotations": []},
}


def ablation(args: argparse.Namespace) -> None:
    path = RESULTS / "ostquant_ablation.json"
    protocol = (f"W4A4KV4 target; {args.steps} steps ({args.lr_schedule} learning-rate schedule), batch 1 × 512 tokens from {args.samples} wiki calibration chunks; "
                         f"then GPTQ per-channel int4 with MSE clip on the same chunks; wiki perplexity over the first "
                         f"{args.max_tokens} test tokens (512-token windows)")
    command = "python bench/ostquant.py ablation " + " ".join(sys.argv[2:])
    for name, ost in ABLATIONS.items():
        if args.only and name not in args.only:
            continue
        rates = {"rotation_lr": args.rotation_lr} if args.rotation_lr else {}
        r = job({"steps": args.steps, "lr_schedule": args.lr_schedule, **rates, **ost}, {"weights": W4, **A4KV4}, args.samples, args.max_tokens, ["wiki"])
        name += f" rotation_lr={args.rotation_lr}" if args.rotation_lr else ""
        row = {
            "wiki_ppl": round(r["report"]["perplexity"]["compressed"]["wiki"], 3),
            "calibration_seconds": round(r["ost_stage"]["seconds"], 1),
            "calibration_peak_rss_mb": round(r["ost_stage"]["peak_rss_mb"]),
            "first_loss": r["ost_stage"]["details"]["first_loss"], "last_loss": r["ost_stage"]["details"]["last_loss"],
            "command": command,
        }
        print(name, json.dumps(row), flush=True)
        # re-read before writing: rows may be measured by several processes side by side
        table = json.loads(path.read_text()) if path.exists() else {"rows": {}}
        table["protocol"] = protocol
        table["rows"][name] = row
        path.write_text(json.dumps(table, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["quality", "ablation"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--rotation-lr", type=float, help="ablation: override the rotations' learning rate (row names get a suffix)")
    parser.add_argument("--lr-schedule", choices=["linear", "constant"], default="linear")
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    (quality if args.what == "quality" else ablation)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
