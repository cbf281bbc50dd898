"""Greedy decode speed and weight memory: the original model in bf16 and fp32 against the
W4A16 (int4, group 64) artifact loaded with `compressor.load` (CPU native int4 path).

Three artifacts are timed: `w4a16_g64`, the decoder export with the tied embedding/lm_head kept
in bf16; `w4a16_g64_head_int8`, the same artifact after `compressor.export.head_quant` with its
default, quality-neutral int8 per-channel head; and `w4a16_g64_head_int4`, the aggressive
option (lm_head int4, group `--head-group-size`, RTN with MSE clip search). With a quantized
head the embedding is stored as its dequantized values and read from the head by
`compressor.load`. The wiki perplexity each costs (`perplexity_wiki`, `--ppl-tokens` tokens in
512-token windows, the project's `score_windows`) is measured on the artifacts as transformers
loads them and as `compressor.load` runs them. `machine` records the CPU model, its ISA flags,
the ATen CPU capability torch dispatched to and the CPU int4 layout `compressor.load` read
back (None: it kept both int4 copies).

All models are timed in interleaved rounds in one process (round r runs every model before
round r+1), so slow periods of a shared machine hit them alike; the numbers are medians over
rounds. Each round: a prefill of `--prompt-tokens` wiki tokens per sequence (KV cache on, only
the last position's logits), then `--new-tokens` greedy steps of one token per sequence.
Decode tokens/s = batch × (new_tokens − 1) / time of the one-token steps; it is reported on
the wall clock and on the process CPU clock (with one torch thread the latter is what the work
itself cost, less exposed to other processes on the machine).

    python bench/decode.py [--artifact DIR] [--threads 1] [--rounds 3] [--batches 1 8]
                           [--prompt-tokens 64] [--new-tokens 64] [--head-group-size 32]
                           [--ppl-tokens 2048] [--out bench/results/decode.json]

Where a step's time goes (`step_ms_breakdown`): the decoder projections alone (every q/k/v/o/
gate/up/down matmul of one step, in model order, on random inputs) and the lm_head alone are
timed separately; the rest (norms, attention, RoPE, KV cache, Python) is the difference.

Without --artifact the W4A16 RTN job (group 64) runs first (~1 min) into a temporary folder.
`greedy_token_agreement_*`: position-wise equality of the first round's batch-1 tokens; greedy
sequences part for good at the first differing token, so even fp32 vs bf16 agree little here.
Weight memory counts the tensors the loaded model holds, each storage once (tied embeddings
once): `compressor.load` on CPU keeps only the CPU int4 layout of each int4 linear (the
pack-quantized words are dropped after conversion), and with the int4 head no embedding table.
`as_stored` is the size of the checkpoint's weight tensors on disk instead.
`speedup_*` is the ratio of the median tokens/s; `speedup_*_round_ratios` lists the ratio within
each round (both models timed back to back), whose median is less exposed to load swings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compressor.data import eval_windows, load_text  # noqa: E402
from compressor.export.head_quant import HEAD_BITS, quantize_lm_head  # noqa: E402
from compressor.inference import load, weight_bytes  # noqa: E402
from compressor.models.store import ModelStore  # noqa: E402
from compressor.paths import compressor_home  # noqa: E402

MODEL = "smollm2-135m"
W4A16_RECIPE = {
    "stages": [{"quantize": {"weights": {"bits": 4, "strategy": "group", "group_size": 64}}}],
    "eval": {"datasets": ["wiki"], "max_tokens": 1024, "kl": False, "original": False},
}


def make_artifact(work: Path) -> Path:
    from compressor.pipeline import run
    from compressor.spec import JobSpec

    run(JobSpec.model_validate({"model": MODEL, "recipe": W4A16_RECIPE}), work)
    return work / "checkpoint"


def wiki_perplexity(model: torch.nn.Module, windows: torch.Tensor) -> float:
    from compressor.eval.perplexity import score_windows

    return score_windows(model, windows).perplexity


def perplexities(original: Path, artifacts: dict[str, Path], windows: torch.Tensor) -> dict[str, Any]:
    """Wiki perplexity of the original and every artifact in transformers (fp32), and of the artifacts in compressor.load."""
    from transformers import AutoModelForCausalLM

    def hf(folder: Path) -> float:
        return wiki_perplexity(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval(), windows)

    out: dict[str, Any] = {"tokens": int(windows.numel()), "window": int(windows.shape[1]),
                           "original_fp32_transformers": hf(original)}
    for name, folder in artifacts.items():
        out[f"{name}_transformers"] = hf(folder)
        out[f"{name}_compressor_load"] = wiki_perplexity(load(folder, dtype=torch.float32), windows)
    for bits in HEAD_BITS:
        out[f"head_int{bits}_cost_relative"] = out[f"w4a16_g64_head_int{bits}_transformers"] / out["w4a16_g64_transformers"] - 1
    return out


def stored_weight_bytes(artifact: Path) -> int:
    """Bytes of the weight tensors in the checkpoint file (safetensors header excluded)."""
    from safetensors import safe_open

    with safe_open(str(artifact / "model.safetensors"), framework="pt") as f:
        return sum(t.numel() * t.element_size() for t in (f.get_tensor(k) for k in f.keys()))


def cpu_description() -> dict[str, Any]:
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    simd = sorted(f for f in flags if f in {"avx2", "fma", "f16c", "avx_vnni"} or f.startswith(("avx512", "amx")))
    from triton_kernels import cpu_int4

    found = cpu_int4.layout()
    return {"cpu_model": model, "simd_flags": simd, "logical_cpus": os.cpu_count(), "machine": platform.machine(),
            "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_int4_layout": None if found is None else {"block_rows": found.block_n,
                                                           "high_nibble_rows": found.high.nonzero().flatten().tolist()}}


@torch.inference_mode()
def greedy_decode(model: torch.nn.Module, prompts: torch.Tensor, new_tokens: int) -> dict[str, Any]:
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    wall, cpu = time.perf_counter(), time.process_time()
    out = model(prompts, cache=cache, use_cache=True, logits_to_keep=1)
    token = out.logits[:, -1].argmax(-1, keepdim=True)
    prefill_wall, prefill_cpu = time.perf_counter() - wall, time.process_time() - cpu
    tokens = [token]
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(new_tokens - 1):
        out = model(token, cache=cache, use_cache=True)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        tokens.append(token)
    decode_wall, decode_cpu = time.perf_counter() - wall, time.process_time() - cpu
    steps = prompts.shape[0] * (new_tokens - 1)
    return {
        "decode_tokens_per_s_wall": steps / decode_wall,
        "decode_tokens_per_s_cpu": steps / decode_cpu,
        "prefill_s_wall": prefill_wall,
        "prefill_s_cpu": prefill_cpu,
        "tokens": torch.cat(tokens, dim=1),
    }


def projection_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder's projection matmuls in model order, one per fused group (what a decode step calls)."""
    from compressor.inference.fused_projections import ProjectionSlice

    out, seen = [], set()
    for layer in model.model.layers:
        for parent, names in ((layer.self_attn, ("q_proj", "k_proj", "v_proj", "o_proj")),
                              (layer.mlp, ("gate_proj", "up_proj", "down_proj"))):
            for name in names:
                module = getattr(parent, name)
                module = module.fused.linear if isinstance(module, ProjectionSlice) else module
                if id(module) not in seen:
                    seen.add(id(module))
                    out.append(module)
    return out


