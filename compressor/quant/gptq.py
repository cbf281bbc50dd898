"""GPTQ (Frantar et al., 2022): column-by-column quantization with second-order error feedback.

For each linear, H = 2/n Σ x xᵀ over the calibration inputs; columns are quantized in
order (optionally by decreasing H diagonal, "act-order") and each column's rounding error
is spread over the not-yet-quantized columns through the upper Cholesky factor of H⁻¹.
Lazy batches of `block_size` columns keep the updates matrix-matrix.
"""

from __future__ import annotations

import math

import torch

from compressor.execution.device import accumulation_dtype
from compressor.quant.quantizer import QuantizedWeight, quantize_codes, weight_group_size, weight_scale_zero
from compressor.spec import WeightQuantConfig


class HessianAccumulator:
    """Running 2/n Σ x xᵀ of a linear's inputs, on the inputs' device: summed in float64 on the
    CPU (symmetric positive, today's exact bits), in float32 on a GPU (fp64 GEMMs are slow there)."""

    ROWS_PER_ADD = 512

    def __init__(self, columns: int, device: torch.device | str = "cpu"):
        self.hessian: torch.Tensor | None = torch.zeros(columns, columns, dtype=accumulation_dtype(device), device=device)
        self.count = 0

    def add(self, x: torch.Tensor) -> None:
        """Fold in a batch: its product in float32 (float64 GEMMs are ~4x slower on CPU), the sum in the accumulation dtype."""
        if self.count == 0 and x.device != self.hessian.device:  # made before the inputs' device was known
            self.hessian = torch.zeros_like(self.hessian, dtype=accumulation_dtype(x.device), device=x.device)
        x = x.reshape(-1, x.shape[-1]).float()
        n = x.shape[0]
        self.hessian *= self.count / (self.count + n)
        self.count += n
        xtx, c = x.T @ x, 2.0 / self.count
        # widened and added a block of rows at a time: the same per-element ops as one whole-matrix
        # conversion, without its [cols, cols] float64 temporary (537 MB for an 8192-wide down_proj)
        for r in range(0, xtx.shape[0], self.ROWS_PER_ADD):
            self.hessian[r : r + self.ROWS_PER_ADD] += xtx[r : r + self.ROWS_PER_ADD].to(self.hessian.dtype) * c

    def take(self) -> torch.Tensor:
        """Hand the Hessian over (GPTQ then works on it in place); the accumulator is empty afterwards."""
        hessian, self.hessian = self.hessian, None
        return hessian


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor | HessianAccumulator, cfg: WeightQuantConfig) -> QuantizedWeight:
    """Quantize `weight` [out, in] given the Hessian of its inputs; returns codes and (row, group) parameters.

    Runs on the weight's device in its accumulation dtype (float64 on the CPU, float32 on a
    GPU); the codes and parameters come back on that device. A Hessian tensor is copied (the
    caller keeps it); an accumulator's Hessian is taken and worked on in place, so a layer's
    widest Hessian is not held twice.
    """
    device = weight.device
    acc = accumulation_dtype(device)
    W = weight.detach().to(acc, copy=True)
    rows, cols = W.shape
    if isinstance(hessian, HessianAccumulator):
        H = hessian.take().to(device=device, dtype=acc)
    else:
        H = hessian.to(device=device, dtype=acc, copy=True)
    del hessian
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0

    g = cols if cfg.strategy == "tensor" else weight_group_size(cfg, cols)
    n_groups = math.ceil(cols / g)
    per_group_cfg = cfg.model_copy(update={"strategy": "channel", "group_size": None})
    scale = torch.zeros(rows, n_groups, dtype=acc, device=device)
    zero = torch.zeros(rows, n_groups, dtype=acc, device=device)
    static = cfg.strategy != "group" or cfg.gptq_act_order  # act-order keeps groups in original column order
    if static:
        s, z = weight_scale_zero(W.float(), cfg, g)
        scale[:], zero[:] = s.to(acc), z.to(acc)

    perm = torch.argsort(torch.diag(H), descending=True) if cfg.gptq_act_order else torch.arange(cols, device=device)
    if cfg.gptq_act_order:  # without act-order the permutation is the identity: no [cols, cols] copies
        W, H = W[:, perm], H[perm][:, perm]
    group_of = (perm // g).tolist()  # original group of each permuted column (one host copy, not one per column)

    damp = cfg.gptq_dampening * torch.mean(torch.diag(H))
    H.diagonal().add_(damp)
    # one [cols, cols] matrix alive beside the next at each step (down_proj of an 8B model: 1.6 GB each in float64)
    L = torch.linalg.cholesky(H)
    del H
    Hinv = torch.cholesky_inverse(L)
    del L
    Hinv = torch.linalg.cholesky(Hinv, upper=True)

    dtype = torch.int16 if (cfg.bits == 8 and not cfg.symmetric) else torch.int8
    codes = torch.zeros(rows, cols, dtype=dtype, device=device)  # integer-valued: stored exactly, 1/8 of float64
    bs = cfg.gptq_block_size
    for i1 in range(0, cols, bs):
        i2 = min(i1 + bs, cols)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            grp = group_of[col]
            if not static and col % g == 0:  # parameters of a new group from its current (updated) weights
                block = W1[:, i : i + g]  # the group's columns: the rest of this block, then the next ones
                if block.shape[1] < g:
                    block = torch.cat([block, W[:, i2 : i2 + g - block.shape[1]]], dim=1)
                s, z = weight_scale_zero(block.float(), per_group_cfg)
                scale[:, grp], zero[:, grp] = s[:, 0].to(acc), z[:, 0].to(acc)
            w = W1[:, i]
            q = quantize_codes(w, scale[:, grp], zero[:, grp], cfg.bits, cfg.symmetric)
            codes[:, col] = q
            deq = (q - zero[:, grp]) * scale[:, grp]
            err = (w - deq) / Hinv1[i, i]
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]

    if cfg.gptq_act_order:
        codes = codes[:, torch.argsort(perm)]
    return QuantizedWeight(codes=codes, scale=scale.float(), zero=zero.float(), group_size=g, bits=cfg.bits, symmetric=cfg.symmetric)
