"""W4A16 matmul: y = x @ dequant(W)^T with int4 weights dequantised in registers.

Decode is memory-bound, so reading 4-bit weights instead of 16-bit ones is the whole win;
the weights are never materialised in 16 bits outside registers.

Layout (see ``packing``): ``qweight`` int32 [N, ceil(K/8)], compressed-tensors
``pack-quantized``; ``scales`` [N, K/G]; optional ``zeros`` [N, K/G] integer zero points in the
signed range [-8, 7]. Dequantisation is ``(q - z) * s`` with q the signed int4 value, the
compressed-tensors convention. ``group_size=None`` (or ``group_size == K``) means one scale
per output channel; that scale is applied in the epilogue instead of per element.

``qweight`` may be K-contiguous (as stored) or N-contiguous (``qweight.t().contiguous().t()``,
GPTQ's [K/8, N] order in memory); the kernel unpacks each with loads that are contiguous in
memory. Which is faster on a given GPU is measured by ``bench/kernels_gpu.py``.

Small M (decode) has too few output tiles to fill a GPU, so ``split_k > 1`` splits K over
extra programs that ``atomic_add`` into an fp32 output.
"""

from __future__ import annotations

import os

import torch

from triton_kernels.packing import packed_width, unpack_int4

try:
    import triton
    import triton.language as tl
except ImportError:  # the reference and QuantLinear's CPU paths must work without triton
    triton = None

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
MIN_GROUP_SIZE = 32  # BLOCK_K of every config divides it, so one scale serves a whole K-block


def dequantize_int4(
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None,
    group_size: int | None,
    k: int,
) -> torch.Tensor:
    """Float32 [N, k] weight ``(q - z) * s`` from the packed layout; the ground truth for kernels."""
    q = unpack_int4(qweight, k).to(torch.float32)
    group = k if group_size is None else group_size
    s = scales.to(torch.float32).repeat_interleave(group, dim=1)
    if zeros is not None:
        q = q - zeros.to(torch.float32).repeat_interleave(group, dim=1)
    return q * s


def w4a16_reference(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None = None,
    group_size: int | None = None,
) -> torch.Tensor:
    """Plain-torch y = x @ dequant(W)^T; the weight is rounded to x.dtype as the kernel does."""
    k = x.shape[-1]
    w = dequantize_int4(qweight, scales, zeros, group_size, k).to(x.dtype)
    return (x.to(torch.float32) @ w.to(torch.float32).t()).to(x.dtype)


