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
import time
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
    rows.extend(format_configurations())
    rows.extend(layerwise_configurations())
    # the rows the foundation issue must show come first, so a partial run is still useful
    first = [("fp", 16, None), ("rtn", 4, 64), ("gptq", 4, 64), ("hadamard-gptq", 4, None, 4)]
    rank = lambda r: next((i for i, f in enumerate(first) if (r["method"], r["weights"], r["group"]) == f[:3] and r["activations"] == (f[3] if len(f) > 3 else r["activations"])), len(first))  # noqa: E731
    return sorted(rows, key=rank)


FP8 = {"format": "fp8", "bits": 8, "symmetric": True}
NVFP4 = {"format": "nvfp4", "bits": 4, "symmetric": True, "strategy": "group", "group_size": 16}
MXFP4 = {"format": "mxfp4", "bits": 4, "symmetric": True, "strategy": "group", "group_size": 32}
HAD_NO_QK = {"hadamard": {"seed": 0, "online_qk": "off"}}


def format_configurations() -> list[dict[str, Any]]:
    """Rows of the serving formats (issue 17): each is exported and reloaded by compressed-tensors' own code.

    The cheap RTN rows come first; GPTQ and OSTQuant rows after them.
    """
    rows = []

    def add(method: str, w: Any, a: Any, kv: Any, group: int | None, stages: list, fmt: str) -> None:
        rows.append({"method": method, "weights": w, "activations": a, "kv": kv, "group": group, "stages": stages,
                     "format": fmt, "reload": True})

    fp8_w = {**FP8, "method": "rtn"}
    add("fp8-dynamic-rtn", 8, 8, 16, None, [{"quantize": {"weights": {**fp8_w, "strategy": "channel"},
                                                          "activations": {**FP8, "strategy": "token"}}}], "fp8")
    add("fp8-static-rtn", 8, 8, 16, None, [{"quantize": {"weights": {**fp8_w, "strategy": "tensor"},
                                                         "activations": {**FP8, "strategy": "tensor"}}}], "fp8")
    add("fp8-kv", 16, 16, 8, None, [{"quantize": {"weights": None, "kv_cache": FP8}}], "fp8")
    for prefix, pre in (("", []), ("hadamard-", [HAD_NO_QK])):
        for name, spec in (("nvfp4", NVFP4), ("mxfp4", MXFP4)):
            add(f"{prefix}{name}-rtn", 4, 16, 16, spec["group_size"], [*pre, {"quantize": {"weights": {**spec, "method": "rtn"}}}], name)
            add(f"{prefix}{name}-rtn", 4, 4, 16, spec["group_size"],
                [*pre, {"quantize": {"weights": {**spec, "method": "rtn"}, "activations": spec}}], name)
    w4 = {"bits": 4, "symmetric": True, "strategy": "group", "group_size": 64, "method": "gptq"}
    for prefix, pre in (("", []), ("hadamard-", [HAD_NO_QK])):
        add(f"{prefix}w4a8fp8-gptq", 4, 8, 16, 64, [*pre, {"quantize": {"weights": w4, "activations": {**FP8, "strategy": "token"}}}], "int4+fp8")
    add("hadamard-fused-gptq", 4, 16, 16, 64,
        [{"hadamard": {"seed": 0, "online_down_proj": False, "online_qk": "off"}}, {"quantize": {"weights": w4}}], "int4")
    add("ostquant-nvfp4-rtn", 4, 4, 16, 16,
        [{"ostquant": {"steps": 60, "loss": "kl_top", "k": 1000, "online_qk": "off"}},
         {"quantize": {"weights": {**NVFP4, "method": "rtn"}, "activations": NVFP4}}], "nvfp4")
    return rows


def recipe_stages(name: str) -> list[dict[str, Any]]:
    from compressor.spec import load_recipe

    return load_recipe(name).model_dump(mode="json", exclude_none=True)["stages"]


W4A4KV4_CLIPPED = {"weights": weights(4, None, "gptq", clip=True),
                   "activations": {"bits": 4, "symmetric": False, "clip_ratio": 0.9},
                   "kv_cache": {"bits": 4, "symmetric": False, "clip_ratio": 0.95}}  # QuaRot's clipping


OSTQUANT_E2E = {"steps": 120, "loss": "kl_top", "lr_schedule": "linear"}


def ostquant_clipped(method: str, warm_start: dict[str, Any] | None) -> dict[str, Any]:
    """OSTQuant's 120 end-to-end steps, then GPTQ, at W4A4KV4 with QuaRot's clipping; with or without the layer-wise warm start."""
    ost = OSTQUANT_E2E if warm_start is None else {**OSTQUANT_E2E, "warm_start": warm_start}
    return {"method": method, "weights": 4, "activations": 4, "kv": 4, "group": None,
            "stages": [{"ostquant": ost}, {"quantize": W4A4KV4_CLIPPED}]}


def layerwise_configurations() -> list[dict[str, Any]]:
    """Issue 18: the W4A4KV4 baselines at their best (QuaRot's activation / KV clipping) and the layer-wise learned transforms."""
    rows = [
        {"method": "hadamard-gptq-clip", "weights": 4, "activations": 4, "kv": 4, "group": None,
         "stages": [HAD, {"quantize": W4A4KV4_CLIPPED}]},
        ostquant_clipped("ostquant-clip", None),
        ostquant_clipped("ostquant-warm-clip", {"epochs": 4, "samples": 32, "batch_size": 4}),  # the same steps after a layer-wise warm start
        ostquant_clipped("ostquant-warm-fast-clip",  # the walk at 5x the rates, twice the epochs
                         {"epochs": 8, "samples": 32, "batch_size": 4, "rotation_lr": 0.1, "scale_lr": 0.025}),
    ]
    for recipe, a, kv in (("w4a4kv4-flatquant", 4, 4), ("w4a16-flatquant", 16, 16)):
        rows.append({"method": "flatquant-gptq", "weights": 4, "activations": a, "kv": kv, "group": None, "stages": recipe_stages(recipe)})
    return rows


