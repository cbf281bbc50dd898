"""Llama, Mistral and Qwen2: the layout `DecoderAdapter` reads as is (Qwen2 adds q/k/v biases, which
every fusion carries; Mistral's sliding window is a mask, untouched by any transform)."""

from __future__ import annotations

from compressor.models.adapters.base import DecoderAdapter
from compressor.models.families import LLAMA, MISTRAL, QWEN2


class LlamaFamilyAdapter(DecoderAdapter):
    family = LLAMA


class MistralAdapter(LlamaFamilyAdapter):
    family = MISTRAL


class Qwen2Adapter(LlamaFamilyAdapter):
    family = QWEN2
