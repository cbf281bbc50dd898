"""Where the W4A4KV4 perplexity goes: each activation/KV quantizer switched on alone.

Weights stay in full precision. The model gets the transforms of an `ostquant` stage with 0
steps (random-Hadamard R1/R2, the online R3/R4 Hadamards, unit scales), i.e. the Hadamard
baseline's rotations, so the rows say which quantized input the learned transforms would have
to fix. Writes bench/results/w4a4_error_sources.json.

    .venv/bin/python bench/w4a4_error_sources.py [--max-tokens 4096]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from compressor.context import CompressionContext
from compressor.data import eval_windows, load_text
from compressor.eval.perplexity import score_windows
from compressor.eval.resources import CostMeter
from compressor.models.adapter import adapter_for
from compressor.models.store import ModelStore
from compressor.paths import compressor_home
from compressor.pipeline import run_stages, seed_everything
from compressor.progress import Progress
from compressor.quant.compressed_linear import FakeQuantLinear
from compressor.spec import Recipe

RESULTS = Path(__file__).resolve().parent / "results"
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# which quantizers each row keeps on; linear inputs are matched by the module path's suffix
ROWS: dict[str, tuple[tuple[str, ...], bool]] = {
    "none": ((), False),
    "kv4 only": ((), True),
    "a4 q/k/v inputs": (("q_proj", "k_proj", "v_proj"), False),
    "a4 o_proj input": (("o_proj",), False),
    "a4 gate/up inputs": (("gate_proj", "up_proj"), False),
    "a4 down_proj input": (("down_proj",), False),
    "all (a4 + kv4)": (LINEARS, True),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-tokens", type=int, default=4096)
    args = parser.parse_args()
    home = compressor_home()
    model, tokenizer = ModelStore(home).load("smollm2-135m")
    recipe = Recipe.model_validate({
        "stages": [{"ostquant": {"steps": 0, "qsur_samples": 0}},
                   {"quantize": {"weights": None, "activations": {"bits": 4, "symmetric": False}, "kv_cache": {"bits": 4, "symmetric": False}}}],
        "calibration": {"dataset": "wiki", "samples": 4, "seqlen": 512},
    })
    seed_everything(recipe.seed)
    ctx = CompressionContext(model, tokenizer, adapter_for(model), recipe, Progress(), data_dir=home / "data")
    run_stages(ctx, CostMeter())
    activations = recipe.stage_configs()[1].activations
    kv_cache = recipe.stage_configs()[1].kv_cache
    windows = eval_windows(tokenizer, load_text("wiki", "eval"), args.max_tokens, 512)

    rows = {}
    for name, (inputs, kv) in ROWS.items():
        for path, module in model.named_modules():
            if isinstance(module, FakeQuantLinear):
                module.input_quant = activations if path.endswith(inputs) and inputs else None
            if hasattr(module, "kv_quant"):
                module.kv_quant = kv_cache if kv else None
        rows[name] = round(score_windows(model, windows).perplexity, 3)
        print(f"{name:22s} wiki ppl {rows[name]}", flush=True)
    out = {"protocol": f"full-precision weights, Hadamard rotations (ostquant with 0 steps); wiki perplexity on the first {args.max_tokens} test tokens",
           "command": "python bench/w4a4_error_sources.py " + " ".join(sys.argv[1:]), "wiki_ppl": rows}
    (RESULTS / "w4a4_error_sources.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
