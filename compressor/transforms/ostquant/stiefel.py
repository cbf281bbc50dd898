"""Cayley-Adam: Adam-style steps on the orthogonal group, retracted with the Cayley transform.

For an orthogonal X with Euclidean gradient G, A = G Xᵀ − X Gᵀ is the skew-symmetric
direction of steepest ascent on the manifold (df/dt = −½‖A‖² along X(t) = e^{−tA} X).
We keep Adam moments of A (first moment per entry, second moment per matrix so the step
stays skew), scale the step by 1/sqrt(n) so `lr` is roughly the rotation angle per step at
any width (an n×n skew matrix of unit entries has spectral norm ~ sqrt(n)), and move along the Cayley curve X ← (I + D/2)⁻¹ (I − D/2) X, which is exactly
orthogonal for any skew D: no re-projection needed, and float64 keeps ‖XXᵀ − I‖ ~ 1e-14.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class CayleyAdam(torch.optim.Optimizer):
    def __init__(self, params: Iterable[torch.Tensor], lr: float = 0.02, betas: tuple[float, float] = (0.9, 0.99), eps: float = 1e-12):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 (torch.optim signature)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for x in group["params"]:
                if x.grad is None:
                    continue
                g = x.grad.to(x.dtype)
                a = g @ x.transpose(-1, -2) - x @ g.transpose(-1, -2)
                state = self.state[x]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(a)
                    state["v"] = torch.zeros(a.shape[:-2] + (1, 1), dtype=a.dtype, device=a.device)
                state["step"] += 1
                t = state["step"]
                state["m"].mul_(beta1).add_(a, alpha=1 - beta1)
                state["v"].mul_(beta2).add_(a.pow(2).mean(dim=(-1, -2), keepdim=True), alpha=1 - beta2)
                m_hat = state["m"] / (1 - beta1**t)
                v_hat = state["v"] / (1 - beta2**t)
                d = group["lr"] / x.shape[-1] ** 0.5 * m_hat / (v_hat.sqrt() + group["eps"])
                eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device).expand_as(d)
                x.copy_(torch.linalg.solve(eye + d / 2, (eye - d / 2) @ x))


def orthogonality_error(x: torch.Tensor) -> float:
    """max |X Xᵀ − I| over a (batch of) square matrices."""
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    return (x @ x.transpose(-1, -2) - eye).abs().max().item()
