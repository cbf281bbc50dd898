"""Activation-sparse GEMV for the FFN down-projection of ReLU-sparsified models.

After a FATReLU threshold most entries of the down-projection input a [K] are exactly zero,
and a weight column W[:, k] whose a_k is zero contributes nothing. Decode is memory-bound,
so never loading those columns is the speedup: K-blocks whose activations are all zero are
skipped outright, and inside the other blocks loads are masked on a_k != 0 (masked lanes issue
no memory traffic on the GPU).

The weight keeps nn.Linear's logical shape [N, K] with any strides; store it column-major
(``w.t().contiguous().t()``) so one activation maps to one contiguous column, the layout of
TEAL and torchao's sparse GEMV.
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # the reference must work without triton
    triton = None

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def fatrelu(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """FATReLU: keep x where x >= threshold, zero elsewhere (threshold 0 is ReLU)."""
    return torch.where(x >= threshold, x, torch.zeros((), dtype=x.dtype, device=x.device))


def sparse_gemv_reference(a: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Plain-torch W @ a over the nonzero activations only (zero columns are never read)."""
    a = a.reshape(-1)
    nz = torch.nonzero(a, as_tuple=True)[0]
    y = weight[:, nz].to(torch.float32) @ a[nz].to(torch.float32)
    return y.to(a.dtype)


if triton is not None:

    def _sparse_gemv_configs(interpret: bool) -> list[triton.Config]:
        if interpret:  # the interpreter fails with more than one autotune config
            return [triton.Config({"BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=1)]
        return [
            triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
            for bn, bk, w, s in [
                (64, 32, 4, 3),
                (128, 32, 4, 3),
                (128, 64, 4, 3),
                (256, 16, 4, 4),
                (256, 32, 8, 3),
                (512, 16, 8, 3),
            ]
        ]

    @triton.autotune(configs=_sparse_gemv_configs(INTERPRET), key=["N", "K", "SPLIT_K"], reset_to_zero=["y_ptr"])
    @triton.jit
    def _sparse_gemv_kernel(
        a_ptr, w_ptr, y_ptr,
        N, K,
        stride_wn, stride_wk,
        SPLIT_K: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        pid_n = tl.program_id(0)
        pid_k = tl.program_id(1)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for kb in range(pid_k, tl.cdiv(K, BLOCK_K), SPLIT_K):
            offs_k = kb * BLOCK_K + tl.arange(0, BLOCK_K)
            a = tl.load(a_ptr + offs_k, mask=offs_k < K, other=0.0)
            nonzero = a != 0
            if tl.sum(nonzero.to(tl.int32), axis=0) > 0:  # all-zero K-block: skip its weights
                w = tl.load(w_ptr + offs_k[:, None] * stride_wk + offs_n[None, :] * stride_wn,
                            mask=nonzero[:, None] & mask_n[None, :], other=0.0)
                acc += tl.sum(w.to(tl.float32) * a.to(tl.float32)[:, None], axis=0)
        if SPLIT_K > 1:
            tl.atomic_add(y_ptr + offs_n, acc, mask=mask_n)
        else:
            tl.store(y_ptr + offs_n, acc.to(y_ptr.dtype.element_ty), mask=mask_n)


def default_split_k(n: int, k: int, device: torch.device) -> int:
    """Split K when N alone gives too few programs to fill the GPU."""
    if device.type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    programs = triton.cdiv(n, 128)
    split = 1
    while programs * split * 2 <= 2 * sms and k // (split * 2) >= 128 and split < 32:
        split *= 2
    return split


def sparse_gemv(a: torch.Tensor, weight: torch.Tensor, split_k: int | None = None) -> torch.Tensor:
    """Triton y = weight @ a for a sparse activation a [K] (or [1, K]) and weight [N, K]."""
    if triton is None:
        raise RuntimeError("sparse_gemv needs triton; use sparse_gemv_reference without it")
    if not (a.is_cuda or INTERPRET):
        raise RuntimeError("sparse_gemv runs on CUDA tensors, or on CPU with TRITON_INTERPRET=1")
    if a.numel() != a.shape[-1]:
        raise ValueError(f"sparse_gemv is a GEMV: a must hold one row, got shape {tuple(a.shape)}")
    n, k = weight.shape
    if a.shape[-1] != k:
        raise ValueError(f"a has {a.shape[-1]} entries, weight has K={k}")
    a_flat = a.reshape(-1).contiguous()
    if split_k is None:
        split_k = default_split_k(n, k, a.device)
    if split_k > 1:
        y = torch.zeros(n, device=a.device, dtype=torch.float32)
    else:
        y = torch.empty(n, device=a.device, dtype=a.dtype)

    def grid(meta: dict) -> tuple[int, int]:
        return (triton.cdiv(n, meta["BLOCK_N"]), split_k)

    _sparse_gemv_kernel[grid](a_flat, weight, y, n, k, weight.stride(0), weight.stride(1), SPLIT_K=split_k)
    return y.to(a.dtype).reshape(*a.shape[:-1], n)
