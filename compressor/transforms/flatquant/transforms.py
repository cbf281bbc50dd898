"""One linear input's learnable transform: x ← (x ⊙ c)(L ⊗ R), and its readers' weights W ← (W ⊙ s)(L⁻ᵀ ⊗ R⁻ᵀ).

c = 1/s is a per-channel smoothing (SmoothQuant start), L and R the two Kronecker factors of
widths a · b = n (from random Hadamard starts, so the step-0 transform is an orthogonal
rotation that already spreads outliers). The product of the two is exactly the identity on
the layer's output, so training moves only the quantization error. cond(L ⊗ R) =
cond(L) · cond(R); `guard` clamps each factor's singular values before a step would let the
product pass `max_condition` (the inverse on the weight side would amplify rounding error).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from compressor.quant.kronecker import kron_apply, kron_dense, kronecker_factor_sizes
from compressor.transforms.hadamard import random_hadamard_matrix


def orthogonal_start(n: int, seed: int) -> torch.Tensor:
    """A random Hadamard of order n where one exists, else a seeded random orthogonal matrix (float32)."""
    try:
        return random_hadamard_matrix(n, seed=seed).float().contiguous()
    except ValueError:
        g = torch.Generator().manual_seed(seed)
        q, r = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
        return (q * torch.sign(torch.diagonal(r))).float().contiguous()


def clamp_condition(factor: torch.Tensor, limit: float) -> bool:
    """Raise the small singular values of `factor` (in place) so that cond ≤ limit; whether it had to."""
    u, s, vh = torch.linalg.svd(factor.detach().double())
    floor = s[0] / limit
    if s[-1] >= floor:
        return False
    factor.data.copy_(((u * s.clamp(min=floor)) @ vh).to(factor.dtype))
    return True


class InputTransform(nn.Module):
    """The learnable transform of one linear input of width n (shared by the linears that read it)."""

    def __init__(self, n: int, scale: torch.Tensor | None, kronecker: bool, seed: int):
        super().__init__()
        a, b = kronecker_factor_sizes(n)
        self.n, self.kronecker = n, kronecker
        left, right = (orthogonal_start(a, seed), orthogonal_start(b, seed + 1)) if kronecker else (torch.eye(a), torch.eye(b))
        self.left, self.right = nn.Parameter(left, requires_grad=kronecker), nn.Parameter(right, requires_grad=kronecker)
        self.log_scale = nn.Parameter(torch.zeros(n) if scale is None else scale.float().log(), requires_grad=scale is not None)

    def smooth(self) -> torch.Tensor:
        """c: what the input is multiplied by before the Kronecker product."""
        return torch.exp(-self.log_scale)

    def weight_side(self, w: torch.Tensor) -> torch.Tensor:
        """A reader's [out, n] weight after the transform, differentiable (dtype of `w`)."""
        left_inv_t = torch.linalg.inv(self.left.to(w.dtype)).transpose(0, 1)
        right_inv_t = torch.linalg.inv(self.right.to(w.dtype)).transpose(0, 1)
        return kron_apply(w * torch.exp(self.log_scale).to(w.dtype), left_inv_t, right_inv_t)

    @torch.no_grad()
    def fused_weight(self, w: torch.Tensor) -> torch.Tensor:
        """`weight_side` in float64 with exact solves (for the fusion), in `w`'s dtype."""
        w64 = w.double() * torch.exp(self.log_scale.double())
        left_inv_t = torch.linalg.inv(self.left.double()).transpose(0, 1)
        right_inv_t = torch.linalg.inv(self.right.double()).transpose(0, 1)
        return kron_apply(w64, left_inv_t, right_inv_t).to(w.dtype)

    @torch.no_grad()
    def condition(self) -> float:
        return float(torch.linalg.cond(self.left.double()) * torch.linalg.cond(self.right.double()))

    @torch.no_grad()
    def guard(self, max_condition: float) -> int:
        """Clamp the factors so cond(L ⊗ R) ≤ max_condition (split evenly between them); factors repaired."""
        if not self.kronecker:
            return 0
        per_factor = math.sqrt(max_condition)
        return int(clamp_condition(self.left, per_factor)) + int(clamp_condition(self.right, per_factor))

    @torch.no_grad()
    def dense(self) -> torch.Tensor:
        """diag(c)(L ⊗ R) in float64: the online matrix (for QSUR and tests)."""
        return self.smooth().double().unsqueeze(1) * kron_dense(self.left.double(), self.right.double())


class ActivationClip(nn.Module):
    """A learned per-token clipping factor σ(θ) of one int-quantized input (FlatQuant's LCT)."""

    def __init__(self, start: float, learnable: bool):
        super().__init__()
        start = min(max(start, 1e-3), 0.995)  # σ(θ) never reaches 1 exactly; a range of 1.0 starts at 0.995
        self.theta = nn.Parameter(torch.tensor(math.log(start / (1.0 - start))), requires_grad=learnable)

    def factor(self) -> torch.Tensor:
        return torch.sigmoid(self.theta)
