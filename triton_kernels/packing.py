"""int4 packing in the compressed-tensors ``pack-quantized`` layout.

One on-disk layout feeds our Triton kernels, the CPU dispatch in ``quant_linear`` and vLLM:
a weight [N, K] of signed int4 values in [-8, 7] is stored offset-binary (value + 8), eight
nibbles per int32 along K, nibble i of word j holding column 8j + i (lowest bits first).
K is padded to a multiple of 8 with raw nibble 0, exactly as
``compressed_tensors.compressors.pack_quantized.helpers.pack_to_int32(q, 4)`` does, so the
two agree bit for bit (tested).

compressed-tensors packs asymmetric zero points along N instead (``packed_dim=0``):
``pack_int4(z.t().contiguous()).t()`` produces that tensor from a [N, K/G] int8 zero point.
"""

from __future__ import annotations

import torch

NIBBLES_PER_WORD = 8
INT4_OFFSET = 8


def packed_width(k: int) -> int:
    """Number of int32 words that hold ``k`` nibbles."""
    return -(-k // NIBBLES_PER_WORD)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Pack signed int4 values ``q`` (int8 [N, K], entries in [-8, 7]) into int32 [N, ceil(K/8)]."""
    if q.dtype != torch.int8 or q.dim() != 2:
        raise ValueError(f"pack_int4 expects a 2-D int8 tensor, got {q.dtype} with {q.dim()} dims")
    if q.numel() and (int(q.min()) < -8 or int(q.max()) > 7):
        raise ValueError("pack_int4: values must lie in [-8, 7]")
    n, k = q.shape
    words = packed_width(k)
    raw = (q.to(torch.int64) + INT4_OFFSET)
    pad = words * NIBBLES_PER_WORD - k
    if pad:
        raw = torch.nn.functional.pad(raw, (0, pad))  # raw nibble 0, as compressed-tensors pads
    shifts = torch.arange(0, 32, 4, dtype=torch.int64, device=q.device)
    unsigned = (raw.view(n, words, NIBBLES_PER_WORD) << shifts).sum(dim=-1)
    # Reinterpret the unsigned 32-bit word as two's-complement int32.
    signed = torch.where(unsigned >= 2**31, unsigned - 2**32, unsigned)
    return signed.to(torch.int32)


def unpack_int4(packed: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: int32 [N, ceil(k/8)] -> int8 [N, k] in [-8, 7]."""
    if packed.dtype != torch.int32 or packed.dim() != 2:
        raise ValueError(f"unpack_int4 expects a 2-D int32 tensor, got {packed.dtype}")
    n, words = packed.shape
    if words != packed_width(k):
        raise ValueError(f"unpack_int4: {words} words cannot hold k={k} nibbles")
    shifts = torch.arange(0, 32, 4, dtype=torch.int32, device=packed.device)
    nibbles = (packed.unsqueeze(-1) >> shifts) & 0xF  # arithmetic shift is fine: we mask 4 bits
    return (nibbles.reshape(n, words * NIBBLES_PER_WORD)[:, :k] - INT4_OFFSET).to(torch.int8)
