"""Which families and methods a model's `config.json` allows, read without torch (the API shows it).

Minimal version kept on the sources branch: the families branch owns the real one (same
signature, per-family adapters behind it); at merge its version replaces this file.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

METHODS = ("rtn", "gptq", "hadamard", "ostquant", "affinequant", "prosparse")
# architecture -> family, for the families today's Llama-layout adapter serves
FAMILIES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2"}


class Support(BaseModel):
    ok: bool
    reason: str | None = None


class ModelSupport(BaseModel):
    architecture: str
    family: str | None
    supported: bool
    reason: str | None
    num_layers: int
    hidden_size: int
    intermediate_size: int
    head_dim: int
    methods: dict[str, Support]


def model_support(config: dict[str, Any]) -> ModelSupport:
    """What the library can do with the model `config` describes, and why not where it cannot."""
    architecture = (config.get("architectures") or [config.get("model_type") or "unknown"])[0]
    family = FAMILIES.get(architecture)
    hidden = int(config.get("hidden_size") or 0)
    heads = int(config.get("num_attention_heads") or 1)
    reason = None
    if config.get("num_local_experts") or config.get("num_experts"):
        reason = f"{architecture} is a mixture-of-experts model; experts are not supported"
    elif family is None:
        reason = f"architecture {architecture} is not supported; supported: {', '.join(FAMILIES)}"
    methods = {m: Support(ok=reason is None, reason=reason) for m in METHODS}
    if reason is None and config.get("hidden_act") not in ("relu", "silu"):
        methods["prosparse"] = Support(ok=False, reason=f"ProSparse needs a SiLU or ReLU gate, not {config.get('hidden_act')}")
    return ModelSupport(
        architecture=architecture, family=family, supported=reason is None, reason=reason,
        num_layers=int(config.get("num_hidden_layers") or 0), hidden_size=hidden,
        intermediate_size=int(config.get("intermediate_size") or 0),
        head_dim=int(config.get("head_dim") or (hidden // heads if hidden else 0)), methods=methods)
