"""A safetensors file's header, read and checked without loading a tensor (and without torch).

The format: 8 bytes little-endian header length, a JSON header naming each tensor's dtype,
shape and byte range, then the data. Checking that every range fits the file and matches its
shape is what tells a real shard from a truncated download or a renamed pickle.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from compressor.models.sources.errors import UnsafeSourceError

MAX_HEADER_BYTES = 100 << 20  # as safetensors' own limit
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
DTYPE_NAMES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64", "F8_E4M3": "float8_e4m3fn",
               "F8_E5M2": "float8_e5m2"}


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    data_start: int = 0  # byte offset of the tensor's data in the file


def read_tensors(path: Path) -> list[TensorEntry]:
    """The tensors of a safetensors file, after checking that the header describes the file exactly."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise UnsafeSourceError(f"{path.name} is not a safetensors file (shorter than 8 bytes)")
        (length,) = struct.unpack("<Q", head)
        if length > MAX_HEADER_BYTES or length + 8 > size:
            raise UnsafeSourceError(f"{path.name} is not a safetensors file (header length {length} of a {size}-byte file)")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UnsafeSourceError(f"{path.name} is not a safetensors file (header is not JSON: {e})") from None
    if not isinstance(header, dict):
        raise UnsafeSourceError(f"{path.name}: the safetensors header is not an object")
    header.pop("__metadata__", None)
    data_bytes = size - 8 - length
    entries, end = [], 0
    for name, info in header.items():
        try:
            dtype, shape, (start, stop) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise UnsafeSourceError(f"{path.name}: tensor {name!r} has a malformed header entry") from None
        if dtype not in DTYPE_BYTES:
            raise UnsafeSourceError(f"{path.name}: tensor {name!r} has unknown dtype {dtype}")
        nbytes = math.prod(shape) * DTYPE_BYTES[dtype]
        if not (0 <= start <= stop <= data_bytes) or stop - start != nbytes:
            raise UnsafeSourceError(f"{path.name}: tensor {name!r} bytes {start}..{stop} do not fit its shape {list(shape)} "
                                    f"{dtype} or the file (truncated?)")
        end = max(end, stop)
        entries.append(TensorEntry(name, dtype, shape, nbytes, 8 + length + start))
    if end != data_bytes:
        raise UnsafeSourceError(f"{path.name}: {data_bytes - end} bytes after the last tensor (not a safetensors file?)")
    return entries


def dominant_dtype(entries: list[TensorEntry]) -> str | None:
    """The dtype holding most bytes, as torch names it (`bfloat16`)."""
    by_dtype: dict[str, int] = {}
    for e in entries:
        by_dtype[e.dtype] = by_dtype.get(e.dtype, 0) + e.nbytes
    if not by_dtype:
        return None
    top = max(by_dtype, key=by_dtype.__getitem__)
    return DTYPE_NAMES.get(top, top.lower())
