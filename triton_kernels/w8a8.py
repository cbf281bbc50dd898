"""W8A8 matmul: int8 per-channel weights x dynamic per-token int8 activations.

Integer tensor cores run int8 at twice the fp16 rate, which pays off in compute-bound prefill.
Both operands are symmetric, so the int32 dot needs no zero-point correction and dequantisation
is one multiply by act_scale[m] * w_scale[n] in the epilogue.
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # the reference and QuantLinear's CPU paths must work without triton
    triton = None

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
INT8_MAX = 127


def quantize_per_token_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric dynamic quantisation of each row of x [..., K]: int8 values and fp32 scales [...]."""
    xf = x.to(torch.float32)
    scale = xf.abs().amax(dim=-1).clamp(min=1e-8) / INT8_MAX
    q = torch.round(xf / scale.unsqueeze(-1)).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale


def quantize_per_channel_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric round-to-nearest of each output row of a weight [N, K]: int8 [N, K], fp32 [N]."""
    return quantize_per_token_int8(w)


def int8_matmul_reference(
    x_q: torch.Tensor,
    x_scale: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Plain-torch (x_q @ w_q^T) * x_scale[m] * w_scale[n]; float64 sums are exact here."""
    acc = (x_q.to(torch.float64) @ w_q.to(torch.float64).t()).to(torch.float32)
    return (acc * x_scale.to(torch.float32)[:, None] * w_scale.to(torch.float32)[None, :]).to(out_dtype)


def w8a8_reference(x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
    """Reference of :func:`w8a8_linear`: quantise x per token, then int8 matmul."""
    lead, k = x.shape[:-1], x.shape[-1]
    x_q, x_scale = quantize_per_token_int8(x.reshape(-1, k))
    y = int8_matmul_reference(x_q, x_scale, w_q, w_scale, x.dtype)
    return y.reshape(*lead, w_q.shape[0])


if triton is not None:

    def _int8_configs(interpret: bool) -> list[triton.Config]:
        if interpret:  # the interpreter fails with more than one autotune config
            return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 64}, num_warps=4, num_stages=1)]
        return [
            triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
            for bm, bn, bk, w, s in [
                (16, 64, 128, 4, 4),
                (16, 128, 128, 4, 4),
                (32, 128, 128, 4, 3),
                (64, 128, 128, 4, 3),
                (128, 128, 64, 8, 3),
                (128, 256, 64, 8, 3),
                (256, 128, 64, 8, 3),
            ]
        ]

    def _prune_int8_configs(configs: list, named_args: dict, **kwargs) -> list:
        """Skip configs whose BLOCK_M is far above M (decode would tune 256-row tiles)."""
        m_bucket = {**named_args, **kwargs}["M_BUCKET"]
        return [c for c in configs if c.kwargs["BLOCK_M"] <= max(16, m_bucket)] or configs[:1]

    @triton.autotune(
        configs=_int8_configs(INTERPRET),
        key=["N", "K", "M_BUCKET"],
        prune_configs_by={"early_config_prune": _prune_int8_configs},
    )
    @triton.jit(do_not_specialize=["M_BUCKET"])  # an autotune key only
    def _int8_matmul_kernel(
        x_ptr, xs_ptr, w_ptr, ws_ptr, y_ptr,
        M, N, K,
        stride_xm, stride_xk,
        stride_wn, stride_wk,
        stride_ym, stride_yn,
        M_BUCKET,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        tl.static_assert(BLOCK_M >= 16 and BLOCK_N >= 16 and BLOCK_K >= 32)  # GPU int8 dot minimum
        pid_n = tl.program_id(0)
        pid_m = tl.program_id(1)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_m = offs_m < M
        mask_n = offs_n < N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        for kb in range(tl.cdiv(K, BLOCK_K)):
            offs_k = kb * BLOCK_K + tl.arange(0, BLOCK_K)
            mask_k = offs_k < K
            a = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                        mask=mask_m[:, None] & mask_k[None, :], other=0)
            b = tl.load(w_ptr + offs_n[None, :] * stride_wn + offs_k[:, None] * stride_wk,
                        mask=mask_k[:, None] & mask_n[None, :], other=0)
            acc = tl.dot(a, b, acc, out_dtype=tl.int32)
        x_scale = tl.load(xs_ptr + offs_m, mask=mask_m, other=0.0)
        w_scale = tl.load(ws_ptr + offs_n, mask=mask_n, other=0.0)
        y = acc.to(tl.float32) * x_scale[:, None] * w_scale[None, :]
        tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn,
                 y.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


def int8_matmul(
    x_q: torch.Tensor,
    x_scale: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Triton (x_q [M, K] @ w_q [N, K]^T) * x_scale[m] * w_scale[n], int32 accumulation."""
    if triton is None:
        raise RuntimeError("int8_matmul needs triton; use int8_matmul_reference without it")
    if not (x_q.is_cuda or INTERPRET):
        raise RuntimeError("int8_matmul runs on CUDA tensors, or on CPU with TRITON_INTERPRET=1")
    if x_q.dtype != torch.int8 or w_q.dtype != torch.int8:
        raise ValueError(f"int8 operands expected, got {x_q.dtype} and {w_q.dtype}")
    m, k = x_q.shape
    n = w_q.shape[0]
    if w_q.shape[1] != k or x_scale.shape != (m,) or w_scale.shape != (n,):
        raise ValueError(f"shape mismatch: x_q {tuple(x_q.shape)}, w_q {tuple(w_q.shape)}, "
                         f"x_scale {tuple(x_scale.shape)}, w_scale {tuple(w_scale.shape)}")
    if m == 0:
        return torch.empty((0, n), device=x_q.device, dtype=out_dtype)
    x_scale = x_scale.to(torch.float32).contiguous()
    w_scale = w_scale.to(torch.float32).contiguous()
    y = torch.empty((m, n), device=x_q.device, dtype=out_dtype)

    def grid(meta: dict) -> tuple[int, int]:
        return (triton.cdiv(n, meta["BLOCK_N"]), triton.cdiv(m, meta["BLOCK_M"]))

    _int8_matmul_kernel[grid](
        x_q, x_scale, w_q, w_scale, y,
        m, n, k,
        x_q.stride(0), x_q.stride(1),
        w_q.stride(0), w_q.stride(1),
        y.stride(0), y.stride(1),
        min(256, triton.next_power_of_2(m)),
    )
    return y


def w8a8_linear(x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
    """y = x @ W^T with x quantised per token on the fly; x [..., K] float, result in x.dtype."""
    lead, k = x.shape[:-1], x.shape[-1]
    x_q, x_scale = quantize_per_token_int8(x.reshape(-1, k))
    y = int8_matmul(x_q, x_scale, w_q, w_scale, x.dtype)
    return y.reshape(*lead, w_q.shape[0])
