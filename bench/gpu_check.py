"""The GPU check: one prepared script for one H200 session, under 10 minutes (budgeted at 8).

    COMPRESSOR_DEVICE is set to cuda by the script itself; nothing else is passed to the jobs.
    python bench/gpu_check.py [--home DIR] [--out bench/results/gpu_check.json] [--quick]
                              [--parts machine,jobs,kernel_correctness,kernel_timings] [--budget-s 480]

Parts, each guarded (an exception is recorded in the JSON under the part and the next part runs)
and each followed by a write of the JSON, so a run cut short still leaves what it measured:

1. `machine`: GPU name, driver, CUDA, torch and triton versions, `compressor.machine.machine_info("cuda")`.
2. `jobs`: the bundled SmolLM2-135M (imported into `--home`, a temporary folder by default)
   compressed end to end by `compressor.pipeline.run` on cuda: RTN W4A16, GPTQ W4A16, Hadamard
   W4A4KV4 (`w4a4kv4-hadamard-gptq`) and OSTQuant W4A16 for 20 steps, evaluated on wiki only
   (16,384 tokens, the protocol of `bench/results/quality.json`; 2,048 with --quick), each with
   the report's speed section (checkpoint reloaded with `compressor.load`: the Triton kernels,
   perplexity against the fake-quant model, prefill/decode tokens/s against the bf16 original).
   Each row sits beside the CPU row of `quality.json` with the same recipe (`cpu_match` says
   whether the stages are identical or what differs, e.g. OSTQuant's steps).
3. `kernel_correctness`: every Triton kernel against its plain-PyTorch reference
   (`bench/kernels_gpu.py`'s quick matrix: W4A16 all group sizes / sym / asym / split-K, W8A8,
   activation-sparse GEMV).
4. `kernel_timings`: `triton.testing.do_bench` medians at decode (M = 1, 8) and prefill
   (M = 512, 2048) shapes with Llama-3-8B's K x N (4096x4096, 4096x14336, 14336x4096): fp16
   `torch.matmul` against W4A16 (fp16, g128, sym and asym), W8A8 (per-token quantisation
   included) and, at M = 1, the activation-sparse GEMV at 50% and 10% density.

A part that would start after `--budget-s` seconds is skipped and says so. Without a CUDA device
(or without triton) the script prints why and exits with status 2 before doing anything.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_OUT = REPO / "bench" / "results" / "gpu_check.json"
QUALITY_JSON = REPO / "bench" / "results" / "quality.json"
PARTS = ("machine", "jobs", "kernel_correctness", "kernel_timings")
MODEL = "smollm2-135m"
# (row name, ready-made recipe, stage overrides {stage index: {field: value}})
JOBS: list[tuple[str, str, dict[int, dict[str, Any]]]] = [
    ("rtn-w4a16-g64", "w4a16-rtn", {}),
    ("gptq-w4a16-g64", "w4a16-gptq", {}),
    ("hadamard-gptq-w4a4kv4", "w4a4kv4-hadamard-gptq", {}),
    ("ostquant-w4a16-20-steps", "w4a16-ostquant", {0: {"steps": 20}}),
]
TIMING_SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096)]  # (K in, N out): Llama-3-8B's projections
TIMING_M = {"decode": (1, 8), "prefill": (512, 2048)}


class NoDevice(Exception):
    """Nothing to check here: no CUDA device, or no triton."""


def require_cuda() -> None:
    import torch

    if os.environ.get("TRITON_INTERPRET") == "1":
        raise NoDevice("TRITON_INTERPRET=1 is set: this script measures compiled kernels; unset it")
    if not torch.cuda.is_available():
        raise NoDevice(f"no CUDA device visible (torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
                       "run it on the GPU machine with a CUDA build of torch")
    try:
        import triton  # noqa: F401
    except ImportError as e:
        raise NoDevice("triton is not installed (pip install triton matching this torch)") from e


def run_parts(parts: dict[str, Callable[[], Any]], result: dict[str, Any], write: Callable[[], None],
              budget_s: float, clock: Callable[[], float] = time.monotonic) -> list[str]:
    """Run each part in order, storing its value (or its error) in `result[name]` and writing after each.

    A part that raises is recorded as {"error", "trace"} and the next part runs; a part that would
    start after `budget_s` seconds is recorded as skipped. Returns the names of the parts that failed.
    """
    start, failed = clock(), []
    for name, part in parts.items():
        elapsed = clock() - start
        if elapsed > budget_s:
            result[name] = {"skipped": f"time budget: {elapsed:.0f} s spent of {budget_s:.0f} s before this part"}
            write()
            continue
        t0 = clock()
        try:
            result[name] = part()
        except Exception as exc:  # one broken part must not lose the others
            result[name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc(limit=6)}
            failed.append(name)
        result.setdefault("seconds", {})[name] = round(clock() - t0, 1)
        write()
        print(f"[gpu_check] {name}: {'FAILED' if name in failed else 'done'} in {result['seconds'][name]} s", flush=True)
    return failed


# ------------------------------------------------------------------ 1. machine


def machine_part() -> dict[str, Any]:
    import torch
    import triton

    from compressor.machine import machine_info

    props = torch.cuda.get_device_properties(0)
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=20).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        driver = None
    return {"gpu": torch.cuda.get_device_name(0), "capability": f"sm_{props.major}{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1), "driver": driver, "cuda": torch.version.cuda,
            "torch": torch.__version__, "triton": triton.__version__,
            "machine_info": machine_info("cuda").model_dump(mode="json")}


# ------------------------------------------------------------------ 2. the bundled model's jobs


def _stage_dicts(stages: list[Any]) -> list[dict[str, Any]]:
    """Stages in canonical form (every default filled in), so recipes written differently compare equal."""
    from compressor.spec import Recipe

    recipe = Recipe.model_validate({"stages": stages})
    return [{type(c).__name__: c.model_dump(mode="json")} for c in recipe.stage_configs()]


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{path}.{k}" if path else k)]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: gpu {a!r}, cpu {b!r}"]


def cpu_row(stages: list[Any], quality: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[str]]:
    """The quality.json row run with the same stages (exact), else the one differing in fewest stage fields."""
    ours = _stage_dicts(stages)
    best, best_diff = None, None
    for row in quality:
        try:
            theirs = _stage_dicts((row.get("recipe") or {}).get("stages", []))
        except ValueError:
            continue
        if [list(s) for s in theirs] != [list(s) for s in ours]:  # different methods
            continue
        diff = _diff(ours, theirs)
        if best_diff is None or len(diff) < len(best_diff):
            best, best_diff = row, diff
    return best, best_diff or []


def job_recipe(name: str, overrides: dict[int, dict[str, Any]], max_tokens: int) -> dict[str, Any]:
    from compressor.spec import load_recipe

    recipe = load_recipe(name).model_dump(mode="json", exclude_none=True)
    for index, fields in overrides.items():
        (stage,) = recipe["stages"][index].values()
        stage.update(fields)
    recipe["eval"] = {"datasets": ["wiki"], "max_tokens": max_tokens, "window": 512, "kl": False, "original": False,
                      "speed": {"windows": 4, "prompt_tokens": 128, "decode_tokens": 32, "batch_sizes": [1, 8], "rounds": 3}}
    return recipe


def jobs_part(home: Path, work: Path, quick: bool, jobs: list[tuple[str, str, dict]] = JOBS) -> list[dict[str, Any]]:
    from compressor.models.store import ModelStore
    from compressor.pipeline import run
    from compressor.spec import JobSpec

    os.environ["COMPRESSOR_DEVICE"] = "cuda"  # the device policy (compressor.execution.device) reads it
    t0 = time.monotonic()
    ModelStore(home).import_bundled(MODEL)
    import_s = time.monotonic() - t0
    quality = json.loads(QUALITY_JSON.read_text()) if QUALITY_JSON.is_file() else []
    rows = []
    for row_name, recipe_name, overrides in jobs:
        recipe = job_recipe(recipe_name, overrides, 2048 if quick else 16384)
        row: dict[str, Any] = {"job": row_name, "recipe": recipe_name, "stage_overrides": overrides,
                               "eval_tokens": recipe["eval"]["max_tokens"], "import_seconds": round(import_s, 1)}
        cpu, differs = cpu_row(recipe["stages"], quality)
        if cpu is not None:
            row["cpu"] = {"wiki_ppl": cpu.get("wiki_ppl"), "eval_tokens": cpu.get("eval_tokens"), "seconds": cpu.get("seconds"),
                          "method": cpu.get("method"), "group": cpu.get("group")}
            row["cpu_match"] = "exact" if not differs else differs
        t0 = time.monotonic()
        try:
            result = run(JobSpec.model_validate({"model": MODEL, "recipe": recipe}), work / row_name, home=home)
            report = result.report
            row.update(wiki_ppl=report["perplexity"]["compressed"].get("wiki"), seconds=round(time.monotonic() - t0, 1),
                       stages={s["name"]: round(s["seconds"], 2) for s in report["stages"]},
                       execution=report.get("execution"), speed=report.get("speed"), size=report.get("size"))
            if cpu is not None and row["wiki_ppl"] and cpu.get("wiki_ppl"):
                row["gpu_over_cpu_ppl"] = round(row["wiki_ppl"] / cpu["wiki_ppl"], 4)
        except Exception as exc:  # the next job still runs
            row.update(error=f"{type(exc).__name__}: {exc}", trace=traceback.format_exc(limit=6),
                       seconds=round(time.monotonic() - t0, 1))
        rows.append(row)
        print(f"[gpu_check] job {row_name}: wiki {row.get('wiki_ppl')} (cpu {row.get('cpu', {}).get('wiki_ppl')}) "
              f"in {row['seconds']} s{' ERROR ' + row['error'] if 'error' in row else ''}", flush=True)
    return rows


# ------------------------------------------------------------------ 3./4. the Triton kernels


def kernel_correctness_part() -> dict[str, Any]:
    from bench.kernels_gpu import correctness

    rows = correctness(quick=True)
    return {"checks": rows, "failed": [r["check"] for r in rows if not r["ok"]], "passed": sum(r["ok"] for r in rows)}


def _bench_ms(fn: Callable[[], Any]) -> float:
    import torch
    import triton.testing

    fn()  # compile and autotune before timing
    torch.cuda.synchronize()
    return float(triton.testing.do_bench(fn, warmup=10, rep=40))


def kernel_timings_part(quick: bool) -> list[dict[str, Any]]:
    import torch

    rows = []
    for k, n in TIMING_SHAPES[:1] if quick else TIMING_SHAPES:
        rows += time_shape(k, n)
        torch.cuda.empty_cache()  # the shape's weights are gone with time_shape's frame
    return rows


def time_shape(k: int, n: int) -> list[dict[str, Any]]:
    """Every op at every M of `TIMING_M` for one K -> N projection; speedups against fp16 torch.matmul at the same M."""
    import torch

    from triton_kernels.packing import pack_int4
    from triton_kernels.sparse_gemv import sparse_gemv
    from triton_kernels.w4a16 import w4a16_matmul
    from triton_kernels.w8a8 import quantize_per_channel_int8, w8a8_linear

    torch.manual_seed(k + n)
    w16 = (torch.randn(n, k, device="cuda") * 0.02).half()
    qweight = pack_int4(torch.randint(-8, 8, (n, k), dtype=torch.int8, device="cuda"))
    scales = (torch.rand(n, k // 128, device="cuda") * 0.02 + 0.001).half()
    zeros = torch.randint(-8, 8, (n, k // 128), dtype=torch.int8, device="cuda")
    w_q, w_scale = quantize_per_channel_int8(w16.float())
    w_col = w16.t().contiguous().t()  # column-major: the sparse GEMV reads whole weight columns
    rows = []
    for phase, ms_list in TIMING_M.items():
        for m in ms_list:
            x = torch.randn(m, k, device="cuda").half()
            ops: dict[str, Callable[[], Any]] = {
                "fp16 torch.matmul": lambda x=x: torch.matmul(x, w16.t()),
                "w4a16 fp16 g128 sym": lambda x=x: w4a16_matmul(x, qweight, scales, None, 128),
                "w4a16 fp16 g128 asym": lambda x=x: w4a16_matmul(x, qweight, scales, zeros, 128),
                "w8a8 (per-token quantisation included)": lambda x=x: w8a8_linear(x, w_q, w_scale),
            }
            if m == 1:
                for density in (0.5, 0.1):
                    a = torch.relu(torch.randn(k, device="cuda")).half()
                    a[torch.rand(k, device="cuda") > density] = 0
                    ops[f"sparse_gemv fp16 density={density}"] = lambda a=a: sparse_gemv(a, w_col)
            base = None
            for name, fn in ops.items():
                row: dict[str, Any] = {"phase": phase, "M": m, "K": k, "N": n, "op": name}
                try:
                    ms = _bench_ms(fn)
                    row.update(median_us=round(ms * 1e3, 2), tflops=round(2 * m * n * k / ms / 1e9, 2))
                    if name == "fp16 torch.matmul":
                        base = ms
                    row["speedup_vs_fp16_matmul"] = round(base / ms, 3) if base else None
                except Exception as exc:  # the next op still runs
                    row["error"] = f"{type(exc).__name__}: {exc}"
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


# ------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, help="COMPRESSOR_HOME for the jobs (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON goes")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2,048 eval tokens, one timing shape")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--budget-s", type=float, default=480.0, help="no part starts after this many seconds")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        parser.error(f"--parts: unknown {', '.join(unknown) or '(none given)'}; allowed: {', '.join(PARTS)}")
    args.parts = parts
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        require_cuda()
    except NoDevice as e:
        print(f"gpu_check.py: {e}. Nothing was run and {args.out} was not written.", file=sys.stderr)
        return 2
    home = args.home or Path(tempfile.mkdtemp(prefix="gpu-check-home-"))
    work = Path(tempfile.mkdtemp(prefix="gpu-check-jobs-"))
    result: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "quick": args.quick,
                              "command": " ".join(["python", "bench/gpu_check.py", *(argv or sys.argv[1:])])}

    def write() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")

    available: dict[str, Callable[[], Any]] = {
        "machine": machine_part,
        "jobs": lambda: jobs_part(home, work, args.quick),
        "kernel_correctness": kernel_correctness_part,
        "kernel_timings": lambda: kernel_timings_part(args.quick),
    }
    failed = run_parts({name: available[name] for name in args.parts}, result, write, args.budget_s)
    checks = result.get("kernel_correctness") or {}
    failed += [f"kernel check {c}" for c in checks.get("failed", [])] if isinstance(checks, dict) else []
    failed += [f"job {r['job']}" for r in result.get("jobs") or [] if isinstance(r, dict) and "error" in r]
    result["failed"] = failed
    write()
    print(f"[gpu_check] wrote {args.out}; {'failed: ' + ', '.join(failed) if failed else 'all parts ran'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
