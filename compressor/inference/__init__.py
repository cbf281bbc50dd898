"""Running exported artifacts: `load` (QuantLinear layers from the stored codes) and chat-style generation."""

from compressor.export.format import UnsupportedArtifactError
from compressor.inference.generation import generate_reply
from compressor.inference.loader import ArtifactInfo, load, load_tokenizer
from compressor.inference.sizes import weight_bytes

__all__ = ["ArtifactInfo", "UnsupportedArtifactError", "generate_reply", "load", "load_tokenizer", "weight_bytes"]
