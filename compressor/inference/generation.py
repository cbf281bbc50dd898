"""A quick look at what a loaded artifact says: greedy chat-style generation."""

from __future__ import annotations

from typing import Any

import torch


def chat_prompt_ids(tokenizer: Any, prompt: str) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask of one user turn, through the tokenizer's chat template if it has one."""
    if getattr(tokenizer, "chat_template", None):
        encoded = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
    else:
        encoded = tokenizer(prompt, return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


@torch.inference_mode()
def generate_reply(model: torch.nn.Module, tokenizer: Any, prompt: str, max_new_tokens: int = 64) -> str:
    """The model's greedy reply to `prompt` (KV cache on), special tokens stripped."""
    inputs = {k: v.to(model.device) for k, v in chat_prompt_ids(tokenizer, prompt).items()}
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else model.config.eos_token_id
    out = model.generate(
        **inputs, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
        eos_token_id=eos, pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
    )
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
