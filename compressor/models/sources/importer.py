"""Import one model folder (local, hub or bucket) into a staging folder of the store.

Order matters for safety and cost: the listing is checked first (pickle-only, no tokenizer),
then config.json (custom code, unsupported family) and the shard index, then the size limit,
and only then are the weights streamed in, hashed, and their headers checked against the
index. The result is what `store.json` records.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from compressor.models.sources.errors import UnsafeSourceError
from compressor.models.sources.remote import RemoteFolder
from compressor.models.sources.safetensors_header import TensorEntry, dominant_dtype, read_tensors
from compressor.models.sources.selection import CONFIG, INDEX, check_config, select_files
from compressor.progress import Progress

SINGLE_WEIGHTS = "model.safetensors"
STAGE = "import"


class _ByteProgress:
    """Turns bytes written into step events (at most one per 1% or 64 MB) and honours cancel per chunk."""

    def __init__(self, progress: Progress, total: int):
        self.progress, self.total, self.done, self._shown = progress, max(total, 1), 0, -1.0

    def __call__(self, n: int) -> None:
        self.done += n
        fraction = min(self.done / self.total, 1.0)
        if fraction - self._shown >= 0.01 or (fraction == 1.0 and self._shown < 1.0):
            self._shown = fraction
            self.progress.emit("step", f"{self.done / 1e6:.0f} / {self.total / 1e6:.0f} MB", fraction=fraction)
        self.progress.check_cancel()


def import_folder(folder: RemoteFolder, staging: Path, progress: Progress, max_bytes: int | None = None) -> dict[str, Any]:
    """Fetch `folder` into `staging` (an empty folder); returns the store.json fields it yields."""
    progress.stage = STAGE
    progress.emit("stage_start", f"importing {folder.where}")
    listing = folder.listing()
    select_files(listing, folder.where)  # refuse before fetching anything
    hashes: dict[str, str] = {}
    hashes[CONFIG] = folder.fetch(CONFIG, staging / CONFIG, _no_count)
    config = _read_json(staging / CONFIG, folder.where)
    check_config(config, folder.where)
    index = None
    if INDEX in listing:
        hashes[INDEX] = folder.fetch(INDEX, staging / INDEX, _no_count)
        index = _read_json(staging / INDEX, folder.where)
    selection = select_files(listing, folder.where, max_bytes, index)
    todo = [n for n in selection.files if n not in hashes]
    counter = _ByteProgress(progress, sum(listing[n] for n in todo))
    for name in todo:
        progress.emit("message", f"fetching {name} ({listing[name] / 1e6:.1f} MB)")
        hashes[name] = folder.fetch(name, staging / name, counter)
        progress.check_cancel()

    progress.emit("message", "checking the safetensors headers")
    tensors = {name: read_tensors(staging / name) for name in selection.weights}
    if index is not None:
        _check_index(index, tensors, folder.where)
    elif len(tensors) > 1:
        hashes[INDEX] = _write_index(staging, tensors, folder.where)
    elif selection.weights[0] != SINGLE_WEIGHTS:  # transformers looks for model.safetensors
        (staging / selection.weights[0]).rename(staging / SINGLE_WEIGHTS)
        hashes[SINGLE_WEIGHTS] = hashes.pop(selection.weights[0])
    entries = [e for es in tensors.values() for e in es]
    files = [{"name": n, "size": (staging / n).stat().st_size, "sha256": hashes[n]} for n in sorted(hashes)]
    progress.emit("stage_end", f"imported {len(files)} files")
    return {
        "architecture": (config.get("architectures") or [None])[0],
        "model_type": config.get("model_type"),
        "params": sum(_numel(e) for e in entries),
        "dtype": dominant_dtype(entries),
        "num_layers": config.get("num_hidden_layers"),
        "hidden_size": config.get("hidden_size"),
        "revision": folder.revision,
        "files": files,
        "total_bytes": sum(f["size"] for f in files),
        "imported_at": time.time(),
    }


def _no_count(_n: int) -> None:
    """Small files fetched before the weights are not part of the byte progress."""


def _numel(e: TensorEntry) -> int:
    n = 1
    for d in e.shape:
        n *= d
    return n


def _read_json(path: Path, where: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UnsafeSourceError(f"{where}: {path.name} is not valid JSON ({e})") from None


def _check_index(index: dict[str, Any], tensors: dict[str, list[TensorEntry]], where: str) -> None:
    """Every tensor the index names is in the shard it names, and every shard tensor is in the index."""
    weight_map: dict[str, str] = index["weight_map"]
    actual = {e.name: shard for shard, es in tensors.items() for e in es}
    wrong = [t for t, shard in weight_map.items() if actual.get(t) != shard]
    extra = [t for t in actual if t not in weight_map]
    if wrong or extra:
        raise UnsafeSourceError(f"{where}: {INDEX} does not match the shards: "
                                + (f"{len(wrong)} tensors not where it says (e.g. {wrong[0]}) " if wrong else "")
                                + (f"{len(extra)} tensors it does not list (e.g. {extra[0]})" if extra else ""))


def _write_index(staging: Path, tensors: dict[str, list[TensorEntry]], where: str) -> str:
    """Several shards and no index: write the index transformers needs to load them."""
    from compressor.models.sources.copying import hash_file

    weight_map: dict[str, str] = {}
    for shard, entries in sorted(tensors.items()):
        for e in entries:
            if e.name in weight_map:
                raise UnsafeSourceError(f"{where}: tensor {e.name} is in both {weight_map[e.name]} and {shard}")
            weight_map[e.name] = shard
    total = sum(e.nbytes for es in tensors.values() for e in es)
    (staging / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return hash_file(staging / INDEX)
