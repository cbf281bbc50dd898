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
from compressor.quant.float_formats import fake_quantize_float_activation, kv_cache_args
from compressor.quant.quantizer import fake_quantize_activation
from compressor.spec import KVCacheQuantConfig

ATTENTION_BACKEND = "compressor_sdpa"
# The attributes an attention module carries; export reads them back (`kv_cache_quant`).
QK_ROTATION = "qk_rotation"  # a non-persistent buffer: [head_dim, head_dim], applied to Q and K after RoPE
KV_QUANT = "kv_quant"  # a KVCacheQuantConfig, or None
KV_SCALES = "kv_scales"  # fp8: {"k": scale [1], "v": scale [1]} from calibration (compressed-tensors' k_scale, v_scale)
KV_OBSERVER = "kv_observer"  # set while fp8 KV scales are calibrated: called with (key, value), nothing is quantized


def compressed_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask, **kwargs):
    if is_compression_bypassed():
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    rotation = getattr(module, QK_ROTATION, None)
    if rotation is not None:
        query = (query.to(rotation.dtype) @ rotation).to(query.dtype)
        key = (key.to(rotation.dtype) @ rotation).to(key.dtype)
    kv_quant = getattr(module, KV_QUANT, None)
    observer = getattr(module, KV_OBSERVER, None)
    if observer is not None:
        observer(key, value)
    elif kv_quant is not None and kv_quant.format == "fp8":
        scales = getattr(module, KV_SCALES, None)
        if scales is None:
            raise RuntimeError("an fp8 KV cache needs calibrated k/v scales (the quantize stage calibrates them)")
        args = kv_cache_args(kv_quant)
        key = fake_quantize_float_activation(key, args, scales["k"])
        value = fake_quantize_float_activation(value, args, scales["v"])
    elif kv_quant is not None:
        key = fake_quantize_activation(key, kv_quant)
        value = fake_quantize_activation(value, kv_quant)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(ATTENTION_BACKEND, compressed_attention_forward)
AttentionMaskInterface.register(ATTENTION_BACKEND, sdpa_mask)


def use_compressed_attention(model: nn.Module) -> None:
    """Route the model's attention through `compressed_attention_forward`."""
    model.set_attn_implementation(ATTENTION_BACKEND)


def set_qk_rotation(attention: nn.Module, rotation: torch.Tensor) -> None:
    device = next(attention.parameters()).device  # moved once, not per forward
    attention.register_buffer(QK_ROTATION, rotation.to(device=device, dtype=torch.float32), persistent=False)


def set_kv_quant(attention: nn.Module, cfg: KVCacheQuantConfig | None) -> None:
    setattr(attention, KV_QUANT, cfg)
    setattr(attention, KV_SCALES, None)


def kv_cache_quant(model: nn.Module) -> KVCacheQuantConfig | None:
    """The KV-cache quantization the model's attention modules carry (what export must describe).

    Every layer gets the same setting from the quantize stage; a model whose layers differ
    cannot be described by one `kv_cache_scheme`, so that is an error rather than a guess.
    """
    found = {id(m): getattr(m, KV_QUANT) for m in model.modules() if hasattr(m, KV_QUANT)}
    settings = [cfg for cfg in found.values() if cfg is not None]
    if not settings:
        return None
    if len(settings) != len(found) or any(cfg != settings[0] for cfg in settings):
        raise ValueError("attention layers carry different KV-cache quantizers; one kv_cache_scheme cannot describe them")
    return settings[0]
