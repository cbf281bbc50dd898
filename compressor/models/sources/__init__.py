"""Where models come from: local HF folders, `.gguf` files, `hf://` repos and `s3://` prefixes.

`location` parses a source, `policy` holds the REST allow-lists, `selection` decides which
files are taken and refuses unsafe ones, `local`/`hub`/`s3` list and stream files, `copying`
hashes while it copies, `safetensors_header` checks shards without loading them, and
`importer` puts it together for `ModelStore.import_source`. Nothing here imports torch.
"""

from compressor.models.sources.errors import (
    SourceError, SourceNotAllowed, SourceTooLarge, SourceUnavailable, UnknownSchemeError, UnsafeSourceError,
    UnsupportedModelError,
)
from compressor.models.sources.location import HubSource, LocalSource, ModelSource, S3Source, default_name, parse_source
from compressor.models.sources.policy import SourcePolicy

__all__ = [
    "HubSource", "LocalSource", "ModelSource", "S3Source", "SourceError", "SourceNotAllowed", "SourcePolicy",
    "SourceTooLarge", "SourceUnavailable", "UnknownSchemeError", "UnsafeSourceError", "UnsupportedModelError",
    "default_name", "parse_source",
]
