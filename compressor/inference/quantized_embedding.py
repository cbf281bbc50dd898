"""An input embedding that reads its rows from the int4 or int8 lm_head it is tied to.

Why: in a small model the vocabulary table is a large share of all weight bytes (SmolLM2-135M:
49152×576, a fifth of the parameters). When the artifact's embedding equals the dequantized
int4 head (what `compressor.export.head_quant` writes), keeping a second, bf16 copy of the same
numbers for the lookup would cost two (int8) to four (int4) times the head's bytes; gathering
a few rows per step from the head's codes costs next to nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from triton_kernels.quant_linear import QuantLinear

CHECK_ROWS = 4096  # rows dequantized at a time when comparing with a stored table


class HeadTiedEmbedding(nn.Module):
    """`embed_tokens` whose rows are the quantized `head`'s dequantized rows, rounded through bf16 as stored.

    The head is held without registering it as a submodule, so it appears (and is counted)
    once, as lm_head.
    """

    def __init__(self, head: QuantLinear, dtype: torch.dtype, padding_idx: int | None = None):
        super().__init__()
        object.__setattr__(self, "head", head)
        self.num_embeddings, self.embedding_dim = head.out_features, head.in_features
        self.dtype, self.padding_idx = dtype, padding_idx

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.head.dequantized_rows(ids.reshape(-1))
        # the artifact stores the table in bf16 (what transformers loads): round the same way
        return rows.to(torch.bfloat16).to(self.dtype).reshape(*ids.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, rows read from the int{self.head.bits} lm_head"


def head_matches_table(head: QuantLinear, table: torch.Tensor) -> bool:
    """Whether the stored embedding table is the head's dequantized weight (bf16-rounded)."""
    if not (isinstance(head, QuantLinear) and table.shape == (head.out_features, head.in_features)):
        return False
    for start in range(0, table.shape[0], CHECK_ROWS):
        rows = torch.arange(start, min(start + CHECK_ROWS, table.shape[0]))
        if not torch.equal(head.dequantized_rows(rows).to(torch.bfloat16), table[rows].to(torch.bfloat16)):
            return False
    return True
