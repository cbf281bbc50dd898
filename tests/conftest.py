"""Shared fixtures: the real model imported once per test run, the bundled tokenizer, tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Triton reads this when a kernel is defined, so it must be set before anything imports
# triton_kernels; without a GPU the kernels run in Triton's interpreter.
if not os.environ.get("CUDA_VISIBLE_DEVICES") and not Path("/dev/nvidia0").exists():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parent.parent
# One store for the whole run (and for later runs on the same checkout): the GGUF import
# takes ~15-50 s, a load from the store under a second.
TEST_HOME = Path(os.environ.get("COMPRESSOR_TEST_HOME", REPO / ".cache" / "test-home"))


@pytest.fixture(params=["on", "off"])
def readback(request, monkeypatch) -> bool:
    """Runs a test with the CPU int4 layout read back (`on`: one int4 copy) and forced off (`off`:
    the fallback a CPU whose layout is unknown gets: both copies kept)."""
    from triton_kernels import cpu_int4

    monkeypatch.setenv(cpu_int4.READBACK_ENV, request.param)
    return request.param == "on"


@pytest.fixture(scope="session")
def model_store() -> Path:
    """COMPRESSOR_HOME with smollm2-135m imported; also exported to the environment for subprocesses."""
    from compressor.models.store import ModelStore

    ModelStore(TEST_HOME).import_bundled("smollm2-135m")
    os.environ["COMPRESSOR_HOME"] = str(TEST_HOME)
    return TEST_HOME


@pytest.fixture(scope="session")
def smollm(model_store: Path):
    """(model, tokenizer) of the real model, loaded once; tests must not modify the model in place."""
    from compressor.models.store import ModelStore

    return ModelStore(model_store).load("smollm2-135m")


@pytest.fixture(scope="session")
def tokenizer(smollm):
    return smollm[1]


@pytest.fixture()
def tiny_store(model_store: Path, tmp_path: Path) -> Path:
    """A store holding a tiny Llama that speaks the bundled tokenizer's vocabulary."""
    from transformers import AutoTokenizer

    from compressor.models.store import ModelStore
    from random_models import tiny_llama

    tok = AutoTokenizer.from_pretrained(model_store / "models" / "smollm2-135m")
    home = tmp_path / "home"
    ModelStore(home).add_model("tiny-llama", tiny_llama(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                                        num_attention_heads=4, head_dim=16), tok, source="test")
    return home
