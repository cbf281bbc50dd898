"""The Hadamard + GPTQ W4A4KV4 baseline at its best: activation and KV clipping ratios chosen on calibration data.

GPTQ calibrates the weights on unquantized activations, so the weights do not depend on the
activation or KV clipping: the job's stages run once (random Hadamard rotations, GPTQ
per-channel int4 with MSE clipping), then each (activation, KV) clipping pair is installed and
scored on held calibration chunks (wiki calibration split, never the eval text). The best pair
on calibration, QuaRot's (0.9, 0.95) and no clipping are then scored on the eval texts with the
quality protocol (16,384 tokens per text in 512-token windows). Writes
bench/results/clip_search.json; the ready-made `w4a4kv4-hadamard-gptq` recipe should carry the
pair it reports as best.

    .venv/bin/python bench/clip_search.py [--samples 128] [--held 16] [--max-tokens 16384]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "clip_search.json"
ACTIVATION_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8)
KV_RATIOS = (1.0, 0.95, 0.9)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=128, help="GPTQ calibration chunks of 512 tokens")
    parser.add_argument("--held", type=int, default=16, help="further calibration chunks the clipping is chosen on")
    parser.add_argument("--max-tokens", type=int, default=16384)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from compressor.context import CompressionContext
    from compressor.data.corpus import load_text
    from compressor.data.tokens import calibration_chunks, eval_windows
    from compressor.eval.perplexity import score_windows
    from compressor.eval.resources import CostMeter
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
            "activations": {"bits": 4, "symmetric": False}, "kv_cache": {"bits": 4, "symmetric": False}}}]})
    ctx = CompressionContext(model, tokenizer, adapter, recipe, Progress(), data_dir=home / "data")
    started = time.perf_counter()
    run_stages(ctx, CostMeter())
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
        evals = []
        texts = {name: eval_windows(tokenizer, load_text(name, "eval"), args.max_tokens, 512) for name in ("wiki", "news")}
        for label, a, kv in (("best on calibration", best["activations"], best["kv"]), ("quarot", 0.9, 0.95), ("none", 1.0, 1.0)):
            install(a, kv)
            row = {"choice": label, "activations": a, "kv": kv,
                   **{f"{n}_ppl": round(score_windows(model, w).perplexity, 4) for n, w in texts.items()}}
            evals.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "job": "hadamard (seed 0) + GPTQ W4 per channel, MSE clip search; int4 per-token asymmetric activations, int4 KV",
        "command": "python bench/clip_search.py " + " ".join(sys.argv[1:]),
        "machine": machine_info().model_dump(mode="json"), "stage_seconds": round(stage_seconds, 1),
        "held_chunks": args.held, "eval_tokens": args.max_tokens, "grid": grid, "best": best, "eval": evals,
    }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
