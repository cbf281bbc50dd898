"""torch's CPU int4 weight layout, built from pack-quantized codes and read back from it.

Why read it back: on CPU the int4 op only needs this layout, so QuantLinear can drop the
pack-quantized copy (half its resident bytes) and still dequantize on demand, and a tied
embedding can gather its rows from an int4 lm_head instead of keeping a bf16 table.

``_convert_weight_to_int4pack_for_cpu`` (torch 2.13) turns unsigned nibbles u = q + 8 of a
weight [N, K] with N a multiple of 64 into uint8 [N/64, K, 32]: byte (b, k, j) holds row
64b + j in its low nibble and row 64b + 32 + j in its high nibble. The op computes
``(u - 8) * s + zf`` with ``qScaleAndZeros`` bf16 [K/G, N, 2] (scale, float zero). This is an
implementation detail of torch, so `layout_is_known` checks it once per process and callers
keep the pack-quantized copy when it fails. N is padded to a multiple of 64 here (not just the
16 the op needs) so that every row lives in a full block.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import torch
import torch.nn.functional as F

from triton_kernels.packing import pack_int4, unpack_int4

GROUPS = (256, 128, 64, 32)  # group sizes the CPU op accepts
BLOCK_N = 64
OFFSET = 8


class CpuInt4(NamedTuple):
    """What the CPU int4 op reads: packed uint8, bf16 [K'/G', N', 2] scales and float zeros, G', K'."""

    packed: torch.Tensor
    scales_zeros: torch.Tensor
    group: int
    k_padded: int


def native_group(k: int, group: int) -> tuple[int, int, int]:
    """(K', G', repeat): K padded for the op, the op's group, and how many op groups make one of ours.

    Per-channel rows whose K is not a multiple of 32 are padded to a multiple of 32 and given
    one repeated scale; groups the op lacks (512, ...) are re-expressed by repeating scales.
    """
    if k % GROUPS[-1]:  # only per-channel gets here
        k_padded = -(-k // GROUPS[-1]) * GROUPS[-1]
        return k_padded, GROUPS[-1], k_padded // GROUPS[-1]
    g = next(g for g in GROUPS if group % g == 0)
    return k, g, group // g


def build(packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, group: int, k: int) -> CpuInt4:
    """The CPU layout of pack-quantized int4 words [N, K/8], scales [N, K/G] and int zero points."""
    n = packed.shape[0]
    k_padded, g, repeat = native_group(k, group)
    n_padded = -(-n // BLOCK_N) * BLOCK_N
    unsigned = unpack_int4(packed, k).to(torch.int32) + OFFSET
    unsigned = F.pad(unsigned, (0, k_padded - k, 0, n_padded - n), value=OFFSET)  # weight 0
    out = torch.ops.aten._convert_weight_to_int4pack_for_cpu(unsigned.contiguous(), 1)
    scales = scale.to(torch.float32)
    zeros = torch.zeros_like(scales) if zero is None else -zero.to(torch.float32) * scales
    pair = torch.stack([scales, zeros], dim=-1).repeat_interleave(repeat, dim=1)  # [N, K'/G', 2]
    pair = F.pad(pair, (0, 0, 0, 0, 0, n_padded - n))
    return CpuInt4(out, pair.transpose(0, 1).contiguous().to(torch.bfloat16), g, k_padded)


def unsigned_rows(packed: torch.Tensor, rows: torch.Tensor, k_padded: int) -> torch.Tensor:
    """Unsigned nibbles (u = q + 8) of weight rows `rows` (int64 [T]) as uint8 [T, K']."""
    blocks = packed.view(-1, k_padded, BLOCK_N // 2)
    lane = rows % BLOCK_N
    byte = blocks[rows // BLOCK_N, :, lane % (BLOCK_N // 2)]  # [T, K']
    return torch.where((lane >= BLOCK_N // 2)[:, None], byte >> 4, byte & 0xF)


def dequantize_rows(w: CpuInt4, rows: torch.Tensor, k: int) -> torch.Tensor:
    """Float32 [T, K] weight rows exactly as the CPU op sees them: (u - 8) * s + zf."""
    u = unsigned_rows(w.packed, rows, w.k_padded).to(torch.float32) - OFFSET
    pair = w.scales_zeros[:, rows].to(torch.float32).transpose(0, 1)  # [T, K'/G', 2]
    pair = pair.repeat_interleave(w.group, dim=1)
    return (u * pair[..., 0] + pair[..., 1])[:, :k]


def to_pack_quantized(
    w: CpuInt4, n: int, k: int, group: int, has_zero: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Inverse of `build`: pack-quantized words, bf16 scales [N, K/G] and int8 zero points (or None)."""
    rows = torch.arange(n, device=w.packed.device)
    q = (unsigned_rows(w.packed, rows, w.k_padded)[:, :k].to(torch.int16) - OFFSET).to(torch.int8)
    _, _, repeat = native_group(k, group)
    pair = w.scales_zeros[:, :n].transpose(0, 1)[:, ::repeat]  # [N, K/G, 2] bf16
    scale = pair[..., 0].contiguous()
    zero = None
    if has_zero:
        s = scale.to(torch.float32)
        z = torch.where(s != 0, -pair[..., 1].to(torch.float32) / torch.where(s != 0, s, 1), 0)
        zero = z.round().clamp(-8, 7).to(torch.int8)
    return pack_int4(q), scale, zero


@lru_cache(maxsize=1)
def layout_is_known() -> bool:
    """Whether this torch's CPU int4 layout is the one `unsigned_rows` reads (checked on a random weight)."""
    try:
        gen = torch.Generator().manual_seed(0)
        q = torch.randint(-8, 8, (2 * BLOCK_N, 64), dtype=torch.int8, generator=gen)
        w = build(pack_int4(q), torch.ones(2 * BLOCK_N, 1), None, 64, 64)
        back = unsigned_rows(w.packed, torch.arange(2 * BLOCK_N), w.k_padded).to(torch.int16) - OFFSET
        return w.packed.numel() == q.numel() // 2 and torch.equal(back.to(torch.int8), q)
    except (RuntimeError, NotImplementedError):
        return False
