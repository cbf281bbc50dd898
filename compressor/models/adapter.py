"""Architecture adapters: where a model family keeps its norms, projections and heads.

Methods ask the adapter for "the q/k/v projections of layer i" instead of walking module
names themselves, so a new family is one adapter (`compressor/models/adapters/`), not edits
across every method. This module is the import point the methods have always used.
"""

from compressor.models.adapters import (  # noqa: F401
    ADAPTERS,
    SUPPORTED_ARCHITECTURES,
    DecoderAdapter,
    DecoderLayerParts,
    LlamaFamilyAdapter,
    UnsupportedArchitectureError,
    UnsupportedTransformError,
    adapter_for,
)
