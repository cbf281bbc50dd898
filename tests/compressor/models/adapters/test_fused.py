"""Fused projections split for a job and fused back: the parts' online input transforms must agree."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compressor.models.adapters.fused import fuse_projection, split_projection
from compressor.quant.compressed_linear import FakeQuantLinear, wrap_linear


def owner_with_split_projection() -> nn.Module:
    owner = nn.Module()
    owner.gate_up_proj = nn.Linear(8, 12, bias=False)
    split_projection(owner, "gate_up_proj", {"gate_proj": 6, "up_proj": 6})
    return owner


def kronecker(owner: nn.Module, name: str, left: torch.Tensor) -> None:
    wrap_linear(owner, name).set_input_kronecker(torch.full((8,), 0.5), left, torch.eye(4))


def test_parts_with_the_same_kronecker_factors_fuse_and_keep_them():
    owner = owner_with_split_projection()
    left = torch.tensor([[1.0, 1.0], [1.0, -1.0]]) / 2 ** 0.5
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    kronecker(owner, "gate_proj", left)
    kronecker(owner, "up_proj", left.clone())
    before = owner.gate_up_proj(x)
    fuse_projection(owner, "gate_up_proj")
    assert isinstance(owner.gate_up_proj, FakeQuantLinear)
    assert torch.equal(owner.gate_up_proj.input_kron_left, left)
    torch.testing.assert_close(owner.gate_up_proj(x), before, rtol=1e-6, atol=1e-6)


def test_parts_with_different_kronecker_factors_are_refused():
    owner = owner_with_split_projection()
    left = torch.tensor([[1.0, 1.0], [1.0, -1.0]]) / 2 ** 0.5
    kronecker(owner, "gate_proj", left)
    kronecker(owner, "up_proj", left.flip(0))
    with pytest.raises(ValueError, match="gate_up_proj: its parts carry different online input transforms"):
        fuse_projection(owner, "gate_up_proj")


def test_a_part_without_the_transform_is_refused():
    owner = owner_with_split_projection()
    kronecker(owner, "gate_proj", torch.eye(2))
    wrap_linear(owner, "up_proj")
    with pytest.raises(ValueError, match="different online input transforms"):
        fuse_projection(owner, "gate_up_proj")
