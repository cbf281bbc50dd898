"""Where the in-memory model and its compressed-tensors reload part: decoder-layer outputs side by side.

Written to find why rotated FP4 W4A4 reloaded 0.4–4% away. The two agreed up to the first
online down_proj Hadamard, whose float order differed (ours x·(H/√n); compressed-tensors' hook
(x·H)/√n): a last-bit difference there flipped a few FP4 activation codes, and the flips grew
layer by layer (relative 3e-6 at layer 1, 0.8% at layer 2, 37% at layer 29). Since
`compressor/quant/online_rotation.py` applies Hadamard-type rotations in compressed-tensors'
order, every layer output is identical. This bench prints each layer's relative output
difference on one 512-token wiki window, for the configs of `bench/reload_sensitivity.py`.

    .venv/bin/python bench/reload_divergence.py [--only hadamard-nvfp4-w4a4 ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reload_sensitivity import configurations  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "reload_divergence.json"


def layer_outputs(model: torch.nn.Module, tokens: torch.Tensor) -> list[torch.Tensor]:
    outs: list[torch.Tensor] = []
    hooks = [layer.register_forward_hook(lambda _m, _a, o: outs.append((o[0] if isinstance(o, tuple) else o).detach()))
             for layer in model.model.layers]
    with torch.no_grad():
        logits = model(tokens, use_cache=False).logits
    for h in hooks:
        h.remove()
    return [*outs, logits]


def measure(name: str, stages: list) -> dict:
    from compressor.context import CompressionContext
    from compressor.data.corpus import load_text
    from compressor.data.tokens import eval_windows
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
    model, tokenizer = ModelStore(home).load("smollm2-135m", dtype=torch.float32)
    adapter = adapter_for(model)
    recipe = Recipe.model_validate({"stages": stages, "calibration": {"dataset": "wiki", "samples": 16, "seqlen": 512}})
    run_stages(CompressionContext(model, tokenizer, adapter, recipe, Progress(), data_dir=home / "data"), CostMeter())
    round_to_stored_precision(model, ResidentLayers(model, adapter))
    window = torch.as_tensor(eval_windows(tokenizer, load_text("wiki", "eval"), 512, 512)[0]).reshape(1, -1)
    with tempfile.TemporaryDirectory() as out:
        export_compressed_tensors(model, tokenizer, Path(out), {"model": "smollm2-135m"})
        theirs = layer_outputs(load_with_compressed_tensors(out), window)
    ours = layer_outputs(model, window)
    rel = [round(float((a - b).abs().mean() / a.abs().mean()), 8) for a, b in zip(ours, theirs)]
    return {"config": name, "layer_output_rel_diff": rel[:-1], "logits_rel_diff": rel[-1],
            "first_differing_layer": next((i for i, r in enumerate(rel[:-1]) if r > 0), None),
            "calibration_samples": 16, "machine": machine_info("cpu").model_dump(mode="json"), "stages": stages}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=["hadamard-nvfp4-w4a4"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = {r["config"]: r for r in (json.loads(args.out.read_text()) if args.out.exists() else [])}
    for name, stages in configurations().items():
        if name in args.only:
            rows[name] = measure(name, stages)
            print(json.dumps({k: v for k, v in rows[name].items() if k not in ("machine", "stages")}), flush=True)
            args.out.write_text(json.dumps(list(rows.values()), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
