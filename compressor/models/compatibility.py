"""Which methods apply to a model, decided from its config.json alone (torch-free), before any weight is loaded.

`model_support` answers "what can this model do here" for the store, the CLI and
`GET /v1/models/{name}`; `check_recipe_against_model` answers "will this recipe run on this
model", naming the recipe field, so a job is refused at submission rather than after hours of
calibration: a family whose layer blocks a transform, a Hadamard order the builder lacks, a
group size that does not divide a linear's width.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from compressor.models.families import PARTIAL_ROPE_BLOCKED, Family, family_of, partial_rotary_factor, unsupported_reason
from compressor.spec import AffineQuantConfig, FlatQuantConfig, HadamardConfig, OSTQuantConfig, QuantizeConfig, Recipe
from compressor.transforms.hadamard_orders import is_hadamard_size, unsupported_reason as hadamard_reason

METHODS = ("rtn", "gptq", "hadamard", "ostquant", "affinequant", "prosparse")


class Support(BaseModel):
    ok: bool
    reason: str | None = None  # why not, or (when ok) the settings the family needs


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


# ------------------------------------------------------------------ what each family's layer blocks

R1_BLOCKED = ("the RMSNorms on the attention and FFN outputs (post_attention_layernorm, post_feedforward_layernorm) scale "
              "the residual stream channel by channel, so a residual rotation (R1) cannot be fused")
QK_BLOCKED = "queries and keys pass an RMSNorm per head before RoPE, so no transform can sit between q_proj and k_proj outputs"
SOFTCAP_BLOCKED = ("attention logits are soft-capped (attn_logit_softcapping), which the compressor's attention backend "
                   "(SDPA, used for Q/K rotation and KV-cache quantization) does not compute")
OSTQUANT_GEMMA_BLOCKED = (R1_BLOCKED + "; OSTQuant's learned norm scales assume a norm that multiplies by w, not (1 + w); "
                          "and its training reads logits as lm_head(final norm) of the raw embeddings, without Gemma's "
                          "embedding scale and final-logit soft-capping, so only R2 would remain and it would be trained "
                          "against the wrong logits")


def _qk_block(family: Family, config: dict[str, Any]) -> str | None:
    if family.qk_norm:
        return QK_BLOCKED
    if partial_rotary_factor(config) < 1.0:
        return PARTIAL_ROPE_BLOCKED
    return None


def _dims(config: dict[str, Any]) -> dict[str, int]:
    heads = int(config.get("num_attention_heads") or 1)
    hidden = int(config.get("hidden_size") or 0)
    return {
        "num_layers": int(config.get("num_hidden_layers") or 0),
        "hidden_size": hidden,
        "intermediate_size": int(config.get("intermediate_size") or 0),
        "head_dim": int(config.get("head_dim") or (hidden // heads if heads else 0)),
        "num_heads": heads,
    }


def _softcapped(config: dict[str, Any]) -> bool:
    return bool(config.get("attn_logit_softcapping"))


def _hadamard_widths(d: dict[str, int], r1: bool, r2: bool, down: bool, qk: bool) -> list[tuple[str, int]]:
    wanted = [("r1 (hidden_size)", d["hidden_size"], r1), ("r2 (head_dim)", d["head_dim"], r2),
              ("online_down_proj (intermediate_size)", d["intermediate_size"], down), ("online_qk (head_dim)", d["head_dim"], qk)]
    return [(what, n) for what, n, on in wanted if on and not is_hadamard_size(n)]


def _method_support(family: Family, config: dict[str, Any], d: dict[str, int]) -> dict[str, Support]:
    bad_sizes = _hadamard_widths(d, r1=not family.post_block_norms, r2=True, down=True, qk=False)
    size_reason = "; ".join(f"{what}: {hadamard_reason(n)}" for what, n in bad_sizes) or None
    qk_block = _qk_block(family, config)
    notes = {
        "hadamard": [f"r1: false ({R1_BLOCKED})"] if family.post_block_norms else [],
        "ostquant": [],
        "affinequant": [f"qk_matrix: false ({qk_block})"] if qk_block else [],
    }
    if _softcapped(config):
        notes["hadamard"].append(f"online_qk: off and no KV-cache quantization ({SOFTCAP_BLOCKED})")
    if qk_block:
        notes["ostquant"].append("the q/k scales are held at 1 (" + qk_block + "); R1, R2, R3, R4 and the other scales are learned")
    methods = {m: Support(ok=True) for m in METHODS}
    for m in ("hadamard", "ostquant"):
        if size_reason:
            methods[m] = Support(ok=False, reason=size_reason)
        elif notes[m]:
            methods[m] = Support(ok=True, reason=("needs " if m == "hadamard" else "") + "; ".join(notes[m]))
    if family.post_block_norms:
        methods["ostquant"] = Support(ok=False, reason=OSTQUANT_GEMMA_BLOCKED)
    if notes["affinequant"]:
        methods["affinequant"] = Support(ok=True, reason="needs " + "; ".join(notes["affinequant"]))
    return methods


def model_support(config: dict[str, Any]) -> ModelSupport:
    """What the model described by `config` (a config.json dict) supports, method by method."""
    archs = config.get("architectures") or []
    arch = archs[0] if archs else str(config.get("model_type") or "unknown")
    family = family_of(arch)
    reason = unsupported_reason(config)
    d = _dims(config)
    if reason is not None or family is None:
        methods = {m: Support(ok=False, reason=reason) for m in METHODS}
        return ModelSupport(architecture=arch, family=family.name if family else None, supported=False, reason=reason,
                            methods=methods, **{k: v for k, v in d.items() if k != "num_heads"})
    return ModelSupport(architecture=arch, family=family.name, supported=True, reason=None,
                        methods=_method_support(family, config, d), **{k: v for k, v in d.items() if k != "num_heads"})


# ------------------------------------------------------------------ recipe × model


def _group_problems(field: str, weights: Any, d: dict[str, int]) -> list[str]:
    if weights is None or weights.strategy != "group":
        return []
    widths = {"hidden_size (q/k/v/gate/up inputs)": d["hidden_size"], "num_heads·head_dim (o_proj input)": d["num_heads"] * d["head_dim"],
              "intermediate_size (down_proj input)": d["intermediate_size"]}
    bad = [f"{what} {n}" for what, n in widths.items() if n % weights.group_size]
    if not bad:
        return []
    divisors = [g for g in (16, 32, 64, 128, 256) if all(n % g == 0 for n in widths.values())]
    return [f"{field}.group_size: {weights.group_size} does not divide {', '.join(bad)}, which compressed-tensors cannot "
            f"store; group sizes that divide every width: {divisors} (or export.format: none)"]


def _size_problems(field: str, d: dict[str, int], r1: bool, r2: bool, down: bool, qk: bool) -> list[str]:
    names = {"r1 (hidden_size)": "r1", "r2 (head_dim)": "r2", "online_down_proj (intermediate_size)": "online_down_proj",
             "online_qk (head_dim)": "online_qk"}
    return [f"{field}.{names[what]}: {hadamard_reason(n)}" for what, n in _hadamard_widths(d, r1, r2, down, qk)]


def check_recipe_against_model(config: dict[str, Any], recipe: Recipe | dict[str, Any]) -> list[str]:
    """Problems running `recipe` on the model of `config`, each naming the recipe field; [] when it can run."""
    recipe = Recipe.model_validate(recipe)
    reason = unsupported_reason(config)
    family = family_of((config.get("architectures") or [""])[0])
    if reason is not None or family is None:
        return [f"model: {reason}"]
    d = _dims(config)
    kv = recipe.final_kv_cache() is not None
    group_sizes_matter = recipe.export.format == "compressed-tensors"
    problems: list[str] = []
    for i, cfg in enumerate(recipe.stage_configs()):
        field = f"recipe.stages[{i}].{cfg.stage}"
        if isinstance(cfg, (HadamardConfig, OSTQuantConfig)):
            r1 = cfg.r1 if isinstance(cfg, HadamardConfig) else "r1" in cfg.rotations
            r2 = cfg.r2 if isinstance(cfg, HadamardConfig) else "r2" in cfg.rotations
            qk = cfg.online_qk == "on" or (cfg.online_qk == "auto" and kv)
            r1_field = "r1" if isinstance(cfg, HadamardConfig) else "rotations"
            if r1 and family.post_block_norms:
                problems.append(f"{field}.{r1_field}: {family.name}: {R1_BLOCKED}; turn r1 off")
            problems += _size_problems(field, d, r1 and not family.post_block_norms, r2, cfg.online_down_proj, qk)
            if qk and _softcapped(config):
                problems.append(f"{field}.online_qk: {family.name}: {SOFTCAP_BLOCKED}; set online_qk: off")
            if isinstance(cfg, OSTQuantConfig) and family.post_block_norms:
                problems.append(f"{field}: {family.name}: {OSTQUANT_GEMMA_BLOCKED}")
        if isinstance(cfg, FlatQuantConfig):  # fixed Hadamards on the KV path: value heads (R2) and Q/K after RoPE (R3)
            qk = cfg.online_qk == "on" or (cfg.online_qk == "auto" and kv)
            problems += _size_problems(field, d, False, kv, False, qk)
            if qk and _softcapped(config):
                problems.append(f"{field}.online_qk: {family.name}: {SOFTCAP_BLOCKED}; set online_qk: off")
        if isinstance(cfg, AffineQuantConfig):
            if cfg.qk_matrix and _qk_block(family, config):
                problems.append(f"{field}.qk_matrix: {family.name}: {_qk_block(family, config)}; set qk_matrix: false")
            if group_sizes_matter:
                problems += _group_problems(f"{field}.weights", cfg.weights, d)
        if isinstance(cfg, QuantizeConfig):
            if group_sizes_matter:
                problems += _group_problems(f"{field}.weights", cfg.weights, d)
            if cfg.kv_cache is not None and _softcapped(config):
                problems.append(f"{field}.kv_cache: {family.name}: {SOFTCAP_BLOCKED}")
    return problems
