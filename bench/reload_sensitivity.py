"""How far a checkpoint's perplexity moves under float noise: the floor under the compressed-tensors reload check.

The reload check (bench/quality.py) compares the in-memory model's wiki perplexity with the
checkpoint's as compressed-tensors' own code loads it; a different kernel order perturbs every
activation by float32 rounding (~1e-7 relative). Most formats do not feel that, but FP4
activations (8 levels per 16 or 32 values) flip codes at boundaries, and the flips compound over
30 layers. This bench measures the floor directly: the same in-memory model with its embedding
perturbed by relative noise of `--noise` (several seeds), next to its reload. A reload gap
inside the noise spread is the format's sensitivity, not a loader difference.

    .venv/bin/python bench/reload_sensitivity.py [--only hadamard-nvfp4-w4a4 ...] [--max-tokens 4096]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import HAD_NO_QK, MXFP4, NVFP4  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "reload_sensitivity.json"
FP8_TOKEN = {"format": "fp8", "bits": 8, "symmetric": True, "strategy": "token"}


def configurations() -> dict[str, list[dict[str, Any]]]:
    nv, mx = {**NVFP4, "method": "rtn"}, {**MXFP4, "method": "rtn"}
    return {
        "hadamard-nvfp4-w4a4": [HAD_NO_QK, {"quantize": {"weights": nv, "activations": NVFP4}}],
        "hadamard-mxfp4-w4a4": [HAD_NO_QK, {"quantize": {"weights": mx, "activations": MXFP4}}],
        "nvfp4-w4a4": [{"quantize": {"weights": nv, "activations": NVFP4}}],
        "mxfp4-w4a4": [{"quantize": {"weights": mx, "activations": MXFP4}}],
        "fp8-dynamic": [{"quantize": {"weights": {"format": "fp8", "bits": 8, "symmetric": True, "strategy": "channel", "method": "rtn"},
                                      "activations": FP8_TOKEN}}],
    }


def measure(name: str, stages: list[dict[str, Any]], max_tokens: int, noise: float, seeds: int) -> dict[str, Any]:
    from compressor.context import CompressionContext
    from compressor.data.corpus import load_text
    from compressor.data.tokens import eval_windows
    from compressor.eval.perplexity import score_windows
    from compressor.eval.resources import CostMeter
    from compressor.execution.residency import ResidentLayers
    from compressor.export.compressed_tensors_format import export_compressed_tensors
    from compressor.export.stored_precision import round_to_stored_precision
    from compressor.inference.compressed_tensors_reload import load_with_compressed_tensors
    from compressor.machine import machine_info
    from compressor.models.adapter import adapter_for
    from compressor.models.store import ModelStore
    from compressor.paths import compressor_home
    from compressor.pipeline import run_stages, seed_everything
    from compressor.progress import Progress
    from compressor.spec import Recipe

    seed_everything(0)
    home = compressor_home()
    store = ModelStore(home)
    model, tokenizer = store.load("smollm2-135m", dtype=torch.float32)
    adapter = adapter_for(model)
    recipe = Recipe.model_validate({"stages": stages, "calibration": {"dataset": "wiki", "samples": 128, "seqlen": 512}})
    ctx = CompressionContext(model, tokenizer, adapter, recipe, Progress(), data_dir=home / "data")
    run_stages(ctx, CostMeter())
    round_to_stored_precision(model, ResidentLayers(model, adapter))
    windows = eval_windows(tokenizer, load_text("wiki", "eval"), max_tokens, 512)
    with torch.no_grad():
        in_memory = score_windows(model, windows).perplexity
        with tempfile.TemporaryDirectory() as out:
            export_compressed_tensors(model, tokenizer, Path(out), {"model": "smollm2-135m"})
            reload = score_windows(load_with_compressed_tensors(out), windows).perplexity
        embed = model.get_input_embeddings().weight
        original = embed.detach().clone()
        perturbed = []
        for seed in range(seeds):
            g = torch.Generator().manual_seed(seed)
            embed.copy_(original * (1 + noise * torch.randn(original.shape, generator=g)))
            perturbed.append(score_windows(model, windows).perplexity)
        embed.copy_(original)
    rel = [p / in_memory - 1 for p in perturbed]
    return {"config": name, "in_memory_wiki_ppl": round(in_memory, 4), "reload_wiki_ppl": round(reload, 4),
            "reload_rel_diff": round(reload / in_memory - 1, 5), "noise": noise,
            "perturbed_wiki_ppl": [round(p, 4) for p in perturbed],
            "perturbed_rel_diff_max_abs": round(max(abs(r) for r in rel), 5),
            "perturbed_rel_diff_stdev": round(statistics.pstdev(rel), 5),
            "eval_tokens": max_tokens, "machine": machine_info("cpu").model_dump(mode="json"), "stages": stages}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--noise", type=float, default=1e-7, help="relative; 1e-7 is about one float32 rounding")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = {r["config"]: r for r in (json.loads(args.out.read_text()) if args.out.exists() else [])}
    for name, stages in configurations().items():
        if args.only and name not in args.only:
            continue
        row = measure(name, stages, args.max_tokens, args.noise, args.seeds)
        print(json.dumps({k: v for k, v in row.items() if k not in ("machine", "stages")}), flush=True)
        rows[name] = row
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(list(rows.values()), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