@torch.inference_mode()
def projections_ms(model: torch.nn.Module, batch: int, dtype: torch.dtype, repeats: int = 5) -> float:
    """Median wall ms of all decoder projections for one decode step of `batch` sequences (random inputs)."""
    modules = projection_modules(model)
    inputs = {m.in_features: torch.randn(batch, m.in_features, dtype=dtype) for m in modules}
    for m in modules:
        m(inputs[m.in_features])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for m in modules:
            m(inputs[m.in_features])
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


@torch.inference_mode()
def lm_head_ms(model: torch.nn.Module, batch: int, repeats: int = 20) -> float:
    """Median wall ms of the lm_head alone for one decode step of `batch` sequences."""
    head = model.get_output_embeddings()
    x = torch.randn(batch, 1, head.in_features, dtype=model.dtype)
    head(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        head(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def dense_weight_bytes(model: torch.nn.Module) -> int:
    seen, total = set(), 0
    for t in list(model.parameters()) + [b for n, b in model.named_buffers() if not n.endswith("inv_freq")]:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in seen:
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
    return total


def _relative(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(__file__).resolve().parents[1]))
    except ValueError:
        return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, help="W4A16 artifact folder (default: run the RTN g64 job first)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--head-group-size", type=int, default=32, help="group size of the int4 lm_head")
    parser.add_argument("--ppl-tokens", type=int, default=2048, help="wiki tokens for the perplexity check (0: skip)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "decode.json")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    store = ModelStore(compressor_home())
    folder = store.resolve(MODEL)
    tmp = tempfile.TemporaryDirectory()
    artifact = args.artifact or make_artifact(Path(tmp.name))
    artifacts = {"w4a16_g64": artifact} | {
        f"w4a16_g64_head_int{bits}": quantize_lm_head(artifact, Path(tmp.name) / f"checkpoint_head_int{bits}",
                                                      args.head_group_size, bits=bits)
        for bits in HEAD_BITS}
    models = {
        "original_bf16": AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval(),
        "original_fp32": AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval(),
        **{name: load(path, dtype=torch.bfloat16) for name, path in artifacts.items()},
    }
    manifests = {name: json.loads((path / "manifest.json").read_text()) for name, path in artifacts.items()}
    artifact_label = str(artifact) if args.artifact else "temporary folder (RTN g64 job run by this script)"
    tokenizer = AutoTokenizer.from_pretrained(artifact)
    text = load_text("wiki", "eval")
    windows = eval_windows(tokenizer, text, args.prompt_tokens * max(args.batches), args.prompt_tokens)

    loadavg_before, loadavg_rounds = os.getloadavg(), []
    runs: dict[str, dict[int, list[dict]]] = {name: {b: [] for b in args.batches} for name in models}
    for name, model in models.items():  # warm-up: fills allocator caches
        greedy_decode(model, windows[:1], 4)
    for _ in range(args.rounds):
        for batch in args.batches:
            for name, model in models.items():
                runs[name][batch].append(greedy_decode(model, windows[:batch], args.new_tokens))
        loadavg_rounds.append(os.getloadavg()[0])
    parts_ms = {name: {f"batch{b}": {"projections": projections_ms(model, b, model.dtype), "lm_head": lm_head_ms(model, b)}
                       for b in args.batches} for name, model in models.items()}
    loadavg_after = os.getloadavg()

    results: dict[str, Any] = {}
    for name, model in models.items():
        entry: dict[str, Any] = {}
        for batch in args.batches:
            rs = runs[name][batch]
            entry[f"batch{batch}"] = {
                key: statistics.median(r[key] for r in rs)
                for key in ("decode_tokens_per_s_wall", "decode_tokens_per_s_cpu", "prefill_s_wall", "prefill_s_cpu")
            } | {"rounds_decode_tokens_per_s_wall": [round(r["decode_tokens_per_s_wall"], 2) for r in rs]}
        for batch in args.batches:  # where a decode step's time goes (wall ms; 'rest' by difference)
            step_ms = 1e3 * batch / entry[f"batch{batch}"]["decode_tokens_per_s_wall"]
            parts = parts_ms[name][f"batch{batch}"]
            entry[f"batch{batch}"]["step_ms_breakdown"] = {
                "step": step_ms, "decoder_projections": parts["projections"], "lm_head": parts["lm_head"],
                "rest (norms, attention, rotary, KV cache, python)": step_ms - parts["projections"] - parts["lm_head"]}
        if name in artifacts:
            mem = weight_bytes(model, include_runtime_layouts=True)
            entry["weight_bytes_resident"] = mem["total"]
            entry["weight_bytes_as_stored"] = stored_weight_bytes(artifacts[name])
            entry["weight_bytes_by_kind"] = mem
            info = model.artifact
            entry["artifact"] = {"path": artifact_label, "layers": dict(info.layers), "fused_groups": info.fused_groups,
                                 "int4_layers_cpu_layout_only": info.cpu_layout_only,
                                 "embedding_read_from_int4_head": info.embedding_from_head,
                                 "lm_head_quantization": manifests[name].get("lm_head_quantization"),
                                 "checkpoint_files_bytes": sum(f["size"] for f in manifests[name]["files"])}
        else:
            entry["weight_bytes_resident"] = entry["weight_bytes_as_stored"] = dense_weight_bytes(model)
        results[name] = entry

    bf16 = results["original_bf16"]
    labels = {"w4a16_g64": "w4a16_bf16_head", "w4a16_g64_head_int8": "w4a16_int8_head",
              "w4a16_g64_head_int4": "w4a16_int4_head", "original_fp32": "fp32"}
    summary: dict[str, Any] = {"quality_neutral_artifact": "w4a16_g64_head_int8", "aggressive_artifact": "w4a16_g64_head_int4"}
    for name in artifacts:
        label, w4 = labels[name], results[name]
        for batch in args.batches:
            for clock in ("wall", "cpu"):
                key = f"decode_tokens_per_s_{clock}"
                suffix = "" if clock == "wall" else "_cpu_clock"
                summary[f"speedup_{label}_vs_bf16_batch{batch}{suffix}"] = w4[f"batch{batch}"][key] / bf16[f"batch{batch}"][key]
                summary[f"speedup_{label}_vs_fp32_batch{batch}{suffix}"] = (
                    w4[f"batch{batch}"][key] / results["original_fp32"][f"batch{batch}"][key])
            ratios = [a["decode_tokens_per_s_wall"] / b["decode_tokens_per_s_wall"]
                      for a, b in zip(runs[name][batch], runs["original_bf16"][batch])]
            summary[f"speedup_{label}_vs_bf16_batch{batch}_round_ratios"] = [round(r, 3) for r in ratios]
            summary[f"speedup_{label}_vs_bf16_batch{batch}_median_round_ratio"] = statistics.median(ratios)
        summary[f"weight_memory_ratio_{label}_vs_bf16"] = w4["weight_bytes_resident"] / bf16["weight_bytes_resident"]
        summary[f"weight_memory_ratio_{label}_vs_bf16_as_stored"] = w4["weight_bytes_as_stored"] / bf16["weight_bytes_resident"]
    for name in artifacts:
        by_kind = results[name]["weight_bytes_by_kind"]
        summary[f"weight_bytes_share_{labels[name]}"] = {k: v / by_kind["total"] for k, v in by_kind.items() if k != "total"}
    first = {name: runs[name][args.batches[0]][0]["tokens"] for name in models}
    for name, label in labels.items():
        summary[f"greedy_token_agreement_{label}_vs_bf16"] = (first[name] == first["original_bf16"]).float().mean().item()
    if args.ppl_tokens:
        models.clear()  # free the timed models before loading fp32 ones
        summary["perplexity_wiki"] = perplexities(folder, artifacts, eval_windows(tokenizer, text, args.ppl_tokens, 512))
    tmp.cleanup()

    report = {
        **summary,
        "targets": {"every artifact, batch 1": "speedup vs bf16 >= 1.0 on every CPU",
                    "speedup_w4a16_bf16_head_vs_bf16_batch1": ">= 1.2 on an AVX2-only CPU"},
        "models": results,
        "settings": {"model": MODEL, "threads": args.threads, "rounds": args.rounds, "batches": args.batches,
                     "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens, "kv_cache": True,
                     "decoding": "greedy", "statistic": "median over rounds",
                     "head_group_size": args.head_group_size, "ppl_tokens": args.ppl_tokens},
        "machine": {**cpu_description(), "torch_threads": torch.get_num_threads(),
                    "loadavg_before": loadavg_before, "loadavg_after": loadavg_after,
                    "loadavg_1min_after_each_round": loadavg_rounds},
        "versions": {"torch": torch.__version__, "python": platform.python_version(),
                     "transformers": __import__("transformers").__version__},
        "command": " ".join(["python", _relative(sys.argv[0]), *map(shlex.quote, sys.argv[1:])]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k not in ("models",)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
