"""A 3.2 B-parameter Llama compressed on a machine where its fp32 weights barely fit: sequential execution.

A random-weight model with Llama-3.2-3B's shapes (28 layers, hidden 3072, MLP 8192, 24
query / 8 KV heads of 128, vocab 128,256, tied embeddings: 3.21 B parameters, 12.9 GB in
fp32) is written as fp32 shards of at most 2 GB, one shard in memory at a time, with the
bundled model's tokenizer (its 49,152 ids are all valid rows of the 128,256-row embedding).
It is imported into a fresh store (`compressor models import --link`) and compressed with
`compressor run` in a fresh process each for GPTQ W4A16 g128 (a few calibration chunks)
and RTN W4A16 g128, both with `execution.layers: sequential` and a small wiki evaluation
(random weights: the perplexity says only that evaluation ran layer by layer, not quality).
Each process's peak RSS (VmHWM: interpreter and imports included) is reported against the
fp32 model size, with seconds per decoder layer from the job's own report.

    python bench/big_model.py [--work DIR] [--samples 8] [--methods rtn gptq] [--layers 28] [--out bench/results/big_model.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from random_shards import write_shards  # noqa: E402

LLAMA32_3B = dict(
    architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=128256, hidden_size=3072,
    intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8, head_dim=128,
    max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True,
    hidden_act="silu", torch_dtype="float32", attention_bias=False, mlp_bias=False, attention_dropout=0.0,
    initializer_range=0.02, bos_token_id=128000, eos_token_id=128001, use_cache=True,
    rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                  "original_max_position_embeddings": 8192, "rope_type": "llama3"},
)
NAME = "llama-3.2-3b-random"
SHARD_BYTES = 2 << 30

RUN = """
import json, sys, time
def status(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1])
from compressor.cli import main
t0 = time.perf_counter()
rc = main(["run", "--model", sys.argv[1], "--recipe", sys.argv[2], "--out", sys.argv[3]])
print(json.dumps({"rc": rc, "seconds": time.perf_counter() - t0, "peak_rss_kb": status("VmHWM:")}))
"""


def tensor_shapes(cfg: dict) -> list[tuple[str, tuple[int, ...]]]:
    """Every tensor of the checkpoint in file order, as LlamaForCausalLM names them (tied head: none)."""
    h, inter = cfg["hidden_size"], cfg["intermediate_size"]
    q, kv = cfg["num_attention_heads"] * cfg["head_dim"], cfg["num_key_value_heads"] * cfg["head_dim"]
    shapes = [("model.embed_tokens.weight", (cfg["vocab_size"], h))]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes += [(p + "input_layernorm.weight", (h,)), (p + "self_attn.q_proj.weight", (q, h)),
                   (p + "self_attn.k_proj.weight", (kv, h)), (p + "self_attn.v_proj.weight", (kv, h)),
                   (p + "self_attn.o_proj.weight", (h, q)), (p + "post_attention_layernorm.weight", (h,)),
                   (p + "mlp.gate_proj.weight", (inter, h)), (p + "mlp.up_proj.weight", (inter, h)),
                   (p + "mlp.down_proj.weight", (h, inter))]
    return shapes + [("model.norm.weight", (h,))]


def write_folder(folder: Path, tokenizer_dir: Path) -> dict:
    """The random checkpoint as fp32 shards of at most 2 GB, one shard's tensors in memory at a time."""
    import torch

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(LLAMA32_3B, indent=2))
    for f in tokenizer_dir.iterdir():
        if f.name.startswith("tokenizer") or f.name in ("special_tokens_map.json", "chat_template.jinja"):
            shutil.copy2(f, folder / f.name)
    generator = torch.Generator().manual_seed(0)

    def make(shape: tuple[int, ...]) -> torch.Tensor:
        t = torch.empty(shape)
        return t.normal_(0.0, 0.02, generator=generator) if len(shape) == 2 else t.uniform_(0.8, 1.2, generator=generator)

    return write_shards(folder, tensor_shapes(LLAMA32_3B), make, 4, SHARD_BYTES)