def reload_check(checkpoint: Path, max_tokens: int) -> dict[str, Any]:
    """Wiki perplexity of the checkpoint as compressed-tensors itself loads it (decompress, transforms, fake quantization)."""
    from compressor.data.corpus import load_text
    from compressor.data.tokens import eval_windows
    from compressor.eval.perplexity import score_windows
    from compressor.inference.compressed_tensors_reload import load_with_compressed_tensors
    from compressor.inference.loader import load_tokenizer

    tokenizer = load_tokenizer(checkpoint)
    windows = eval_windows(tokenizer, load_text("wiki", "eval"), max_tokens, 512)
    model = load_with_compressed_tensors(checkpoint)
    return {"reload_wiki_ppl": round(score_windows(model, windows).perplexity, 4)}


ROW_KEY = ("method", "weights", "activations", "kv", "group")


def row_key(row: dict[str, Any]) -> tuple:
    return tuple(row[k] for k in ROW_KEY)


def result_row(cfg: dict[str, Any], ppl: dict[str, float], seconds: float, peak_rss_mb: float, calibration_samples: int,
               eval_tokens: int, machine: Any, recipe: dict[str, Any], **details: Any) -> dict[str, Any]:
    """One results row in the layout every quality bench writes (`details`: what only that bench knows)."""
    return {
        **{k: cfg[k] for k in ROW_KEY},
        "wiki_ppl": round(ppl["wiki"], 4), "news_ppl": round(ppl["news"], 4),
        "seconds": round(seconds, 1), "peak_rss_mb": round(peak_rss_mb),
        **details,
        "calibration_samples": calibration_samples, "eval_tokens": eval_tokens,
        "machine": machine,  # CPU model, ISA flags, threads: float results differ between machines
        "recipe": recipe,
    }


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


def uses_calibration(stages: list[dict[str, Any]]) -> bool:
    """GPTQ, learned transforms, and static scales (fp8 per tensor, nvfp4 input global scales, fp8 KV) read calibration text."""
    for stage in stages:
        if "ostquant" in stage or "affinequant" in stage or "flatquant" in stage:
            return True
        q = stage.get("quantize")
        if q is None:
            continue
        acts, kv = q.get("activations") or {}, q.get("kv_cache") or {}
        if ((q.get("weights") or {}).get("method") == "gptq" or acts.get("strategy") == "tensor" or acts.get("format") == "nvfp4"
                or kv.get("format") == "fp8"):
            return True
    return False


def _print_layers(event: Any) -> None:
    """Stage starts and finished layers on stderr, so a long row shows its pace while it runs."""
    if event.kind in ("stage_start", "layer"):
        print(f"[{time.strftime('%H:%M:%S')}] {event.stage}: {event.message}", file=sys.stderr, flush=True)


def measure(cfg: dict[str, Any], max_tokens: int, samples: int) -> dict[str, Any]:
    recipe = {
        "stages": cfg["stages"],
        "calibration": {"dataset": "wiki", "samples": samples, "seqlen": 512},
        "eval": {"datasets": ["wiki", "news"], "max_tokens": max_tokens, "window": 512, "kl": False, "original": False},
        "export": {"format": "compressed-tensors" if cfg.get("reload") else "none"},
    }
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as out:
        result = run(JobSpec.model_validate({"model": "smollm2-135m", "recipe": recipe}), Path(out), progress=_print_layers)
        report = result.report
        if cfg.get("reload"):
            checkpoint = result.artifacts[0].parent
            manifest = json.loads((checkpoint / "manifest.json").read_text())
            extra = {"format": cfg["format"], "checkpoint_format": manifest["format"],
                     "checkpoint_bytes": report["size"]["checkpoint_bytes"],
                     "engines": {e: v["serves"] for e, v in manifest["engine_support"].items()},
                     **reload_check(checkpoint, max_tokens)}
            extra["reload_rel_diff"] = round(extra["reload_wiki_ppl"] / report["perplexity"]["compressed"]["wiki"] - 1, 5)
    return result_row(
        cfg, report["perplexity"]["compressed"], report["seconds"], report["peak_rss_mb"],
        samples if uses_calibration(cfg["stages"]) else 0, max_tokens, report.get("machine"), recipe,
        seconds_by_stage={st["name"]: round(st["seconds"], 1) for st in report["stages"]},
        **{f"{st['name'].split(':')[-1]}_details": {k: v for k, v in (st.get("details") or {}).items() if isinstance(v, (int, float, str, bool))}
           for st in report["stages"] if st["name"].endswith(("flatquant", "ostquant"))},  # learned-transform stages: losses, times
        **extra)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="methods to (re)run, e.g. fp gptq hadamard-gptq")
    parser.add_argument("--max-tokens", type=int, default=16384)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--activations", type=int, nargs="*", help="only rows with these activation widths, e.g. 4")
    parser.add_argument("--keep", nargs="*", default=[], metavar="METHOD",
                        help="skip rows of these methods already in the results file (their code did not change)")
    args = parser.parse_args()

    for cfg in configurations():
        if args.only and cfg["method"] not in args.only:
            continue
        if args.activations and cfg["activations"] not in args.activations:
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
