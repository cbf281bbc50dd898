"""Which files of a model folder the store takes, and the checks made before a byte is copied.

One listing (file name → size) comes from a local folder, a hub repo or a bucket alike, so all
three sources get the same rules: top-level files only; config.json, the tokenizer files, the
safetensors shards and their index; pickle weights refused; custom code (`auto_map`) refused;
the size limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from compressor.models.compatibility import model_support
from compressor.models.sources.errors import SourceTooLarge, UnsafeSourceError, UnsupportedModelError

CONFIG = "config.json"
INDEX = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt")
EXTRA_FILES = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "generation_config.json",
               "chat_template.jinja", "chat_template.json", "preprocessor_config.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def pickle_message(where: str, names: list[str]) -> str:
    shown = ", ".join(sorted(names)[:4]) + (" …" if len(names) > 4 else "")
    return (f"{where} holds pickle weights ({shown}) and no *.safetensors: unpickling can run arbitrary code, so the "
            "store takes safetensors only. Convert them once, where you trust the files: python -c \"from transformers "
            "import AutoModelForCausalLM as M; M.from_pretrained('IN').save_pretrained('OUT')\" (writes "
            "model*.safetensors; copy the tokenizer files along), then import OUT")


@dataclass(frozen=True)
class Selection:
    """The files to fetch: every name is a top-level file of the source."""

    files: tuple[str, ...]
    weights: tuple[str, ...]
    index: str | None
    total_bytes: int


def select_files(listing: dict[str, int], where: str, max_bytes: int | None = None,
                 index: dict[str, Any] | None = None) -> Selection:
    """The store's files out of a source's `listing` (top-level name → size); refuses unsafe or incomplete sources.

    With `index` (the parsed model.safetensors.index.json) the weights are the shards it names, so a
    repo that also carries a consolidated copy (Mistral's) is not fetched twice."""
    top = {n: s for n, s in listing.items() if "/" not in n}
    weights = sorted(n for n in top if n.endswith(".safetensors"))
    if index is not None:
        weights = index_shards(index, where, top)
    if not weights:
        pickles = [n for n in top if n.endswith(PICKLE_SUFFIXES)]
        if pickles:
            raise UnsafeSourceError(pickle_message(where, pickles))
        raise UnsafeSourceError(f"{where} has no *.safetensors weights (top-level files: {', '.join(sorted(top)) or 'none'})")
    if CONFIG not in top:
        raise UnsafeSourceError(f"{where} has no config.json")
    if not any(n in top for n in TOKENIZER_FILES):
        raise UnsafeSourceError(f"{where} has no tokenizer ({' or '.join(TOKENIZER_FILES)}): jobs calibrate and "
                                "evaluate on text, so the model needs its tokenizer")
    index = INDEX if INDEX in top else None
    files = [CONFIG, *(index,) * bool(index), *weights, *(n for n in (*TOKENIZER_FILES, *EXTRA_FILES) if n in top)]
    total = sum(top[n] for n in files)
    weight_bytes = sum(top[n] for n in weights)
    if max_bytes is not None and weight_bytes > max_bytes:
        raise SourceTooLarge(f"{where}: the weights are {weight_bytes / 1e9:.2f} GB, over the limit of "
                             f"{max_bytes / 1e9:.2f} GB (COMPRESSOR_MAX_MODEL_BYTES)")
    return Selection(tuple(files), tuple(weights), index, total)


def check_config(config: dict[str, Any], where: str) -> None:
    """Refuse configs that need custom code or that the library cannot compress."""
    if not isinstance(config, dict):
        raise UnsafeSourceError(f"{where}: config.json is not a JSON object")
    if config.get("auto_map"):
        raise UnsafeSourceError(f"{where}: config.json has auto_map ({', '.join(sorted(config['auto_map']))}), i.e. the "
                                "model needs its own Python code; the store never runs remote code (trust_remote_code "
                                "is off). Use a model whose architecture transformers ships")
    support = model_support(config)
    if not support.supported:
        raise UnsupportedModelError(f"{where}: {support.reason}")


def index_shards(index: dict[str, Any], where: str, top: dict[str, int]) -> list[str]:
    """The shards an index names, each present at the top level of the source."""
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise UnsafeSourceError(f"{where}: {INDEX} has no weight_map")
    shards = sorted(set(weight_map.values()))
    bad = [s for s in shards if not isinstance(s, str) or "/" in s or not s.endswith(".safetensors")]
    if bad:
        raise UnsafeSourceError(f"{where}: {INDEX} names shards that are not top-level *.safetensors files: {bad[:3]}")
    missing = [s for s in shards if s not in top]
    if missing:
        raise UnsafeSourceError(f"{where}: {INDEX} names shards that are missing: {', '.join(missing[:4])}")
    return shards
