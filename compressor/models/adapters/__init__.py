"""One adapter per model family, and `adapter_for`, the registry that picks it by architecture."""

from __future__ import annotations

from torch import nn

from compressor.models.adapters.base import DecoderAdapter, UnsupportedArchitectureError, UnsupportedTransformError
from compressor.models.adapters.gemma import Gemma2Adapter, Gemma3Adapter
from compressor.models.adapters.llama import LlamaFamilyAdapter, MistralAdapter, Qwen2Adapter
from compressor.models.adapters.parts import DecoderLayerParts
from compressor.models.adapters.phi3 import Phi3Adapter
from compressor.models.adapters.qwen3 import Qwen3Adapter
from compressor.models.families import SUPPORTED_ARCHITECTURES, unsupported_reason

ADAPTERS: dict[str, type[DecoderAdapter]] = {
    arch: cls
    for cls in (LlamaFamilyAdapter, MistralAdapter, Qwen2Adapter, Qwen3Adapter, Gemma2Adapter, Gemma3Adapter, Phi3Adapter)
    for arch in cls.family.architectures
}
assert set(ADAPTERS) == set(SUPPORTED_ARCHITECTURES), "every family record needs its adapter"


def adapter_for(model: nn.Module) -> DecoderAdapter:
    """The adapter of `model`'s family; refuses unknown architectures and mixture-of-experts models with the reason."""
    arch = type(model).__name__
    config = model.config.to_dict()
    config["architectures"] = [arch]
    reason = unsupported_reason(config)
    if reason is not None:
        raise UnsupportedArchitectureError(reason)
    return ADAPTERS[arch](model)


__all__ = [
    "ADAPTERS", "SUPPORTED_ARCHITECTURES", "DecoderAdapter", "DecoderLayerParts", "LlamaFamilyAdapter",
    "UnsupportedArchitectureError", "UnsupportedTransformError", "adapter_for",
]
