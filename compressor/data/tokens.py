"""Deterministic token tensors: evaluation windows and calibration chunks."""

from __future__ import annotations

from typing import Any

import torch


def tokenize(tokenizer: Any, text: str) -> torch.Tensor:
    """All token ids of `text` as one 1-D tensor (no special tokens)."""
    ids = tokenizer(text, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def eval_windows(tokenizer: Any, text: str, max_tokens: int, window: int) -> torch.Tensor:
    """Non-overlapping `window`-token rows covering the first `max_tokens` tokens: [n, window]."""
    ids = tokenize(tokenizer, text)[:max_tokens]
    n = ids.numel() // window
    if n == 0:
        raise ValueError(f"evaluation text has {ids.numel()} tokens, fewer than one window of {window}")
    return ids[: n * window].view(n, window)


def calibration_chunks(tokenizer: Any, text: str, samples: int, seqlen: int) -> torch.Tensor:
    """The first `samples` consecutive `seqlen`-token chunks of the text: [samples, seqlen]."""
    ids = tokenize(tokenizer, text)
    if ids.numel() < samples * seqlen:
        raise ValueError(
            f"calibration text has {ids.numel()} tokens; samples × seqlen = {samples} × {seqlen} needs {samples * seqlen}"
        )
    return ids[: samples * seqlen].view(samples, seqlen)
