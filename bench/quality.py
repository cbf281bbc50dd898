"""Quality of each method on the bundled model, one row per method and configuration.

Writes bench/results/quality.json (a list of rows: method, weights, activations, kv, group,
wiki_ppl, news_ppl, seconds, peak_rss_mb). Full protocol: 16,384 tokens per eval text in
512-token windows, 128 × 512 calibration tokens. Rows are merged by configuration, so
`--only hadamard-gptq` re-runs a subset without losing the others.

    .venv/bin/python bench/quality.py [--only METHOD ...] [--max-tokens N] [--samples N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from compressor.pipeline import run
from compressor.spec import JobSpec

RESULTS = Path(__file__).resolve().parent / "results" / "quality.json"


def weights(bits: int, group: int | None, method: str, clip: bool = False) -> dict[str, Any]:
    w: dict[str, Any] = {"bits": bits, "method": method, "clip_search": clip}
    w.update({"strategy": "group", "group_size": group} if group else {"strategy": "channel"})
    return w


def quantize(w: dict[str, Any], a_bits: int = 16, kv_bits: int = 16) -> dict[str, Any]:
    q: dict[str, Any] = {"weights": w}
    if a_bits < 16:
        q["activations"] = {"bits": a_bits, "symmetric": a_bits == 8}
    if kv_bits < 16:
        q["kv_cache"] = {"bits": kv_bits}
    return {"quantize": q}


HAD = {"hadamard": {"seed": 0}}


def configurations() -> list[dict[str, Any]]:
    """(method, bit widths, group, stages) of every row."""
    rows = [{"method": "fp", "weights": 16, "activations": 16, "kv": 16, "group": None, "stages": []}]
    for group in (64, None):
        for method, stages in (
            ("rtn", [quantize(weights(4, group, "rtn"))]),
            ("gptq", [quantize(weights(4, group, "gptq"))]),
            ("hadamard-rtn", [HAD, quantize(weights(4, group, "rtn"))]),
            ("hadamard-gptq", [HAD, quantize(weights(4, group, "gptq", clip=True))]),
        ):
            rows.append({"method": method, "weights": 4, "activations": 16, "kv": 16, "group": group, "stages": stages})
    rows.append({"method": "rtn", "weights": 8, "activations": 8, "kv": 16, "group": None, "stages": [quantize(weights(8, None, "rtn"), 8)]})
    for method, stages in (
        ("rtn", [quantize(weights(4, None, "rtn"), 4, 4)]),
        ("hadamard-rtn", [HAD, quantize(weights(4, None, "rtn"), 4, 4)]),
        ("hadamard-gptq", [HAD, quantize(weights(4, None, "gptq", clip=True), 4, 4)]),
    ):
        rows.append({"method": method, "weights": 4, "activations": 4, "kv": 4, "group": None, "stages": stages})
    # the rows the foundation issue must show come first, so a partial run is still useful
    first = [("fp", 16, None), ("rtn", 4, 64), ("gptq", 4, 64), ("hadamard-gptq", 4, None, 4)]
    rank = lambda r: next((i for i, f in enumerate(first) if (r["method"], r["weights"], r["group"]) == f[:3] and r["activations"] == (f[3] if len(f) > 3 else r["activations"])), len(first))  # noqa: E731
    return sorted(rows, key=rank)


def row_key(row: dict[str, Any]) -> tuple:
    return (row["method"], row["weights"], row["activations"], row["kv"], row["group"])


def merge_rows(new_rows: list[dict[str, Any]], path: Path = RESULTS) -> None:
    """Merge rows into the results file by configuration key, under a file lock (several benches write it)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = {row_key(r): r for r in (json.loads(path.read_text()) if path.exists() else [])}
        rows.update({row_key(r): r for r in new_rows})
        ordered = sorted(rows.values(), key=lambda r: [str(x) for x in row_key(r)])
        path.write_text(json.dumps(ordered, indent=2) + "\n")


def measure(cfg: dict[str, Any], max_tokens: int, samples: int) -> dict[str, Any]:
    recipe = {
        "stages": cfg["stages"],
        "calibration": {"dataset": "wiki", "samples": samples, "seqlen": 512},
        "eval": {"datasets": ["wiki", "news"], "max_tokens": max_tokens, "window": 512, "kl": False, "original": False},
        "export": {"format": "none"},
    }
    with tempfile.TemporaryDirectory() as out:
        report = run(JobSpec.model_validate({"model": "smollm2-135m", "recipe": recipe}), Path(out)).report
    ppl = report["perplexity"]["compressed"]
    return {
        **{k: cfg[k] for k in ("method", "weights", "activations", "kv", "group")},
        "wiki_ppl": round(ppl["wiki"], 4), "news_ppl": round(ppl["news"], 4),
        "seconds": round(report["seconds"], 1), "peak_rss_mb": round(report["peak_rss_mb"]),
        "calibration_samples": samples if any("quantize" in s and s["quantize"]["weights"]["method"] == "gptq" for s in cfg["stages"]) else 0,
        "eval_tokens": max_tokens,
        "recipe": recipe,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="methods to (re)run, e.g. fp gptq hadamard-gptq")
    parser.add_argument("--max-tokens", type=int, default=16384)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", nargs="*", default=[], metavar="METHOD",
                        help="skip rows of these methods already in the results file (their code did not change)")
    args = parser.parse_args()

    for cfg in configurations():
        if args.only and cfg["method"] not in args.only:
            continue
        done = {row_key(r) for r in (json.loads(args.out.read_text()) if args.out.exists() else [])}  # re-read: another run may have added it
        if cfg["method"] in args.keep and row_key(cfg) in done:
            continue
        row = measure(cfg, args.max_tokens, args.samples)
        print(json.dumps({k: v for k, v in row.items() if k != "recipe"}), flush=True)
        merge_rows([row], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
