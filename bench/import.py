"""Import time and peak memory of a multi-GB sharded safetensors folder into the model store.

A random-weight model with the real Qwen2.5-1.5B shapes (28 layers, hidden 1536, MLP 8960,
12 query / 2 KV heads of 128, q/k/v biases, vocab 151,936, tied embeddings: 1.54 B parameters)
is written in bf16 as shards of at most `--shard-mb` MB with an index, one shard's tensors in
memory at a time (about 3.1 GB in all), plus a small tokenizer. It is then imported with
`compressor models import FOLDER` in a fresh process, whose wall time and peak RSS
(VmHWM of that process, the interpreter and its imports included; the RSS before the import
started is reported beside it) are reported against
the folder's size. The imported shards are checked byte for byte (the sha256s in store.json
against the source files), and both folders are deleted afterwards.

    OMP_NUM_THREADS=1 python bench/import.py [--work DIR] [--shard-mb 500] [--link] [--out bench/results/import.json]

`--link` hard-links instead of copying (the store's files then share inodes with the source).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from random_shards import write_shards  # noqa: E402

QWEN25_15B = dict(
    architectures=["Qwen2ForCausalLM"], model_type="qwen2", vocab_size=151936, hidden_size=1536,
    intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
    max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
    hidden_act="silu", torch_dtype="bfloat16", use_sliding_window=False, sliding_window=32768, max_window_layers=21,
    bos_token_id=151643, eos_token_id=151643, attention_dropout=0.0, initializer_range=0.02, use_cache=True,
)


def tensor_shapes(cfg: dict) -> list[tuple[str, tuple[int, ...]]]:
    """Every tensor of the checkpoint in file order, as Qwen2ForCausalLM names them (tied head: none)."""
    h, inter, kv = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_key_value_heads"] * (
        cfg["hidden_size"] // cfg["num_attention_heads"])
    shapes = [("model.embed_tokens.weight", (cfg["vocab_size"], h))]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes += [(p + "input_layernorm.weight", (h,)), (p + "self_attn.q_proj.weight", (h, h)),
                   (p + "self_attn.q_proj.bias", (h,)), (p + "self_attn.k_proj.weight", (kv, h)),
                   (p + "self_attn.k_proj.bias", (kv,)), (p + "self_attn.v_proj.weight", (kv, h)),
                   (p + "self_attn.v_proj.bias", (kv,)), (p + "self_attn.o_proj.weight", (h, h)),
                   (p + "post_attention_layernorm.weight", (h,)), (p + "mlp.gate_proj.weight", (inter, h)),
                   (p + "mlp.up_proj.weight", (inter, h)), (p + "mlp.down_proj.weight", (h, inter))]
    return shapes + [("model.norm.weight", (h,))]


def random_bf16(shape: tuple[int, ...], generator) -> "torch.Tensor":  # noqa: F821
    """Filled 4 M values at a time, so a 233 M-value embedding needs no fp32 copy of itself."""
    import torch

    t = torch.empty(shape, dtype=torch.bfloat16)
    flat = t.view(-1)
    step = 1 << 22
    for start in range(0, flat.numel(), step):
        n = min(step, flat.numel() - start)
        flat[start:start + n] = torch.randn(n, generator=generator).mul_(0.02)
    if len(shape) == 1:
        t.fill_(1.0)  # norms and biases as a trained model roughly has them
    return t


def write_folder(folder: Path, shard_bytes: int) -> dict:
    """The random checkpoint as shards of at most `shard_bytes`, written one shard at a time."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(QWEN25_15B, indent=2))
    vocab = {"<unk>": 0, **{f"w{i}": i for i in range(1, 1000)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                              "unk_token": "<unk>"}))
    generator = torch.Generator().manual_seed(0)
    return write_shards(folder, tensor_shapes(QWEN25_15B), lambda shape: random_bf16(shape, generator), 2, shard_bytes)


# VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec from the parent (the writer)
IMPORT = """
import json, sys, time
def status(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1])
from compressor.cli import main
import compressor.models.sources.importer, rich.console  # what the import needs, loaded before the baseline
before = status("VmRSS:")
t0 = time.perf_counter()
rc = main(["models", "import", sys.argv[1], "--name", "qwen2.5-1.5b-random"] + sys.argv[2:])
seconds = time.perf_counter() - t0
print(json.dumps({"rc": rc, "seconds": seconds, "rss_before_kb": before, "peak_rss_kb": status("VmHWM:")}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=REPO / ".cache" / "bench-import")
    ap.add_argument("--shard-mb", type=int, default=500)
    ap.add_argument("--link", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "import.json")
    args = ap.parse_args()

    shutil.rmtree(args.work, ignore_errors=True)
    folder, home = args.work / "Qwen2.5-1.5B-random", args.work / "home"
    try:
        t0 = time.perf_counter()
        written = write_folder(folder, args.shard_mb << 20)
        write_s = time.perf_counter() - t0
        writer_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        folder_bytes = sum(p.stat().st_size for p in folder.iterdir())
        print(f"wrote {written['shards']} shards, {folder_bytes / 1e9:.2f} GB in {write_s:.1f} s", file=sys.stderr)

        env = {**os.environ, "PYTHONPATH": str(REPO), "COMPRESSOR_HOME": str(home), "HF_HUB_OFFLINE": "1"}
        cmd = [sys.executable, "-c", IMPORT, str(folder), *(["--link"] if args.link else [])]
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        measured = json.loads(run.stdout.strip().splitlines()[-1])
        assert measured["rc"] == 0, run.stderr[-2000:]
        stored = home / "models" / "qwen2.5-1.5b-random"
        info = json.loads((stored / "store.json").read_text())
        from compressor.models.sources.copying import hash_file

        same_bytes = all(hash_file(folder / f["name"]) == f["sha256"] == hash_file(stored / f["name"])
                         for f in info["files"] if f["name"].endswith(".safetensors"))
        peak_mb = measured["peak_rss_kb"] / 1024
        result = {
            "model": "random weights, Qwen2.5-1.5B shapes (Qwen2ForCausalLM), bf16",
            "command": "OMP_NUM_THREADS=1 python bench/import.py" + (" --link" if args.link else ""),
            "mode": "hard link" if args.link else "copy",
            "shards": written["shards"], "shard_mb_max": args.shard_mb, "params": written["params"],
            "params_in_store_json": info["params"], "dtype_in_store_json": info["dtype"],
            "folder_bytes": folder_bytes, "files_imported": len(info["files"]),
            "import_seconds": round(measured["seconds"], 2),
            "import_mb_per_s": round(folder_bytes / 1e6 / measured["seconds"], 1),
            "import_process_peak_rss_mb": round(peak_mb, 1),
            "import_process_rss_before_import_mb": round(measured["rss_before_kb"] / 1024, 1),
            "peak_rss_over_folder_size": round(peak_mb * (1 << 20) / folder_bytes, 4),
            "sha256_of_every_shard_matches_source": same_bytes,
            "writer_peak_rss_mb": round(writer_rss_mb, 1), "write_seconds": round(write_s, 1),
            "machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                        "python": platform.python_version()},
        }
    finally:
        shutil.rmtree(args.work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
