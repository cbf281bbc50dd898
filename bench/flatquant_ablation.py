"""Ablation of the layer-wise learned transforms (flatquant) at W4A4KV4 on the bundled model, one row per variant.

Variants, each against the ready-made `w4a4kv4-flatquant` recipe ("all"): the Kronecker
factors only, the Kronecker factors off (scales + clipping), scales only, clipping only; the KL-Top loss instead of the
block MSE; RTN instead of GPTQ afterwards; 16 / 32 / 64 training samples. Same protocol as
`bench/quality.py` (16,384 eval tokens per text in 512-token windows, 128 × 512 calibration
for GPTQ), with each stage's seconds and the job's peak RSS per row. Rows merge by variant
into bench/results/flatquant_ablation.json, so `--only` re-runs a subset.

    .venv/bin/python bench/flatquant_ablation.py [--only all no-kronecker ...] [--max-tokens N] [--all-from bench/results/quality.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import measure, merge_rows, recipe_stages  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "flatquant_ablation.json"


def variants() -> dict[str, list[dict[str, Any]]]:
    """Variant name → recipe stages (changes from the ready-made W4A4KV4 recipe)."""
    base = recipe_stages("w4a4kv4-flatquant")

    def changed(flat: dict[str, Any] | None = None, weights: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        stages = copy.deepcopy(base)
        stages[0]["flatquant"].update(flat or {})
        stages[1]["quantize"]["weights"].update(weights or {})
        return stages

    return {
        "all": changed(),
        "kronecker-only": changed({"scales": False, "weight_clipping": False, "activation_clipping": False}),
        "no-kronecker": changed({"kronecker": False}),
        "scales-only": changed({"kronecker": False, "weight_clipping": False, "activation_clipping": False}),
        "clipping-only": changed({"kronecker": False, "scales": False}),
        "kl-top": changed({"loss": "kl_top"}),
        "rtn-after": changed(weights={"method": "rtn"}),
        "samples-16": changed({"samples": 16}),
        "samples-64": changed({"samples": 64}),
    }


def reference_row(path: Path, stages: list[dict[str, Any]], max_tokens: int, samples: int) -> dict[str, Any]:
    """The `all` row from a quality results file: the ready-made recipe measured under the same protocol."""
    for row in json.loads(path.read_text()):
        recipe = row.get("recipe") or {}
        if (recipe.get("stages") == stages and row.get("eval_tokens") == max_tokens
                and (recipe.get("calibration") or {}).get("samples") == samples):
            return {**row, "method": "flatquant-all",
                    "source": f"{path.name} row {row['method']} W4A4KV4 (the same recipe and protocol; not re-run here)"}
    raise SystemExit(f"{path}: no row with the `all` variant's stages, {max_tokens} eval tokens and {samples} calibration samples")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="variants to (re)run")
    parser.add_argument("--max-tokens", type=int, default=16384)
    parser.add_argument("--samples", type=int, default=128, help="calibration samples (GPTQ); flatquant trains on its own `samples`")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--all-from", type=Path, metavar="QUALITY_JSON",
                        help="take the `all` row from this results file (bench/quality.py's flatquant-gptq row) instead of re-running it")
    args = parser.parse_args()
    for name, stages in variants().items():
        if args.only and name not in args.only:
            continue
        if name == "all" and args.all_from is not None:
            merge_rows([reference_row(args.all_from, stages, args.max_tokens, args.samples)], args.out)
            continue
        row = measure({"method": f"flatquant-{name}", "weights": 4, "activations": 4, "kv": 4, "group": None, "stages": stages},
                      args.max_tokens, args.samples)
        print(json.dumps({k: v for k, v in row.items() if k not in ("recipe", "machine")}), flush=True)
        merge_rows([row], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
