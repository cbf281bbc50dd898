"""torch's CPU int4 weight layout, built from pack-quantized codes and read back from it.

Why read it back: on CPU the int4 op only needs this layout, so QuantLinear can drop the
pack-quantized copy (half its resident bytes) and still dequantize on demand, and a tied
embedding can gather its rows from an int4 lm_head instead of keeping a bf16 table.

``_convert_weight_to_int4pack_for_cpu`` turns unsigned nibbles u = q + 8 of a weight [N, K]
into N*K/2 bytes, and ``_weight_int4pack_mm_for_cpu`` computes ``(u - 8) * s + zf`` with
``qScaleAndZeros`` bf16 [K/G, N, 2] (scale, float zero). Where each nibble lands is an internal
detail of torch that depends on the CPU kernel it dispatches to (torch 2.13: 64-row blocks
pairing rows j and j+32 under AVX-512, 32-row blocks pairing j and j+16 under AVX2, adjacent
rows elsewhere). So nothing here assumes one: `layout()` asks the op itself, once per
process, by converting a few probe weights whose nibbles name their row, and fits the one
model all variants share (row blocks of B rows; for each column k, B/2 bytes; each byte holds
two rows of the block). The fit is then checked on a random weight; when anything disagrees
`layout()` is None and callers keep the pack-quantized copy (`QuantLinear.drop_pack_quantized`
says no), which costs memory, never correctness. ``COMPRESSOR_CPU_INT4_READBACK=off`` forces
that fallback (tests run both paths). N is padded to a multiple of 64 here (not just the 16
the op needs) so that every row lives in a full block for every block size seen.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from triton_kernels.packing import pack_int4, unpack_int4

GROUPS = (256, 128, 64, 32)  # group sizes the CPU op accepts
PAD_N = 64  # rows padded to a multiple of this: a multiple of every block size torch uses
OFFSET = 8
BLOCK_CANDIDATES = (16, 32, 64, 128)  # block sizes `fit_layout` tries, smallest first
PROBE_N, PROBE_K = 256, 64
READBACK_ENV = "COMPRESSOR_CPU_INT4_READBACK"

Convert = Callable[[torch.Tensor], torch.Tensor]  # unsigned nibbles int32 [N, K] -> packed uint8


class CpuInt4(NamedTuple):
    """What the CPU int4 op reads: packed uint8, bf16 [K'/G', N', 2] scales and float zeros, G', K'."""

    packed: torch.Tensor
    scales_zeros: torch.Tensor
    group: int
    k_padded: int


class NibbleLayout(NamedTuple):
    """Where row r of a block of `block_n` rows lives in each column's block_n/2 bytes: `lane[r]`, `high[r]`."""

    block_n: int
    lane: torch.Tensor  # int64 [block_n]: byte within the column's bytes
    high: torch.Tensor  # bool [block_n]: high nibble


def torch_convert(unsigned: torch.Tensor) -> torch.Tensor:
    """The op itself, flattened to bytes."""
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(unsigned.contiguous(), 1).reshape(-1)


def fit_layout(convert: Convert, n: int = PROBE_N, k: int = PROBE_K) -> NibbleLayout | None:
    """The blocked layout `convert` produces, read from probe weights; None if no block size fits.

    Two probes give each nibble's source row (low and high hex digit of the row index), two
    more its source column; a block size B fits when byte p holds column (p // (B/2)) % K and
    rows block·B + (the same two rows of the block for every column and block).
    """
    rows = torch.arange(n)[:, None].expand(n, k)
    cols = torch.arange(k)[None, :].expand(n, k)
    digits = [convert((t // 16 ** d % 16).to(torch.int32)) for t in (rows, cols) for d in (0, 1)]
    if any(d.numel() * 2 != n * k for d in digits):
        return None
    lo = [(d & 0xF).to(torch.int64) for d in digits]
    hi = [(d >> 4).to(torch.int64) for d in digits]
    row_lo, row_hi = lo[0] + 16 * lo[1], hi[0] + 16 * hi[1]
    col_lo, col_hi = lo[2] + 16 * lo[3], hi[2] + 16 * hi[3]
    p = torch.arange(n * k // 2)
    for block_n in BLOCK_CANDIDATES:
        half = block_n // 2
        if n % block_n:
            continue
        base = (p // (k * half)) * block_n
        lane_lo, lane_hi = row_lo[:half], row_hi[:half]
        col = (p // half) % k
        if not (torch.equal(col_lo, col) and torch.equal(col_hi, col)
                and torch.equal(row_lo, base + lane_lo[p % half]) and torch.equal(row_hi, base + lane_hi[p % half])):
            continue
        owner = torch.cat([lane_lo, lane_hi])
        if not torch.equal(owner.sort().values, torch.arange(block_n)):
            continue
        lane = torch.empty(block_n, dtype=torch.int64)
        high = torch.empty(block_n, dtype=torch.bool)
        lane[lane_lo], high[lane_lo] = torch.arange(half), False
        lane[lane_hi], high[lane_hi] = torch.arange(half), True
        return NibbleLayout(block_n, lane, high)
    return None


def read_unsigned(packed: torch.Tensor, layout: NibbleLayout, rows: torch.Tensor, k_padded: int) -> torch.Tensor:
    """Unsigned nibbles (u = q + 8) of weight rows `rows` (int64 [T]) as uint8 [T, K']."""
    blocks = packed.reshape(-1, k_padded, layout.block_n // 2)
    within = rows % layout.block_n
    byte = blocks[rows // layout.block_n, :, layout.lane.to(rows.device)[within]]  # [T, K']
    return torch.where(layout.high.to(rows.device)[within][:, None], byte >> 4, byte & 0xF)


def readback_enabled() -> bool:
    return os.environ.get(READBACK_ENV, "on").lower() not in ("off", "0", "false", "no")


@lru_cache(maxsize=1)
def _probed_layout() -> NibbleLayout | None:
    try:
        found = fit_layout(torch_convert)
        if found is None or not _reads_back(found):
            return None
        return found
    except (RuntimeError, NotImplementedError):
        return None


def layout() -> NibbleLayout | None:
    """This process's CPU int4 layout, or None when it cannot be read back (or readback is switched off)."""
    return _probed_layout() if readback_enabled() else None


def layout_is_known() -> bool:
    return layout() is not None


def _reads_back(found: NibbleLayout) -> bool:
    """A random weight of two blocks per padded row group, built by the op and read back exactly."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randint(-8, 8, (2 * PAD_N, 96), dtype=torch.int8, generator=gen)
    w = build(pack_int4(q), torch.ones(2 * PAD_N, 1), None, 96, 96)
    back = read_unsigned(w.packed, found, torch.arange(2 * PAD_N), w.k_padded).to(torch.int16) - OFFSET
    return w.packed.numel() * 2 == 2 * PAD_N * w.k_padded and torch.equal(back[:, :96].to(torch.int8), q)


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
    n_padded = -(-n // PAD_N) * PAD_N
    unsigned = unpack_int4(packed, k).to(torch.int32) + OFFSET
    unsigned = F.pad(unsigned, (0, k_padded - k, 0, n_padded - n), value=OFFSET)  # weight 0
    out = torch.ops.aten._convert_weight_to_int4pack_for_cpu(unsigned.contiguous(), 1)
    scales = scale.to(torch.float32)
    zeros = torch.zeros_like(scales) if zero is None else -zero.to(torch.float32) * scales
    pair = torch.stack([scales, zeros], dim=-1).repeat_interleave(repeat, dim=1)  # [N, K'/G', 2]
    pair = F.pad(pair, (0, 0, 0, 0, 0, n_padded - n))
    return CpuInt4(out, pair.transpose(0, 1).contiguous().to(torch.bfloat16), g, k_padded)


def _known_layout() -> NibbleLayout:
    found = layout()
    if found is None:
        raise RuntimeError("this torch's CPU int4 layout cannot be read back; keep the pack-quantized copy")
    return found


def dequantize_rows(w: CpuInt4, rows: torch.Tensor, k: int) -> torch.Tensor:
    """Float32 [T, K] weight rows exactly as the CPU op sees them: (u - 8) * s + zf."""
    u = read_unsigned(w.packed, _known_layout(), rows, w.k_padded).to(torch.float32) - OFFSET
    pair = w.scales_zeros[:, rows].to(torch.float32).transpose(0, 1)  # [T, K'/G', 2]
    pair = pair.repeat_interleave(w.group, dim=1)
    return (u * pair[..., 0] + pair[..., 1])[:, :k]


def to_pack_quantized(
    w: CpuInt4, n: int, k: int, group: int, has_zero: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Inverse of `build`: pack-quantized words, bf16 scales [N, K/G] and int8 zero points (or None)."""
    rows = torch.arange(n, device=w.packed.device)
    q = (read_unsigned(w.packed, _known_layout(), rows, w.k_padded)[:, :k].to(torch.int16) - OFFSET).to(torch.int8)
    _, _, repeat = native_group(k, group)
    pair = w.scales_zeros[:, :n].transpose(0, 1)[:, ::repeat]  # [N, K/G, 2] bf16
    scale = pair[..., 0].contiguous()
    zero = None
    if has_zero:
        s = scale.to(torch.float32)
        z = torch.where(s != 0, -pair[..., 1].to(torch.float32) / torch.where(s != 0, s, 1), 0)
        zero = z.round().clamp(-8, 7).to(torch.int8)
    return pack_int4(q), scale, zero