def _check_args(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None,
    group_size: int | None,
) -> tuple[int, int, bool]:
    """Validate shapes; return (N, effective group size, per_channel)."""
    k = x.shape[-1]
    n = qweight.shape[0]
    if qweight.dtype != torch.int32 or qweight.shape[1] != packed_width(k):
        raise ValueError(f"qweight must be int32 [N, {packed_width(k)}] for K={k}, got "
                         f"{qweight.dtype} {tuple(qweight.shape)}")
    per_channel = group_size is None or group_size == k
    group = k if per_channel else group_size
    if not per_channel and (group % MIN_GROUP_SIZE or k % group):
        raise ValueError(f"group_size must be a multiple of {MIN_GROUP_SIZE} dividing K={k}, "
                         f"got {group_size}")
    if scales.shape != (n, k // group):
        raise ValueError(f"scales must be [{n}, {k // group}], got {tuple(scales.shape)}")
    if zeros is not None and zeros.shape != scales.shape:
        raise ValueError(f"zeros must match scales {tuple(scales.shape)}, got {tuple(zeros.shape)}")
    return n, group, per_channel


def default_split_k(m: int, n: int, k: int, device: torch.device) -> int:
    """Split K only when the output tiles cannot fill the GPU (decode-sized M)."""
    if device.type != "cuda" or m > 64:
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    tiles = triton.cdiv(n, 128) * triton.cdiv(m, 16)
    split = 1
    while tiles * split * 2 <= sms and k // (split * 2) >= 256 and split < 16:
        split *= 2
    return split


if triton is not None:

    def _w4a16_configs(interpret: bool) -> list[triton.Config]:
        if interpret:  # the interpreter fails with more than one autotune config
            return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=4, num_stages=1)]
        return [
            triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
            for bm, bn, bk, w, s in [
                (16, 64, 32, 4, 4),
                (16, 128, 32, 4, 4),
                (16, 64, 128, 4, 4),
                (16, 128, 64, 4, 4),
                (16, 128, 128, 4, 3),
                (16, 256, 64, 8, 3),
                (32, 128, 32, 4, 3),
                (64, 128, 64, 4, 3),
                (64, 256, 32, 8, 3),
                (128, 128, 32, 8, 3),
                (128, 256, 64, 8, 3),
            ]
        ]

    def _prune_w4a16_configs(configs: list, named_args: dict, **kwargs) -> list:
        """BLOCK_K must divide the group (one scale per K-block); BLOCK_M should not exceed M."""
        args = {**named_args, **kwargs}
        valid = [c for c in configs if args["PER_CHANNEL"] or args["GROUP_SIZE"] % c.kwargs["BLOCK_K"] == 0]
        sized = [c for c in valid if c.kwargs["BLOCK_M"] <= max(16, args["M_BUCKET"])]
        return sized or valid[:1]  # every config list has a BLOCK_K=32 entry, so valid is never empty

    @triton.autotune(
        configs=_w4a16_configs(INTERPRET),
        key=["N", "K", "M_BUCKET", "GROUP_SIZE", "SPLIT_K"],
        prune_configs_by={"early_config_prune": _prune_w4a16_configs},
        reset_to_zero=["y_ptr"],
    )
    @triton.jit(do_not_specialize=["GROUP_SIZE", "M_BUCKET"])  # fewer compiles; both are runtime ints
    def _w4a16_kernel(
        x_ptr, qw_ptr, s_ptr, z_ptr, y_ptr,
        M, N, K, K_WORDS,
        stride_xm, stride_xk,
        stride_qn, stride_qk,
        stride_sn, stride_sg,
        stride_zn, stride_zg,
        stride_ym, stride_yn,
        GROUP_SIZE,
        M_BUCKET,
        PER_CHANNEL: tl.constexpr,
        HAS_ZERO: tl.constexpr,
        WORDS_ALONG_K: tl.constexpr,
        SPLIT_K: tl.constexpr,
        DOT_PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        tl.static_assert(BLOCK_M >= 16 and BLOCK_N >= 16 and BLOCK_K >= 16)  # GPU tl.dot minimum
        tl.static_assert(BLOCK_K % 8 == 0)
        pid_n = tl.program_id(0)
        pid_m = tl.program_id(1)
        pid_k = tl.program_id(2)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_m = offs_m < M
        mask_n = offs_n < N
        compute_dtype = x_ptr.dtype.element_ty
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        if PER_CHANNEL and HAS_ZERO:
            zero_n = tl.load(z_ptr + offs_n * stride_zn, mask=mask_n, other=0).to(tl.int32)
        for kb in range(pid_k, tl.cdiv(K, BLOCK_K), SPLIT_K):
            offs_k = kb * BLOCK_K + tl.arange(0, BLOCK_K)
            mask_k = offs_k < K
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                        mask=mask_m[:, None] & mask_k[None, :], other=0.0)
            if WORDS_ALONG_K:
                # K-contiguous words (the stored layout): load each word once as a [BLOCK_N, BLOCK_K/8]
                # tile, split it into nibbles along a new axis and fold that axis into K.
                offs_w = kb * (BLOCK_K // 8) + tl.arange(0, BLOCK_K // 8)
                words = tl.load(qw_ptr + offs_n[:, None] * stride_qn + offs_w[None, :] * stride_qk,
                                mask=mask_n[:, None] & (offs_w < K_WORDS)[None, :], other=0)
                nibbles = (words[:, :, None] >> (tl.arange(0, 8) * 4)[None, None, :]) & 0xF
                q = tl.trans(tl.reshape(nibbles, (BLOCK_N, BLOCK_K))) - 8
                # Padding nibbles past K meet x == 0 (masked load), so they need no mask here.
            else:
                # N-contiguous words (qweight transposed in memory): gather a [BLOCK_K, BLOCK_N] tile,
                # each word once per nibble, coalesced along N and deduplicated by the cache.
                words = tl.load(qw_ptr + offs_n[None, :] * stride_qn + (offs_k[:, None] // 8) * stride_qk,
                                mask=mask_k[:, None] & mask_n[None, :], other=0)
                q = ((words >> ((offs_k[:, None] % 8) * 4)) & 0xF) - 8
            if PER_CHANNEL:
                if HAS_ZERO:
                    q = q - zero_n[None, :]
                w = q.to(compute_dtype)  # |q - z| <= 15: exact in every float type
            else:
                group = (kb * BLOCK_K) // GROUP_SIZE
                scale = tl.load(s_ptr + offs_n * stride_sn + group * stride_sg, mask=mask_n, other=0.0)
                if HAS_ZERO:
                    zero = tl.load(z_ptr + offs_n * stride_zn + group * stride_zg, mask=mask_n, other=0)
                    q = q - zero.to(tl.int32)[None, :]
                w = (q.to(tl.float32) * scale.to(tl.float32)[None, :]).to(compute_dtype)
            acc = tl.dot(x, w, acc, input_precision=DOT_PRECISION)
        if PER_CHANNEL:
            scale_n = tl.load(s_ptr + offs_n * stride_sn, mask=mask_n, other=0.0).to(tl.float32)
            acc = acc * scale_n[None, :]
        y_ptrs = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn
        y_mask = mask_m[:, None] & mask_n[None, :]
        if SPLIT_K > 1:
            tl.atomic_add(y_ptrs, acc, mask=y_mask)
        else:
            tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=y_mask)


def _m_bucket(m: int) -> int:
    """Autotune key for M: powers of two up to 256, so prefill lengths share tunings."""
    return min(256, triton.next_power_of_2(m))


def w4a16_matmul(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None = None,
    group_size: int | None = None,
    split_k: int | None = None,
) -> torch.Tensor:
    """Triton y = x @ dequant(W)^T for x [..., K] (fp16/fp32; bf16 on GPU only) -> [..., N]."""
    if triton is None:
        raise RuntimeError("w4a16_matmul needs triton; use w4a16_reference on machines without it")
    if not (x.is_cuda or INTERPRET):
        raise RuntimeError("w4a16_matmul runs on CUDA tensors, or on CPU with TRITON_INTERPRET=1")
    if x.dtype not in (torch.float16, torch.float32, torch.bfloat16):
        raise ValueError(f"unsupported activation dtype {x.dtype}")
    n, group, per_channel = _check_args(x, qweight, scales, zeros, group_size)
    lead, k = x.shape[:-1], x.shape[-1]
    x2 = x.reshape(-1, k)
    m = x2.shape[0]
    if m == 0:
        return x.new_empty(*lead, n)
    if not (qweight.device == scales.device == x.device):
        raise ValueError("x, qweight and scales must be on one device")
    if split_k is None:
        split_k = default_split_k(m, n, k, x.device)
    if split_k > 1:
        y = torch.zeros((m, n), device=x.device, dtype=torch.float32)
    else:
        y = torch.empty((m, n), device=x.device, dtype=x.dtype)
    z = zeros if zeros is not None else scales  # never read when HAS_ZERO is False

    def grid(meta: dict) -> tuple[int, int, int]:
        return (triton.cdiv(n, meta["BLOCK_N"]), triton.cdiv(m, meta["BLOCK_M"]), split_k)

    _w4a16_kernel[grid](
        x2, qweight, scales, z, y,
        m, n, k, qweight.shape[1],
        x2.stride(0), x2.stride(1),
        qweight.stride(0), qweight.stride(1),
        scales.stride(0), scales.stride(1),
        z.stride(0), z.stride(1),
        y.stride(0), y.stride(1),
        group, _m_bucket(m),
        PER_CHANNEL=per_channel,
        HAS_ZERO=zeros is not None,
        WORDS_ALONG_K=qweight.stride(1) == 1,
        SPLIT_K=split_k,
        DOT_PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
    )
    return y.to(x.dtype).reshape(*lead, n)
