"""Our int4 packing is the compressed-tensors pack-quantized layout, bit for bit."""

import pytest
import torch

from triton_kernels.packing import pack_int4, packed_width, unpack_int4

SHAPES = [(1, 1), (73, 8), (73, 203), (16, 256), (5, 9)]


@pytest.mark.parametrize("n,k", SHAPES)
def test_pack_matches_compressed_tensors(n: int, k: int) -> None:
    helpers = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers")
    q = torch.randint(-8, 8, (n, k), dtype=torch.int8, generator=torch.Generator().manual_seed(n * k))
    ours = pack_int4(q)
    theirs = helpers.pack_to_int32(q, 4)
    assert ours.dtype == theirs.dtype == torch.int32
    assert ours.shape == (n, packed_width(k))
    assert torch.equal(ours, theirs)
    assert torch.equal(unpack_int4(theirs, k), helpers.unpack_from_int32(ours, 4, torch.Size((n, k))))


@pytest.mark.parametrize("n,k", SHAPES)
def test_unpack_inverts_pack(n: int, k: int) -> None:
    q = torch.randint(-8, 8, (n, k), dtype=torch.int8)
    assert torch.equal(unpack_int4(pack_int4(q), k), q)


def test_layout_nibble_order() -> None:
    # Column 8j + i sits in nibble i of word j, offset-binary; padding nibbles are raw 0.
    q = torch.tensor([[-8, -7, 0, 1, 2, 3, 6, 7, 5]], dtype=torch.int8)
    words = pack_int4(q)
    raw = [v + 8 for v in q[0].tolist()]
    word0 = sum(r << (4 * i) for i, r in enumerate(raw[:8]))
    assert words[0, 0].item() == word0 - 2**32  # top nibble 15: negative as int32
    assert words[0, 1].item() == raw[8]


def test_pack_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        pack_int4(torch.tensor([[8]], dtype=torch.int8))
    with pytest.raises(ValueError):
        pack_int4(torch.zeros(2, 8, dtype=torch.int32))
    with pytest.raises(ValueError):
        unpack_int4(torch.zeros(2, 1, dtype=torch.int32), 9)
