"""The Hadamard + GPTQ W4A4KV4 baseline at its best: activation and KV clipping ratios chosen on calibration data.

GPTQ calibrates the weights on unquantized activations, so the weights do not depend on the
activation or KV clipping: the job's stages run once (random Hadamard rotations, GPTQ
per-channel int4 with MSE clipping), then each (activation, KV) clipping pair is installed and
scored on held calibration chunks (wiki calibration split, never the eval text). The best pair
on calibration, QuaRot's (0.9, 0.95) and no clipping are then scored on the eval texts by the
pipeline's own evaluation after its bf16 rounding (the quality protocol: 16,384 tokens per text in
512-token windows), so they are the `hadamard-gptq`, `hadamard-gptq-clip` and
`hadamard-gptq-clip-best` rows of bench/results/quality.json, one GPTQ run for the three. Writes
the grid to bench/results/clip_search.json; the ready-made `w4a4kv4-hadamard-gptq` recipe should
carry the pair it reports as best.

    .venv/bin/python bench/clip_search.py [--samples 128] [--held 16] [--max-tokens 16384]
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import merge_rows, result_row  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "clip_search.json"
QUALITY = Path(__file__).resolve().parent / "results" / "quality.json"
ACTIVATION_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)
KV_RATIOS = (1.0, 0.95, 0.9, 0.85)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=128, help="GPTQ calibration chunks of 512 tokens")
    parser.add_argument("--held", type=int, default=16, help="further calibration chunks the clipping is chosen on")
    parser.add_argument("--max-tokens", type=int, default=16384)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quality", type=Path, default=QUALITY, help="where the three eval rows merge")
    args = parser.parse_args()

    from compressor.context import CompressionContext
    from compressor.data.corpus import load_text
    from compressor.data.tokens import calibration_chunks
    from compressor.eval.evaluation import evaluate
    from compressor.eval.perplexity import score_windows
    from compressor.eval.resources import CostMeter
    from compressor.export.stored_precision import round_to_stored_precision
    from compressor.machine import machine_info
    from compressor.models.adapter import adapter_for
    from compressor.models.store import ModelStore
    from compressor.paths import compressor_home
    from compressor.pipeline import run_stages
    from compressor.progress import Progress
    from compressor.quant.attention import set_kv_quant
    from compressor.quant.compressed_linear import FakeQuantLinear
    from compressor.spec import ActivationQuantConfig, KVCacheQuantConfig, Recipe

    home = compressor_home()
    model, tokenizer = ModelStore(home).load("smollm2-135m", dtype=torch.float32)
    adapter = adapter_for(model)
    recipe = Recipe.model_validate({
        "calibration": {"dataset": "wiki", "samples": args.samples, "seqlen": 512},
        "stages": [{"hadamard": {"seed": 0}}, {"quantize": {
            "weights": {"bits": 4, "symmetric": True, "strategy": "channel", "method": "gptq", "clip_search": True},
            "activations": {"bits": 4, "symmetric": False}, "kv_cache": {"bits": 4, "symmetric": False}}}],
        "eval": {"datasets": ["wiki", "news"], "max_tokens": args.max_tokens, "window": 512, "kl": False, "original": False}})
    ctx = CompressionContext(model, tokenizer, adapter, recipe, Progress(), data_dir=home / "data")
    started = time.perf_counter()
    run_stages(ctx, CostMeter())
    round_to_stored_precision(model, ctx.layers)  # as the pipeline does before it evaluates
    stage_seconds = time.perf_counter() - started
    chunks = calibration_chunks(tokenizer, load_text("wiki", "calibration"), args.samples + args.held, 512)
    held = chunks[args.samples:]  # not among the chunks GPTQ saw

    def install(a: float, kv: float) -> None:
        for module in model.modules():
            if isinstance(module, FakeQuantLinear) and module.input_quant is not None:
                module.input_quant = ActivationQuantConfig(bits=4, symmetric=False, clip_ratio=a)
        for parts in adapter.all_layer_parts(model):
            set_kv_quant(parts.layer.self_attn, KVCacheQuantConfig(bits=4, symmetric=False, clip_ratio=kv))

    grid = []
    with torch.no_grad():
        for a, kv in itertools.product(ACTIVATION_RATIOS, KV_RATIOS):
            install(a, kv)
            grid.append({"activations": a, "kv": kv, "calibration_ppl": round(score_windows(model, held).perplexity, 4)})
            print(json.dumps(grid[-1]), flush=True)
        best = min(grid, key=lambda r: r["calibration_ppl"])
        evals, rows = [], []
        choices = [("hadamard-gptq", 1.0, 1.0), ("hadamard-gptq-clip", 0.9, 0.95)]  # no clipping; QuaRot's
        if (best["activations"], best["kv"]) not in [(a, kv) for _, a, kv in choices]:
            choices.append(("hadamard-gptq-clip-best", best["activations"], best["kv"]))
        for method, a, kv in choices:
            install(a, kv)
            started = time.perf_counter()
            ppl = evaluate(ctx, None, CostMeter()).perplexity["compressed"]
            evals.append({"method": method, "activations": a, "kv": kv, **{f"{n}_ppl": round(v, 4) for n, v in ppl.items()}})
            print(json.dumps(evals[-1]), flush=True)
            stages = recipe.model_dump(mode="json", exclude_none=True)["stages"]
            stages[1]["quantize"]["activations"]["clip_ratio"], stages[1]["quantize"]["kv_cache"]["clip_ratio"] = a, kv
            rows.append(result_row(
                {"method": method, "weights": 4, "activations": 4, "kv": 4, "group": None}, ppl,
                stage_seconds + time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                args.samples, args.max_tokens, machine_info().model_dump(mode="json"),
                {**recipe.model_dump(mode="json", exclude_none=True), "stages": stages},
                clipping={"activations": a, "kv": kv, "chosen_by": "bench/clip_search.py"}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "job": "hadamard (seed 0) + GPTQ W4 per channel, MSE clip search; int4 per-token asymmetric activations, int4 KV",
        "command": "python bench/clip_search.py " + " ".join(sys.argv[1:]),
        "machine": machine_info().model_dump(mode="json"), "stage_seconds": round(stage_seconds, 1),
        "held_chunks": args.held, "eval_tokens": args.max_tokens, "grid": grid, "best": best, "eval": evals,
    }, indent=2) + "\n")
    merge_rows(rows, args.quality)
    return 0


if __name__ == "__main__":
    sys.exit(main())
