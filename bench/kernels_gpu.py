"""One prepared GPU session for the Triton kernels: correctness, then M=1 timings.

Written for an H200 (runs on any CUDA GPU). Never run with TRITON_INTERPRET set.

    python bench/kernels_gpu.py [--out bench/results/kernels_gpu.json] [--quick] [--skip-correctness]

Not yet run on a GPU: its duration is unmeasured. Compilation dominates (each kernel variant
compiles once per autotune config), so start with --quick in a short session.

1. Correctness of every kernel against its torch reference on odd shapes, fp16/bf16/fp32,
   every group size, sym/asym, split-K on/off, M in {1, 3, 16, 64} (things the CPU
   interpreter cannot check: bf16, tl.dot shape limits, real atomics, compiled masks).
2. Timings at M=1 against fp16 ``torch.matmul`` for K->N in 4096->4096, 4096->14336,
   14336->4096, 8192->8192: plain launches (``triton.testing.do_bench``) and CUDA graphs
   (``do_bench_cudagraph``; decode at these sizes is launch-bound otherwise), with the
   effective weight bandwidth. W4A16 is swept over split-K and over both qweight memory
   layouts (K-contiguous as stored; N-contiguous, i.e. transposed at load) to see what the
   defaults miss.

Results are written after every section, so a run cut short still leaves data.
Without CUDA it exits with status 2 and says so.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TIMING_SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096), (8192, 8192)]  # (in K, out N)
SPLIT_K_SWEEP = [1, 2, 4, 8, 16]
COLD_BYTES = 256 * 2**20
TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}


def relative_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    return ((y.float() - ref.float()).norm() / ref.float().norm().clamp(min=1e-12)).item()


def check(name: str, fn: Callable[[], tuple[torch.Tensor, torch.Tensor]], tol: float) -> dict:
    """Run fn -> (y, ref); a row with the error and pass/fail, or the exception text."""
    try:
        y, ref = fn()
        if y.is_cuda:
            torch.cuda.synchronize()
        err = relative_error(y, ref)
        finite = bool(torch.isfinite(y).all())
        ok = finite and err <= tol and y.shape == ref.shape and y.dtype == ref.dtype
        return {"check": name, "ok": ok, "rel_err": err, "tol": tol, "finite": finite}
    except Exception as exc:  # record and continue: one broken case must not hide the rest
        return {"check": name, "ok": False, "error": f"{type(exc).__name__}: {exc}",
                "trace": traceback.format_exc(limit=3)}


def correctness(quick: bool, dev: str = "cuda") -> list[dict]:
    from triton_kernels.packing import pack_int4
    from triton_kernels.sparse_gemv import fatrelu, sparse_gemv, sparse_gemv_reference
    from triton_kernels.w4a16 import w4a16_matmul, w4a16_reference
    from triton_kernels.w8a8 import quantize_per_channel_int8, w8a8_linear, w8a8_reference

    rows = []
    n = 1000 + 73  # odd, spans several tiles
    # (dtype, groups, zero points, batches, split_k values); each distinct combination compiles
    # a kernel per autotune config, so the matrix is sized for a short session.
    if quick:
        matrix = [(torch.float16, (128, None), (False, True), (1, 16), (1, None)),
                  (torch.bfloat16, (128,), (True,), (1,), (4,))]
    else:
        matrix = [(torch.float16, (32, 64, 128, None), (False, True), (1, 3, 16, 64), (1, None)),
                  (torch.bfloat16, (32, 128, None), (True,), (1, 16), (1, 4)),
                  (torch.float32, (128, None), (True,), (3,), (1, 4))]
    for dtype, groups_, zero_options, batches, splits in matrix:
        for group in groups_:
            k = 1000 + 3 if group is None else 1024
            for asym in zero_options:
                gen = torch.Generator(device="cpu").manual_seed(k + asym)
                q = torch.randint(-8, 8, (n, k), dtype=torch.int8, generator=gen)
                qweight = pack_int4(q).to(dev)
                groups = 1 if group is None else k // group
                scales = (torch.rand(n, groups, generator=gen) * 0.02 + 0.005).to(dev, dtype)
                zeros = torch.randint(-8, 8, (n, groups), dtype=torch.int8, generator=gen).to(dev) if asym else None
                for m in batches:
                    x = torch.randn(m, k, generator=gen).to(dev, dtype)
                    for split_k in splits:
                        name = (f"w4a16 {str(dtype)[6:]} g={group or 'channel'} {'asym' if asym else 'sym'} "
                                f"M={m} K={k} N={n} split_k={split_k or 'auto'}")
                        rows.append(check(name, lambda: (w4a16_matmul(x, qweight, scales, zeros, group, split_k),
                                                         w4a16_reference(x, qweight, scales, zeros, group)),
                                          TOLERANCE[dtype]))
    # qweight transposed in memory (N-contiguous) takes the kernel's gather unpack path.
    for dtype in (torch.float16, torch.bfloat16):
        for group in (128, None):
            k = 1000 + 3 if group is None else 1024
            gen = torch.Generator(device="cpu").manual_seed(k)
            qweight = pack_int4(torch.randint(-8, 8, (n, k), dtype=torch.int8, generator=gen)).to(dev)
            qweight = qweight.t().contiguous().t()
            groups = 1 if group is None else k // group
            scales = (torch.rand(n, groups, generator=gen) * 0.02 + 0.005).to(dev, dtype)
            zeros = torch.randint(-8, 8, (n, groups), dtype=torch.int8, generator=gen).to(dev)
            for m in (1, 16):
                x = torch.randn(m, k, generator=gen).to(dev, dtype)
                for split_k in (1, None):
                    name = (f"w4a16 N-contiguous qweight {str(dtype)[6:]} g={group or 'channel'} asym M={m} "
                            f"split_k={split_k or 'auto'}")
                    rows.append(check(name, lambda: (w4a16_matmul(x, qweight, scales, zeros, group, split_k),
                                                     w4a16_reference(x, qweight, scales, zeros, group)),
                                      TOLERANCE[dtype]))
    batches = (1, 16) if quick else (1, 3, 16, 64, 257)
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        for m in batches:
            k = 1000 + 7
            gen = torch.Generator(device="cpu").manual_seed(m)
            w_q, w_scale = quantize_per_channel_int8(torch.randn(n, k, generator=gen))
            w_q, w_scale = w_q.to(dev), w_scale.to(dev)
            x = torch.randn(m, k, generator=gen).to(dev, dtype)
            rows.append(check(f"w8a8 {str(dtype)[6:]} M={m} K={k} N={n}",
                              lambda: (w8a8_linear(x, w_q, w_scale), w8a8_reference(x, w_q, w_scale)),
                              1e-5 if dtype == torch.float32 else TOLERANCE[dtype]))
    for dtype in (torch.float16, torch.bfloat16) if quick else (torch.float16, torch.bfloat16, torch.float32):
        for density in (1.0, 0.1, 0.0):
            k = 4000 + 9
            gen = torch.Generator(device="cpu").manual_seed(int(density * 10))
            pre = torch.randn(k, generator=gen)
            threshold = torch.quantile(pre, 1 - density).item() if 0 < density < 1 else (
                float("-inf") if density == 1 else float("inf"))
            a = fatrelu(pre, threshold).to(dev, dtype)
            w = torch.randn(n, k, generator=gen)
            w[:, (a == 0).cpu()] = float("nan")  # skipped columns must never be read
            w = w.to(dev, dtype).t().contiguous().t()
            for split_k in (1, None):
                def run() -> tuple[torch.Tensor, torch.Tensor]:
                    y = sparse_gemv(a, w, split_k)
                    ref = sparse_gemv_reference(a, w)
                    return (y, ref) if density > 0 else (y + 1, ref + 1)  # all-zero: compare 1s
                rows.append(check(f"sparse_gemv {str(dtype)[6:]} density={density} K={k} N={n} "
                                  f"split_k={split_k or 'auto'}", run, TOLERANCE[dtype]))
    if dev != "cuda":
        return rows
    # Split-K atomics are order-dependent: repeated runs must agree to rounding.
    x = torch.randn(1, 4096, device=dev, dtype=torch.float16)
    qweight = pack_int4(torch.randint(-8, 8, (4096, 4096), dtype=torch.int8)).to(dev)
    scales = (torch.rand(4096, 32, device=dev) * 0.02).half()
    runs = [w4a16_matmul(x, qweight, scales, None, 128, split_k=8) for _ in range(5)]
    spread = max(relative_error(r, runs[0]) for r in runs)
    rows.append({"check": "w4a16 split_k=8 run-to-run spread", "ok": spread < 1e-3, "rel_err": spread})
    return rows


def rotating(make_call: Callable[[], Callable[[], torch.Tensor]], weight_bytes: int) -> Callable[[], torch.Tensor]:
    """Cycle calls over enough weight copies that L2 never holds them (graph replays skip
    do_bench's L2 flush, and a 4096^2 int4 weight is 8 MB against H200's 50 MB of L2)."""
    calls = [make_call() for _ in range(max(1, -(-COLD_BYTES // max(weight_bytes, 1))))]
    counter = itertools.count()
    return lambda: calls[next(counter) % len(calls)]()


def bench_ms(fn: Callable[[], torch.Tensor], graph: bool) -> float:
    import triton.testing

    fn()  # compile and autotune outside any graph capture
    torch.cuda.synchronize()
    if graph:
        return float(triton.testing.do_bench_cudagraph(fn, rep=100))
    return float(triton.testing.do_bench(fn, warmup=25, rep=100))


def timings(quick: bool, dev: str = "cuda") -> list[dict]:
    from triton_kernels.packing import pack_int4
    from triton_kernels.sparse_gemv import sparse_gemv
    from triton_kernels.w4a16 import default_split_k, w4a16_matmul
    from triton_kernels.w8a8 import int8_matmul, quantize_per_channel_int8, quantize_per_token_int8, w8a8_linear

    rows = []
    for k, n in TIMING_SHAPES:
        torch.manual_seed(k + n)
        w16 = (torch.randn(n, k, device=dev) * 0.02).half()
        x16 = torch.randn(1, k, device=dev).half()
        xbf = x16.bfloat16()
        q = torch.randint(-8, 8, (n, k), dtype=torch.int8, device=dev)
        qweight = pack_int4(q)
        scales = (torch.rand(n, k // 128, device=dev) * 0.02).half()
        zeros = torch.randint(-8, 8, (n, k // 128), dtype=torch.int8, device=dev)
        scales_channel = (torch.rand(n, 1, device=dev) * 0.02).half()
        w_q, w_scale = quantize_per_channel_int8(w16.float())
        x_q, x_scale = quantize_per_token_int8(x16)
        w_col = w16.t().contiguous().t()
        qweight_n_contiguous = qweight.t().contiguous().t()
        auto = default_split_k(1, n, k, torch.device(dev))
        # name -> (factory of one call on fresh weight copies, weight bytes one call reads)
        ops: dict[str, tuple[Callable[[], Callable[[], torch.Tensor]], int]] = {
            "fp16 torch.matmul": (lambda: lambda w=w16.clone(): torch.matmul(x16, w.t()), n * k * 2),
            f"w4a16 fp16 g128 sym split_k=auto({auto})": (
                lambda: lambda qw=qweight.clone(), s=scales.clone(): w4a16_matmul(x16, qw, s, None, 128),
                n * k // 2 + scales.numel() * 2),
            "w4a16 fp16 g128 sym split_k=auto N-contiguous qweight": (
                lambda: lambda qw=qweight_n_contiguous.clone(), s=scales.clone(): w4a16_matmul(x16, qw, s, None, 128),
                n * k // 2 + scales.numel() * 2),
            "w4a16 fp16 g128 asym split_k=auto": (
                lambda: lambda qw=qweight.clone(), s=scales.clone(), z=zeros.clone(): w4a16_matmul(x16, qw, s, z, 128),
                n * k // 2 + scales.numel() * 3),
            "w4a16 bf16 g128 sym split_k=auto": (
                lambda: lambda qw=qweight.clone(), s=scales.bfloat16(): w4a16_matmul(xbf, qw, s, None, 128),
                n * k // 2 + scales.numel() * 2),
            "w4a16 fp16 per-channel sym split_k=auto": (
                lambda: lambda qw=qweight.clone(), s=scales_channel.clone(): w4a16_matmul(x16, qw, s, None, None),
                n * k // 2),
            "w8a8 incl. per-token quantisation": (
                lambda: lambda w=w_q.clone(): w8a8_linear(x16, w, w_scale), n * k),
            "w8a8 int8_matmul only": (
                lambda: lambda w=w_q.clone(): int8_matmul(x_q, x_scale, w, w_scale, torch.float16), n * k),
        }
        if not quick:
            for split_k in SPLIT_K_SWEEP:
                for layout, qw in (("", qweight), (" N-contiguous qweight", qweight_n_contiguous)):
                    ops[f"w4a16 fp16 g128 sym split_k={split_k}{layout}"] = (
                        lambda sk=split_k, qw=qw: lambda q=qw.clone(), s=scales.clone(): w4a16_matmul(
                            x16, q, s, None, 128, split_k=sk),
                        n * k // 2 + scales.numel() * 2)
        for density in (1.0, 0.5, 0.1):
            a = torch.relu(torch.randn(k, device=dev)).half()
            a[torch.rand(k, device=dev) > density] = 0
            ops[f"sparse_gemv fp16 density={density}"] = (
                lambda a=a: lambda w=w_col.clone(): sparse_gemv(a, w), int(n * k * 2 * density))
        base = {}
        for graph in (False, True):
            for name, (make_call, weight_bytes) in ops.items():
                row = {"shape": f"{k}->{n}", "M": 1, "op": name, "cuda_graph": graph}
                try:
                    ms = bench_ms(rotating(make_call, weight_bytes), graph)
                    row.update(median_us=round(ms * 1e3, 2), weight_GBps=round(weight_bytes / ms / 1e6, 1))
                    if name == "fp16 torch.matmul":
                        base[graph] = ms
                    row["speedup_vs_fp16_matmul"] = round(base[graph] / ms, 3) if graph in base else None
                except Exception as exc:
                    row["error"] = f"{type(exc).__name__}: {exc}"
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "kernels_gpu.json")
    parser.add_argument("--quick", action="store_true", help="fewer batches, no split-K sweep")
    parser.add_argument("--skip-correctness", action="store_true", help="timings only")
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("kernels_gpu.py: unset TRITON_INTERPRET; this script measures compiled kernels", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("kernels_gpu.py: no CUDA device visible; run it on the GPU machine", file=sys.stderr)
        return 2
    try:
        import triton
    except ImportError:
        print("kernels_gpu.py: triton is not installed (pip install triton==3.7.1 for torch 2.13)",
              file=sys.stderr)
        return 2
    result: dict = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }

    def write() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")

    failed: list[str] = []
    if not args.skip_correctness:
        start = time.time()
        result["correctness"] = correctness(args.quick)
        failed = [r["check"] for r in result["correctness"] if not r["ok"]]
        result["correctness_failed"] = failed
        result["correctness_seconds"] = round(time.time() - start, 1)
        write()
        print(f"correctness: {len(result['correctness']) - len(failed)}/{len(result['correctness'])} ok "
              f"in {result['correctness_seconds']} s", flush=True)
        for name in failed:
            print("FAILED", name, flush=True)
    start = time.time()
    result["timings"] = timings(args.quick)
    result["timing_seconds"] = round(time.time() - start, 1)
    write()
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
