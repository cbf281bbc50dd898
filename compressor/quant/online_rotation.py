"""An online input rotation x ← x R, applied in the float order compressed-tensors' checkpoint reload uses.

For a Hadamard-type R (entries ±1/sqrt(n)), compressed-tensors' `HadamardTransform` multiplies
by the stored ±1 signs and divides by sqrt(n) afterwards: (x S) / sqrt(n). The product with the
normalized matrix, x (S / sqrt(n)), rounds differently in the last bit, and ahead of 4-bit
activation quantization a last-bit difference flips a few codes, which grow layer by layer
(`bench/reload_divergence.py`: rotated NVFP4 W4A4 then reloaded 0.4–4% away from its in-memory
perplexity). Applying R as the reference does makes the in-memory model and its reload one
computation. Any other R is applied as the plain product.

The sign form is cached on the rotation tensor itself (checked against its in-place version
counter), so linears that share one R (every down_proj holds the same R4) share one S.
"""

from __future__ import annotations

import math

import torch

_SIGN_FORM = "_compressor_sign_form"  # attribute on the rotation tensor: (its _version, (S, sqrt n) or None)


def is_scaled_sign_matrix(matrix: torch.Tensor) -> bool:
    """Whether every entry is ±1/sqrt(n): a Hadamard-type matrix, stored as its signs."""
    n = matrix.shape[0]
    return bool(torch.allclose(matrix.abs() * math.sqrt(n), torch.ones_like(matrix), atol=1e-5))


def sign_form(rotation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(S, sqrt n) with R = S / sqrt n, S the ±1 signs in R's dtype; None when R is not Hadamard-type."""
    cached = getattr(rotation, _SIGN_FORM, None)
    if cached is None or cached[0] != rotation._version:  # first use, or R was written in place since
        detached = rotation.detach()
        form = None
        if is_scaled_sign_matrix(detached):
            form = (torch.sign(detached), torch.tensor(rotation.shape[0], dtype=torch.float64).sqrt())
        cached = (rotation._version, form)
        setattr(rotation, _SIGN_FORM, cached)
    return cached[1]


def apply_input_rotation(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """x R in R's dtype, returned in x's dtype: (x S) / sqrt n for a Hadamard-type R, else x R."""
    form = sign_form(rotation) if not rotation.requires_grad else None
    value = x.to(rotation.dtype)
    if form is None:
        return (value @ rotation).to(x.dtype)
    signs, norm = form
    return ((value @ signs) / norm).to(x.dtype)
