"""ProSparse on the bundled 135M model: a sparsity–perplexity table over λ schedules, HFT vs full, PPL-1%.

Writes bench/results/sparsity.json:
  original_wiki_ppl (and original_news_ppl)
  rows: one per λ schedule (full fine-tuning): schedule, sparsity (fraction of exact zeros of the
        FFN intermediate activation on the wiki eval windows, FATReLU 0.01 applied), wiki_ppl,
        news_ppl, steps, seconds (fine-tuning wall time), plus the schedule itself and step times
  hft: the HFT run of `--hft-schedule` against its full row: step_time_ratio (median step time
       HFT / full), news_ppl_rise_hft and news_ppl_rise_full (news ppl minus the original's)
  ppl1_sparsity: CETT-based PPL-1% sparsity of the original SiLU model and of the ProSparse
       model of `--ppl1-schedule`
  command, and the protocol (tokens, steps, threads)

Sized for a CPU at one thread: 128-token chunks of the wiki calibration split, batch 1, tens
of steps per schedule. Perplexity uses the project's evaluation (`score_windows` over
non-overlapping 512-token windows) on the first `--eval-tokens` tokens; the PPL-1% searches
score `--cett-tokens` tokens per probe. Every finished part is written at once and skipped on
a re-run (`--redo` to recompute), so an interrupted run resumes.

    OMP_NUM_THREADS=1 COMPRESSOR_HOME=.cache/test-home .venv/bin/python bench/sparsity.py
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from compressor.data import calibration_chunks, eval_windows, load_text
from compressor.eval.perplexity import score_windows
from compressor.models.store import ModelStore
from compressor.paths import compressor_home
from compressor.sparsity.activation import set_gate_activation
from compressor.sparsity.hft import apply_frozen_half, draw_frozen_half, optimizer_over_trainable, trainable_parameters
from compressor.sparsity.intermediate import tracking
from compressor.sparsity.metrics import ppl_p_sparsity
from compressor.sparsity.training import finetune
from compressor.spec import ProSparseConfig

RESULTS = Path(__file__).resolve().parent / "results" / "sparsity.json"
MODEL = "smollm2-135m"
WINDOW = 512
FATRELU = 0.01

# name -> (λ peaks, steps per stage); stage 1 with λ 0 is the ReLU-only adaptation
SCHEDULES: dict[str, tuple[list[float], list[int]]] = {
    "prosparse-mild": ([0.0, 0.5, 2.0, 2.0], [30, 20, 40, 10]),
    "prosparse-strong": ([0.0, 2.0, 8.0, 8.0], [30, 20, 40, 10]),
    "relu-only": ([0.0], [100]),
}


def load(results: Path) -> dict[str, Any]:
    return json.loads(results.read_text()) if results.exists() else {}


def save(results: Path, data: dict[str, Any]) -> None:
    results.parent.mkdir(parents=True, exist_ok=True)
    tmp = results.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(results)


def evaluate(model: torch.nn.Module, windows: dict[str, torch.Tensor]) -> tuple[dict[str, float], list[float]]:
    """Perplexity per eval text, and per-layer exact-zero fraction of x₁ on the wiki windows."""
    ppl, per_layer = {}, []
    for name, w in windows.items():
        with tracking(model, track_l1=False) as stats:
            ppl[name] = score_windows(model, w).perplexity
        if name == "wiki":
            per_layer = stats.per_layer_sparsity()
    return ppl, per_layer


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def train_one(store: ModelStore, tokens: torch.Tensor, cfg: ProSparseConfig) -> tuple[torch.nn.Module, list[dict[str, Any]], float]:
    model, _ = store.load(MODEL)
    set_gate_activation(model, 0.0)
    started = time.perf_counter()

    def hook(event: Any) -> None:
        d = event.data
        if event.kind == "step" and (d["step"] % 10 == 0 or d["step"] == 1):
            log(f"  step {d['step']}: lm {d['lm_loss']:.3f} λ {d['lambda']:.3g} sparsity {d['sparsity']:.3f} {d['seconds']:.2f}s")

    from compressor.progress import Progress

    history = finetune(model, tokens, cfg, Progress(hook))
    seconds = time.perf_counter() - started
    set_gate_activation(model, FATRELU)
    return model, history, seconds


def interleaved_step_times(store: ModelStore, tokens: torch.Tensor, pairs: int, lam: float) -> dict[str, list[float]]:
    """Seconds per training step, full and HFT alternating on one model (ABBA order).

    Other processes share this machine's cores, so two runs minutes apart see different
    load; alternating the two kinds of step step by step cancels that drift. Each step is the
    training loop's: forward with the L1 hooks, backward, gradient clipping, AdamW over the
    trainable parameters (HFT: the half left after a round-0 draw, with its own optimizer).
    """
    model, _ = store.load(MODEL)
    set_gate_activation(model, 0.0)
    model.train()

    def make(params: Any) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=1e-5)

    draw = draw_frozen_half(len(model.model.layers), 0, 0)
    for p in model.parameters():
        p.requires_grad_(True)
    optimizers = {"full": optimizer_over_trainable(model, make)}
    apply_frozen_half(model, draw)
    optimizers["hft"] = optimizer_over_trainable(model, make)
    times: dict[str, list[float]] = {"full": [], "hft": []}
    with tracking(model) as stats:
        for i in range(pairs + 1):
            for mode in ("full", "hft") if i % 2 == 0 else ("hft", "full"):
                if mode == "full":
                    for p in model.parameters():
                        p.requires_grad_(True)
                else:
                    apply_frozen_half(model, draw)
                batch = tokens[i : i + 1]
                started = time.perf_counter()
                stats.reset()
                loss = model(batch, labels=batch, use_cache=False).loss + lam * stats.l1_penalty()
                optimizers[mode].zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable_parameters(model), 1.0)
                optimizers[mode].step()
                elapsed = time.perf_counter() - started
                stats.l1 = []
                if i > 0:  # the first pair allocates optimizer state
                    times[mode].append(elapsed)
    return times


def step_times(history: list[dict[str, Any]]) -> list[float]:
    return [r["seconds"] for r in history[2:]]  # the first steps pay allocation and warm-up


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schedules", nargs="*", default=list(SCHEDULES))
    parser.add_argument("--hft-schedule", default="prosparse-mild")
    parser.add_argument("--ppl1-schedule", default="prosparse-strong")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seqlen", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--samples", type=int, default=512, help="calibration chunks available (each used at most once per pass)")
    parser.add_argument("--eval-tokens", type=int, default=8192)
    parser.add_argument("--cett-tokens", type=int, default=4096)
    parser.add_argument("--cett-sample-tokens", type=int, default=256, help="dense-model tokens the per-layer thresholds are fitted on")
    parser.add_argument("--cett-iters", type=int, default=7, help="outer bisection steps over CETT in [0, 1]")
    parser.add_argument("--timing-pairs", type=int, default=12, help="alternating full/HFT step pairs timed for step_time_ratio")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every stage's steps (smoke runs)")
    parser.add_argument("--redo", nargs="*", default=[], help="parts to recompute: original, <schedule>, hft, ppl1")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    data = load(args.out)
    data["command"] = "OMP_NUM_THREADS=1 COMPRESSOR_HOME=" + str(compressor_home()) + " " + shlex.join([".venv/bin/python", "bench/sparsity.py", *sys.argv[1:]])
    data["protocol"] = {
        "model": MODEL, "threads": 1, "lr": args.lr, "seqlen": args.seqlen, "batch_size": args.batch_size,
        "calibration": f"wiki calibration split, {args.samples} chunks of {args.seqlen} tokens",
        "eval": f"score_windows on the first {args.eval_tokens} tokens of each eval text, {WINDOW}-token windows",
        "sparsity": f"exact zeros of x1 = FATReLU_{FATRELU}(gate)*up over the wiki eval windows",
        "ppl1": f"PPL-1% on wiki eval, {args.cett_tokens} tokens per probe, thresholds fitted on {args.cett_sample_tokens} dense tokens, {args.cett_iters} bisection steps over CETT",
        "step_time": "hft.step_time_ratio: median HFT step / median full step, timed alternating (ABBA) on one model "
                     "so the shared machine's load drift cancels; the runs' own medians (steps 3..) are kept as *_run_*",
    }
    data.setdefault("rows", [])
    redo = set(args.redo)
    store = ModelStore(compressor_home())
    model, tokenizer = store.load(MODEL)
    home_data = compressor_home() / "data"
    windows = {name: eval_windows(tokenizer, load_text(name, "eval", home_data), args.eval_tokens, WINDOW) for name in ("wiki", "news")}
    cett_windows = eval_windows(tokenizer, load_text("wiki", "eval", home_data), args.cett_tokens, WINDOW)
    sample_windows = eval_windows(tokenizer, load_text("wiki", "eval", home_data), args.cett_sample_tokens, min(WINDOW, args.cett_sample_tokens))
    tokens = calibration_chunks(tokenizer, load_text("wiki", "calibration", home_data), args.samples, args.seqlen)

    def scaled(name: str) -> tuple[list[float], list[int]]:
        lambdas, steps = SCHEDULES[name]
        return lambdas, [max(1, round(n * args.scale)) for n in steps]

    def ppl1(m: torch.nn.Module) -> dict[str, Any]:
        r = ppl_p_sparsity(m, cett_windows, sample_windows, p=1.0, iters=args.cett_iters,
                           on_step=lambda probe: log(f"  CETT probe {probe}"))
        return {k: r[k] for k in ("sparsity", "cett", "ppl_ratio", "per_layer", "probes", "eval_tokens", "sample_tokens")}

    if "original_wiki_ppl" not in data or "original" in redo:
        log("original model: perplexity")
        ppl, _ = evaluate(model, windows)
        data["original_wiki_ppl"], data["original_news_ppl"] = ppl["wiki"], ppl["news"]
        save(args.out, data)
    log(f"original wiki {data['original_wiki_ppl']:.3f} news {data['original_news_ppl']:.3f}")
    ppl1_data = data.setdefault("ppl1_sparsity", {})
    del model

    rows = {r["schedule"]: r for r in data["rows"]}
    hft_done: list[bool] = []

    def run_hft() -> None:
        if ("hft" not in data or ("hft" in redo and not hft_done)) and args.hft_schedule in rows:
            hft_done.append(True)
            lambdas, steps = scaled(args.hft_schedule)
            full = rows[args.hft_schedule]
            cfg = ProSparseConfig(lambdas=lambdas, stage_steps=steps, lr=args.lr, batch_size=args.batch_size, warmup_steps=5, finetune="hft")
            log(f"{args.hft_schedule}: HFT fine-tuning")
            m, history, seconds = train_one(store, tokens, cfg)
            ppl, per_layer = evaluate(m, windows)
            hft_step = statistics.median(step_times(history))
            data["hft"] = {
                "schedule": args.hft_schedule,
                "step_time_ratio": hft_step / full["median_step_seconds"],
                "news_ppl_rise_hft": ppl["news"] - data["original_news_ppl"],
                "news_ppl_rise_full": full["news_ppl"] - data["original_news_ppl"],
                "hft_median_step_seconds": hft_step, "full_median_step_seconds": full["median_step_seconds"],
                "hft_seconds": seconds, "full_seconds": full["seconds"],
                "hft_wiki_ppl": ppl["wiki"], "hft_news_ppl": ppl["news"], "hft_sparsity": sum(per_layer) / len(per_layer),
                "full_wiki_ppl": full["wiki_ppl"], "full_news_ppl": full["news_ppl"], "full_sparsity": full["sparsity"],
                "steps": len(history),
            }
            log(f"HFT: {json.dumps({k: v for k, v in data['hft'].items()})}")
            save(args.out, data)

    def run_schedule(name: str) -> None:
        if name in rows and name not in redo and not (name == args.ppl1_schedule and "prosparse" not in ppl1_data):
            return
        lambdas, steps = scaled(name)
        cfg = ProSparseConfig(lambdas=lambdas, stage_steps=steps, lr=args.lr, batch_size=args.batch_size, warmup_steps=5)
        log(f"{name}: full fine-tuning, λ {lambdas} over {steps}")
        m, history, seconds = train_one(store, tokens, cfg)
        ppl, per_layer = evaluate(m, windows)
        row = {
            "schedule": name, "sparsity": sum(per_layer) / len(per_layer), "wiki_ppl": ppl["wiki"], "news_ppl": ppl["news"],
            "steps": len(history), "seconds": seconds, "lambdas": lambdas, "stage_steps": steps, "finetune": "full",
            "wiki_ppl_ratio": ppl["wiki"] / data["original_wiki_ppl"], "median_step_seconds": statistics.median(step_times(history)),
            "train_sparsity_last": history[-1]["sparsity"], "lm_loss_last10": statistics.mean(r["lm_loss"] for r in history[-10:]),
            "per_layer_sparsity": per_layer,
        }
        log(f"{name}: sparsity {row['sparsity']:.3f} wiki {row['wiki_ppl']:.3f} news {row['news_ppl']:.3f} in {seconds:.0f}s")
        rows[name] = row
        data["rows"] = [rows[n] for n in SCHEDULES if n in rows]
        save(args.out, data)
        if name == args.ppl1_schedule:
            log(f"{name}: PPL-1% sparsity")
            detail = ppl1(m)
            ppl1_data.update({"prosparse": detail["sparsity"], "prosparse_schedule": name, "prosparse_detail": detail})
            save(args.out, data)
        del m
        if name == args.hft_schedule:
            run_hft()

    def run_timing() -> None:
        hft = data.get("hft")
        if hft is None or ("step_time_ratio_runs" in hft and "timing" not in redo):
            return
        log(f"timing: {args.timing_pairs} alternating full/HFT step pairs")
        times = interleaved_step_times(store, tokens, args.timing_pairs, SCHEDULES[args.hft_schedule][0][-1])
        full_s, hft_s = statistics.median(times["full"]), statistics.median(times["hft"])
        hft["step_time_ratio_runs"] = hft.get("step_time_ratio_runs", hft["step_time_ratio"])
        hft.update({"step_time_ratio": hft_s / full_s, "timed_full_step_seconds": full_s, "timed_hft_step_seconds": hft_s,
                    "timed_steps": times})
        log(f"timing: full {full_s:.2f}s HFT {hft_s:.2f}s ratio {hft_s / full_s:.3f}")
        save(args.out, data)

    late = [n for n in args.schedules if n == "relu-only"]  # the baseline last: the ProSparse rows matter most
    for name in args.schedules:
        if name not in late:
            run_schedule(name)
    run_hft()
    run_timing()
    if "original" not in ppl1_data or "ppl1" in redo:
        log("original model: PPL-1% sparsity")
        model, _ = store.load(MODEL)
        detail = ppl1(model)
        ppl1_data.update({"original": detail["sparsity"], "original_detail": detail})
        save(args.out, data)
    for name in late:
        run_schedule(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
