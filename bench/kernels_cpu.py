"""CPU timings of the native low-bit paths QuantLinear uses, against dense F.linear.

(Not `bench/kernels.py`: running a bench puts bench/ first on sys.path, and that name would hide
the `kernels` package transformers imports.)

All ops for one (shape, M) are timed in interleaved rounds in the same process, so the
ratios are comparable; absolute microseconds depend on the machine and its load and are not
claims. Weights are cache-warm (the same layer is called repeatedly), which flatters the
small SmolLM2 shapes whose weights fit in cache.

    python bench/kernels_cpu.py [--out bench/results/kernels_cpu.json] [--rounds 15] [--threads 1]

Each row: shape (K->N), M, op, median_us, speedup_vs_bf16_dense (bf16 dense time / op
time, > 1 means faster), speedup_vs_fp32_dense (the same against fp32, the faster dense
baseline on CPUs without native bf16), rel_err_vs_fp32 (output error against dense fp32).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from triton_kernels.quant_linear import QuantLinear  # noqa: E402
from triton_kernels.w8a8 import quantize_per_token_int8  # noqa: E402

SHAPES = [(576, 576), (576, 1536), (1536, 576), (576, 192), (4096, 4096)]  # (in K, out N)
BATCHES = [1, 8]


def int4_group_for(k: int) -> int:
    """128 where it divides K, else 64 (SmolLM2's 576 = 9 * 64)."""
    return 128 if k % 128 == 0 else 64


def time_call(fn: Callable[[], torch.Tensor], min_seconds: float = 0.02) -> float:
    """Microseconds per call, averaged over enough calls to last min_seconds."""
    fn()
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / calls * 1e6


def bench_shape(k: int, n: int, m: int, rounds: int) -> list[dict]:
    torch.manual_seed(k * 7 + n)
    linear = nn.Linear(k, n, bias=False)
    w32 = linear.weight.detach()
    w16 = w32.to(torch.bfloat16)
    x32 = torch.randn(m, k)
    x16 = x32.to(torch.bfloat16)
    group = int4_group_for(k)
    int4 = QuantLinear.from_linear(linear, 4, group, symmetric=True, backend="native")
    int4_asym = QuantLinear.from_linear(linear, 4, group, symmetric=False, backend="native")
    int8 = QuantLinear.from_linear(linear, 8, backend="native")
    w8a8 = QuantLinear.from_linear(linear, 8, quantize_activations=True, backend="native")
    x_q, x_scale = quantize_per_token_int8(x32)
    w_q_t, w_scale = w8a8.weight.t(), w8a8.weight_scale

    packed, scales_and_zeros, native_group, _ = int4._native_int4_weights()

    def int4_op_only() -> torch.Tensor:  # the torch op without QuantLinear's Python around it
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x16, packed, native_group, scales_and_zeros)

    def int_mm_only() -> torch.Tensor:  # W8A8 minus the per-token quantisation of x
        return torch._int_mm(x_q, w_q_t).to(torch.float32) * x_scale[:, None] * w_scale[None, :]

    ops: dict[str, Callable[[], torch.Tensor]] = {
        "dense_fp32": lambda: F.linear(x32, w32),
        "dense_bf16": lambda: F.linear(x16, w16),
        f"int4_g{group}_sym_native_bf16": lambda: int4(x16),
        f"int4_g{group}_asym_native_bf16": lambda: int4_asym(x16),
        f"int4_g{group}_sym_op_only_bf16": int4_op_only,
        "int8_weight_only_native_bf16": lambda: int8(x16),
        "w8a8_dynamic_int_mm_fp32": lambda: w8a8(x32),
        "w8a8_int_mm_only_prequantized": int_mm_only,
    }
    with torch.inference_mode():
        ref = ops["dense_fp32"]()
        errors = {name: ((fn().float() - ref).norm() / ref.norm()).item() for name, fn in ops.items()}
        samples: dict[str, list[float]] = {name: [] for name in ops}
        for _ in range(rounds):
            for name, fn in ops.items():
                samples[name].append(time_call(fn))
    medians = {name: statistics.median(v) for name, v in samples.items()}
    return [
        {
            "shape": f"{k}->{n}",
            "in_features": k,
            "out_features": n,
            "M": m,
            "op": name,
            "median_us": round(med, 2),
            "speedup_vs_bf16_dense": round(medians["dense_bf16"] / med, 3),
            "speedup_vs_fp32_dense": round(medians["dense_fp32"] / med, 3),
            "rel_err_vs_fp32": float(f"{errors[name]:.3g}"),
            "threads": torch.get_num_threads(),
        }
        for name, med in medians.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "kernels_cpu.json")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads; 1 avoids OpenMP stalls on a shared machine")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows: list[dict] = []
    for k, n in SHAPES:
        for m in BATCHES:
            shape_rows = bench_shape(k, n, m, args.rounds)
            rows.extend(shape_rows)
            summary = "  ".join(f"{r['op']}={r['speedup_vs_bf16_dense']:.2f}x" for r in shape_rows)
            print(f"{k}->{n} M={m}: {summary}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {len(rows)} rows to {args.out}")


if __name__ == "__main__":
    main()