def recipe(method: str, samples: int) -> dict:
    return {
        "name": f"w4a16-{method}-g128-sequential",
        "stages": [{"quantize": {"weights": {"bits": 4, "symmetric": True, "strategy": "group", "group_size": 128, "method": method}}}],
        "calibration": {"dataset": "wiki", "samples": samples, "seqlen": 512},
        "eval": {"datasets": ["wiki"], "max_tokens": 1024, "window": 512},
        "execution": {"layers": "sequential"},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=REPO / ".cache" / "bench-big-model")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--methods", nargs="+", default=["rtn", "gptq"], choices=["gptq", "rtn"])
    ap.add_argument("--layers", type=int, default=LLAMA32_3B["num_hidden_layers"], help="fewer decoder layers for a smoke run")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "big_model.json")
    args = ap.parse_args()
    LLAMA32_3B["num_hidden_layers"] = args.layers

    from compressor.machine import machine_info
    from compressor.models.store import ModelStore

    shutil.rmtree(args.work, ignore_errors=True)
    folder, home = args.work / "Llama-3.2-3B-random", args.work / "home"
    env = {**os.environ, "PYTHONPATH": str(REPO), "COMPRESSOR_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    result: dict = {"model": f"random weights, Llama-3.2-3B shapes (LlamaForCausalLM), {args.layers} layers, fp32 shards, tied embeddings",
                    "command": "python " + " ".join(["bench/big_model.py", *sys.argv[1:]]),
                    "machine": machine_info().model_dump(mode="json"), "runs": {}}
    try:
        bundled = ModelStore(home).import_bundled()
        t0 = time.perf_counter()
        written = write_folder(folder, bundled)
        result.update(written_seconds=round(time.perf_counter() - t0, 1), **written,
                      fp32_bytes=sum(p.stat().st_size for p in folder.glob("*.safetensors")))
        print(f"wrote {written['shards']} shards, {result['fp32_bytes'] / 1e9:.2f} GB", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "compressor.cli", "models", "import", str(folder), "--name", NAME, "--link"],
                       env=env, check=True, capture_output=True, text=True)
        for method in args.methods:
            rfile, out = args.work / f"{method}.json", args.work / f"out-{method}"
            rfile.write_text(json.dumps(recipe(method, args.samples)))
            run = subprocess.run([sys.executable, "-c", RUN, NAME, str(rfile), str(out)], env=env, capture_output=True, text=True)
            lines = run.stdout.strip().splitlines()
            if run.returncode != 0 or not lines:
                result["runs"][method] = {"error": (run.stderr or run.stdout)[-3000:]}
                print(run.stderr[-3000:], file=sys.stderr)
                continue
            measured = json.loads(lines[-1])
            report = json.loads((out / "report.json").read_text())
            stages = {s["name"]: s for s in report["stages"]}
            quantize = stages["0:quantize"]
            ckpt = out / "checkpoint"
            peak_mb = measured["peak_rss_kb"] / 1024
            result["runs"][method] = {
                "recipe": recipe(method, args.samples),
                "wall_seconds": round(measured["seconds"], 1),
                "quantize_seconds": round(quantize["seconds"], 1),
                "seconds_per_layer": round(quantize["seconds"] / LLAMA32_3B["num_hidden_layers"], 2),
                "process_peak_rss_mb": round(peak_mb, 1),
                "peak_rss_over_fp32_size": round(peak_mb * 2**20 / result["fp32_bytes"], 4),
                "stages": {name: {"seconds": round(s["seconds"], 1), "peak_rss_mb": round(s["peak_rss_mb"], 1)} for name, s in stages.items()},
                "execution": report.get("execution"),
                "checkpoint_files": sorted(p.name for p in ckpt.glob("*.safetensors")),
                "checkpoint_bytes": report["size"]["checkpoint_bytes"],
                "bits_per_weight": report["size"]["bits_per_weight"],
                "wiki_perplexity_random_weights": report["perplexity"],
            }
            print(json.dumps(result["runs"][method], indent=2), file=sys.stderr, flush=True)
            shutil.rmtree(out, ignore_errors=True)
            _write(args.out, result)  # each method's numbers as soon as it has them
    finally:
        shutil.rmtree(args.work, ignore_errors=True)
    _write(args.out, result)
    print(json.dumps(result, indent=2))


def _write(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
