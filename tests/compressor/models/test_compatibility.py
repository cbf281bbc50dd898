"""`model_support` and `check_recipe_against_model` from config.json alone: refusals name the field and the reason."""

from __future__ import annotations

import pytest

from compressor.models.compatibility import METHODS, check_recipe_against_model, model_support
from compressor.spec import load_recipe


def config(arch: str, hidden: int, intermediate: int, heads: int, head_dim: int | None = None, **extra) -> dict:
    cfg = {"architectures": [arch], "hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": 2,
           "num_attention_heads": heads, "num_key_value_heads": 2, "hidden_act": "silu", **extra}
    if head_dim:
        cfg["head_dim"] = head_dim
    return cfg


GEMMA = {"hidden_activation": "gelu_pytorch_tanh", "hidden_act": None}
# real shapes of served models (config.json fields only; no weights)
REAL = {
    "llama-3.1-8b": config("LlamaForCausalLM", 4096, 14336, 32, 128),
    "mistral-7b": config("MistralForCausalLM", 4096, 14336, 32, 128),
    "qwen2.5-7b": config("Qwen2ForCausalLM", 3584, 18944, 28),
    "qwen2.5-1.5b": config("Qwen2ForCausalLM", 1536, 8960, 12),
    "qwen3-8b": config("Qwen3ForCausalLM", 4096, 12288, 32, 128),
    "gemma-2-2b": config("Gemma2ForCausalLM", 2304, 9216, 8, 256, attn_logit_softcapping=50.0, **GEMMA),
    "gemma-2-9b": config("Gemma2ForCausalLM", 3584, 14336, 16, 256, attn_logit_softcapping=50.0, **GEMMA),
    "gemma-3-4b": config("Gemma3ForCausalLM", 2560, 10240, 8, 256, **GEMMA),
    "phi-3-mini": config("Phi3ForCausalLM", 3072, 8192, 32),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_shapes_are_supported_method_by_method(name):
    support = model_support(REAL[name])
    assert support.supported and set(support.methods) == set(METHODS)
    assert all(support.methods[m].ok for m in ("rtn", "gptq", "hadamard", "affinequant", "prosparse"))
    assert support.methods["ostquant"].ok == (not name.startswith("gemma"))
    if name.startswith("gemma"):
        assert "r1: false" in support.methods["hadamard"].reason
    assert check_recipe_against_model(REAL[name], load_recipe("w4a16-gptq")) == []


def test_hadamard_width_the_builder_lacks_is_refused_naming_field_and_size():
    cfg = config("LlamaForCausalLM", 4096, 13696, 32, 128)
    support = model_support(cfg)
    assert not support.methods["hadamard"].ok and "13696" in support.methods["hadamard"].reason
    problems = check_recipe_against_model(cfg, {"stages": [{"hadamard": {}}, {"quantize": {}}]})
    assert len(problems) == 1 and problems[0].startswith("recipe.stages[0].hadamard.online_down_proj: ") and "13696" in problems[0]
    assert check_recipe_against_model(cfg, {"stages": [{"hadamard": {"online_down_proj": False}}, {"quantize": {}}]}) == []


def test_group_size_that_does_not_divide_a_width_is_refused_with_divisors():
    cfg = config("Phi3ForCausalLM", 3072, 8192, 32)
    recipe = {"stages": [{"quantize": {"weights": {"bits": 4, "strategy": "group", "group_size": 256}}}]}
    assert check_recipe_against_model(cfg, recipe) == []
    cfg = config("Qwen2ForCausalLM", 896, 4864, 14)  # 896 = 3.5 · 256
    problems = check_recipe_against_model(cfg, recipe)
    assert len(problems) == 1 and problems[0].startswith("recipe.stages[0].quantize.weights.group_size: 256 does not divide")
    assert "hidden_size (q/k/v/gate/up inputs) 896" in problems[0] and "[16, 32, 64, 128]" in problems[0]
    assert check_recipe_against_model(cfg, {**recipe, "export": {"format": "none"}}) == []  # fake-quant pads the last group


def test_family_blocks_are_refused_naming_the_field():
    qwen3, gemma2, gemma3 = REAL["qwen3-8b"], REAL["gemma-2-9b"], REAL["gemma-3-4b"]
    problems = check_recipe_against_model(qwen3, load_recipe("w4a16-affinequant"))
    assert len(problems) == 1 and problems[0].startswith("recipe.stages[0].affinequant.qk_matrix: qwen3:")
    assert check_recipe_against_model(qwen3, load_recipe("w4a4kv4-ostquant")) == []  # q/k scales held at 1, R3 after RoPE
    fields = [p.split(":")[0] for p in check_recipe_against_model(gemma2, load_recipe("w4a4kv4-hadamard-gptq"))]
    assert fields == ["recipe.stages[0].hadamard.r1", "recipe.stages[0].hadamard.online_qk", "recipe.stages[1].quantize.kv_cache"]
    fields = [p.split(":")[0] for p in check_recipe_against_model(gemma3, load_recipe("w4a4kv4-hadamard-gptq"))]
    assert fields == ["recipe.stages[0].hadamard.r1"]  # no attention soft-capping in Gemma 3: R3 and KV4 pass
    assert any(p.startswith("recipe.stages[0].ostquant: gemma3") for p in check_recipe_against_model(gemma3, load_recipe("w4a16-ostquant")))


@pytest.mark.parametrize(("cfg", "words"), [
    ({"architectures": ["GPT2LMHeadModel"]}, "GPT2LMHeadModel is not supported"),
    (config("Qwen2MoeForCausalLM", 2048, 5632, 16, num_experts=60), "mixture-of-experts"),
    (config("MixtralForCausalLM", 4096, 14336, 32, num_local_experts=8), "mixture-of-experts"),
    (config("Gemma3ForConditionalGeneration", 2560, 10240, 8), "multimodal"),
    (config("LlamaForCausalLM", 64, 128, 4, hidden_act="gelu"), "hidden_act 'gelu'"),
])
def test_unsupported_models_are_refused_with_the_reason(cfg, words):
    support = model_support(cfg)
    assert not support.supported and words in support.reason
    assert check_recipe_against_model(cfg, load_recipe("w4a16-rtn")) == [f"model: {support.reason}"]
