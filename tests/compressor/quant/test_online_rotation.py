"""The online rotation runs in compressed-tensors' float order, bit for bit, so a reload is the same computation."""

from __future__ import annotations

import torch
from compressed_tensors.transform import TransformArgs, TransformScheme
from compressed_tensors.transform.factory.hadamard import HadamardTransform

from compressor.quant.online_rotation import apply_input_rotation, sign_form
from compressor.transforms.hadamard import random_hadamard_matrix


def _reference(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """compressed-tensors' own HadamardTransform on the stored ±1 signs (what the reload runs)."""
    signs = torch.nn.Parameter(torch.sign(rotation).to(torch.bfloat16).to(torch.float32), requires_grad=False)
    scheme = TransformScheme(type="random-hadamard", precision=torch.float32)
    args = TransformArgs(targets=["Linear"], location="input")
    return HadamardTransform(signs, None, scheme, args, torch.nn.Linear)(x)


def test_hadamard_rotation_equals_compressed_tensors_bitwise():
    rotation = random_hadamard_matrix(192, seed=3).float()  # 192 = 12 · 16: a Paley ⊗ Sylvester order
    x = torch.randn(2, 37, 192, generator=torch.Generator().manual_seed(0)) * 5
    assert torch.equal(apply_input_rotation(x, rotation), _reference(x, rotation))
    assert not torch.equal(x @ rotation, _reference(x, rotation))  # the normalized product rounds differently


def test_dense_rotation_is_the_plain_product():
    q, _ = torch.linalg.qr(torch.randn(64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    rotation = q.float()
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(2))
    assert sign_form(rotation) is None
    assert torch.equal(apply_input_rotation(x, rotation), x @ rotation)


def test_sign_form_follows_in_place_writes():
    rotation = random_hadamard_matrix(64, seed=0).float()
    assert sign_form(rotation) is not None
    rotation.copy_(torch.linalg.qr(torch.randn(64, 64))[0])
    assert sign_form(rotation) is None
    x = torch.randn(3, 64)
    torch.testing.assert_close(apply_input_rotation(x, rotation), x @ rotation, rtol=0, atol=0)
