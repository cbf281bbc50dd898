"""Model folders as teams keep them, built inside the tests: sharded safetensors with an index,
a tokenizer, and the unsafe variants the store must refuse (pickle weights, custom code).

Plain functions, imported as `tests.model_folders`; the weights are a tiny random Llama.
"""

from __future__ import annotations

import json
from pathlib import Path

VOCAB = 256


def tiny_tokenizer():  # noqa: ANN201
    """A word-level fast tokenizer of VOCAB entries: enough for a model folder to be complete."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, VOCAB)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def reference_model(seed: int = 0):  # noqa: ANN201
    """The tiny random Llama `sharded_folder` saves, in bf16."""
    import torch

    from tests.random_models import tiny_llama

    return tiny_llama(seed=seed, vocab_size=VOCAB, num_hidden_layers=3).to(torch.bfloat16)


def sharded_folder(path: Path, *, shards: int = 3, index: bool = True, seed: int = 0) -> Path:
    """`reference_model(seed)` saved as `shards` safetensors files (with or without the index),
    plus its tokenizer, a pickle file beside the weights and a model card (neither is taken)."""
    import torch

    model = reference_model(seed)
    total = sum(p.numel() * 2 for p in model.parameters())
    model.save_pretrained(path, max_shard_size=max(total // shards + 1, 1))
    tiny_tokenizer().save_pretrained(path)
    torch.save({"unused": torch.zeros(1)}, path / "training_args.bin")  # pickle beside safetensors: ignored
    (path / "README.md").write_text("a model card, not copied\n")
    if not index:
        (path / "model.safetensors.index.json").unlink()
    return path


def pickle_folder(path: Path) -> Path:
    """A folder whose only weights are a pickle `pytorch_model.bin`."""
    import torch

    from tests.random_models import tiny_llama

    model = tiny_llama(vocab_size=VOCAB)
    path.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(path)
    torch.save(model.state_dict(), path / "pytorch_model.bin")
    tiny_tokenizer().save_pretrained(path)
    return path


def with_auto_map(path: Path) -> Path:
    """The folder's config asks for custom code."""
    config = json.loads((path / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}
    (path / "config.json").write_text(json.dumps(config))
    (path / "modeling_custom.py").write_text("import os  # would run at load time\n")
    return path
