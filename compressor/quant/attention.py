"""Attention with the extras rotation and KV-cache quantization need, as a transformers attention backend.

After RoPE, queries and keys may be rotated by one orthogonal matrix (QK unchanged, outliers
spread) and keys/values fake-quantized per token and head. Each attention module carries its
own settings (`qk_rotation`, `kv_quant`); modules without them behave exactly like SDPA.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from compressor.quant.compressed_linear import is_compression_bypassed
from compressor.quant.quantizer import fake_quantize_activation

ATTENTION_BACKEND = "compressor_sdpa"


def compressed_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask, **kwargs):
    if is_compression_bypassed():
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    rotation = getattr(module, "qk_rotation", None)
    if rotation is not None:
        query = (query.to(rotation.dtype) @ rotation).to(query.dtype)
        key = (key.to(rotation.dtype) @ rotation).to(key.dtype)
    kv_quant = getattr(module, "kv_quant", None)
    if kv_quant is not None:
        key = fake_quantize_activation(key, kv_quant)
        value = fake_quantize_activation(value, kv_quant)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(ATTENTION_BACKEND, compressed_attention_forward)
AttentionMaskInterface.register(ATTENTION_BACKEND, sdpa_mask)


def use_compressed_attention(model: nn.Module) -> None:
    """Route the model's attention through `compressed_attention_forward`."""
    model.set_attn_implementation(ATTENTION_BACKEND)
