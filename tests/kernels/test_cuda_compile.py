"""The CUDA path compiles: every kernel built ahead of time for sm_90 (H100/H200), no GPU needed.

The interpreter runs the kernels' Python semantics but hides GPU-only constraints (tl.dot
minimum shapes, int8 dot, bf16 lowering, shared memory per config). Triton's ``compile`` with a
``GPUTarget`` runs the full pipeline down to a cubin with the bundled ptxas, on any machine.
It needs the kernels defined without TRITON_INTERPRET, so it runs in a subprocess.

    python tests/kernels/test_cuda_compile.py [--all]   # --all: every variant and config
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TARGET_ARCH = 90
FLOATS = {"fp16": "*fp16", "bf16": "*bf16", "fp32": "*fp32"}


def variants(everything: bool) -> list[tuple[str, object, dict, dict, dict]]:
    """(label, jit function, signature types, constexprs, options) for each build.

    Default: one representative variant per kernel (both w4a16 unpack paths), first config.
    ``everything``: every variant with its first config, plus every config of the representative.
    """
    from triton_kernels.sparse_gemv import _sparse_gemv_kernel
    from triton_kernels.w4a16 import _w4a16_kernel
    from triton_kernels.w8a8 import _int8_matmul_kernel

    builds = []

    def add(label: str, tuner, types: dict, constexprs: dict, representative: bool) -> None:
        if not (everything or representative):
            return
        fn = tuner.fn
        configs = tuner.configs if everything and representative else tuner.configs[:1]
        for config in configs:
            sig = {name: types.get(name, "i32") for name in fn.arg_names}
            const = {**constexprs, **config.kwargs}
            sig.update({name: "constexpr" for name in const})
            options = {"num_warps": config.num_warps, "num_stages": config.num_stages}
            builds.append((f"{label} {config.kwargs} w{config.num_warps} s{config.num_stages}", fn, sig, const,
                           options))

    # W4A16: every activation dtype, grouped/per-channel, sym/asym, split-K on/off, both unpack paths.
    for dtype in FLOATS:
        for per_channel in (False, True):
            for has_zero in (False, True):
                for split_k, words_along_k in ((1, True), (4, True), (1, False), (4, False)):
                    types = {"x_ptr": FLOATS[dtype], "qw_ptr": "*i32", "s_ptr": FLOATS[dtype], "z_ptr": "*i8",
                             "y_ptr": "*fp32" if split_k > 1 else FLOATS[dtype]}
                    constexprs = {"PER_CHANNEL": per_channel, "HAS_ZERO": has_zero, "SPLIT_K": split_k,
                                  "WORDS_ALONG_K": words_along_k,
                                  "DOT_PRECISION": "ieee" if dtype == "fp32" else "tf32"}
                    add(f"w4a16 {dtype} pc={per_channel} zero={has_zero} split={split_k} "
                        f"words_along_k={words_along_k}", _w4a16_kernel, types, constexprs,
                        representative=dtype == "bf16" and not per_channel and has_zero and split_k > 1)
    for dtype in FLOATS:
        add(f"w8a8 out={dtype}", _int8_matmul_kernel,
            {"x_ptr": "*i8", "xs_ptr": "*fp32", "w_ptr": "*i8", "ws_ptr": "*fp32", "y_ptr": FLOATS[dtype]},
            {}, representative=dtype == "fp16")
    for dtype in FLOATS:
        for split_k in (1, 4):
            add(f"sparse_gemv {dtype} split={split_k}", _sparse_gemv_kernel,
                {"a_ptr": FLOATS[dtype], "w_ptr": FLOATS[dtype], "y_ptr": "*fp32" if split_k > 1 else FLOATS[dtype]},
                {"SPLIT_K": split_k}, representative=dtype == "fp16" and split_k > 1)
    return builds


def compile_all(all_configs: bool) -> int:
    """Compile every variant for sm_90; print one line each; return the number of failures."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    failures = 0
    for label, fn, sig, const, options in variants(all_configs):
        try:
            kernel = triton.compile(ASTSource(fn, sig, const), target=GPUTarget("cuda", TARGET_ARCH, 32),
                                    options=options)
            print(f"ok   {label} shared={kernel.metadata.shared}", flush=True)
        except Exception as exc:  # report every failing build, not just the first
            failures += 1
            print(f"FAIL {label}: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
    return failures


def test_kernels_compile_for_sm90() -> None:
    triton = pytest.importorskip("triton")
    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    if not ptxas.exists():
        pytest.skip("triton wheel has no bundled ptxas")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, __file__], env=env, cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("unset TRITON_INTERPRET: the kernels must be defined for compilation")
    sys.path.insert(0, str(REPO))
    sys.exit(1 if compile_all("--all" in sys.argv) else 0)
