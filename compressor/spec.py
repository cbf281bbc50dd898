"""The job contract: `JobSpec`, its `Recipe`, and one pydantic config per recipe stage.

This module imports no torch, so the API can validate requests with the very classes the
worker receives. Every model forbids unknown fields, so a typo is an error naming the field
rather than a silently ignored option.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

SPEC_VERSION = 1
MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class StrictModel(BaseModel):
    """Base for every spec model: unknown fields are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- quantizers


class WeightQuantConfig(StrictModel):
    """How linear weights are quantized (all linears of the decoder; lm_head stays full precision)."""

    bits: int = Field(4, ge=2, le=8, description="integer bit width, 2 to 8")
    symmetric: bool = Field(True, description="symmetric (zero point fixed) or asymmetric")
    strategy: Literal["tensor", "channel", "group"] = Field(
        "channel", description="one scale per tensor, per output channel, or per group of inputs"
    )
    group_size: int | None = Field(
        None, ge=8, le=8192, description="inputs per group; required when strategy is 'group'"
    )
    method: Literal["rtn", "gptq"] = Field("rtn", description="round-to-nearest or GPTQ")
    clip_search: bool = Field(False, description="MSE search of a shrunken clipping range per row/group")
    clip_grid: int = Field(40, ge=2, le=200, description="candidate shrink factors tried by the clip search")
    clip_max_shrink: float = Field(0.8, gt=0.0, lt=1.0, description="smallest range tried = 1 - max_shrink")
    clip_norm: float = Field(2.4, gt=0.0, description="error norm exponent of the clip search")
    gptq_block_size: int = Field(128, ge=1, le=4096, description="GPTQ lazy-batch block size")
    gptq_dampening: float = Field(0.01, ge=0.0, le=1.0, description="GPTQ diagonal dampening, fraction of the mean")
    gptq_act_order: bool = Field(
        True,
        description="GPTQ: quantize columns in order of decreasing Hessian diagonal (groups stay static). On by "
        "default: without it, error feedback flows into the few massive-activation columns and per-channel GPTQ "
        "on SmolLM2 is worse than RTN (35.6 vs 34.9 wiki ppl; 27.8 with act-order)",
    )

    @model_validator(mode="after")
    def _group_size_matches_strategy(self) -> WeightQuantConfig:
        if self.strategy == "group" and self.group_size is None:
            raise ValueError("group_size is required when strategy is 'group' (e.g. 32, 64, 128)")
        if self.strategy != "group" and self.group_size is not None:
            raise ValueError(f"group_size is only allowed with strategy 'group', not '{self.strategy}'")
        return self


class ActivationQuantConfig(StrictModel):
    """Dynamic per-token quantization of every linear input (computed at run time, no calibration)."""

    bits: int = Field(8, ge=2, le=8, description="integer bit width, 2 to 8")
    symmetric: bool = Field(False, description="symmetric or asymmetric per-token range")
    clip_ratio: float = Field(1.0, gt=0.0, le=1.0, description="fraction of the per-token range kept")


class KVCacheQuantConfig(StrictModel):
    """Dynamic quantization of keys (after RoPE) and values, one range per token and head."""

    bits: int = Field(8, ge=2, le=8, description="integer bit width, 2 to 8")
    symmetric: bool = Field(False, description="symmetric or asymmetric per-head range")
    clip_ratio: float = Field(1.0, gt=0.0, le=1.0, description="fraction of the per-head range kept")


# --------------------------------------------------------------------------- stages


class QuantizeConfig(StrictModel):
    """Quantize weights (RTN or GPTQ), and optionally activations and the KV cache."""

    weights: WeightQuantConfig | None = Field(default_factory=WeightQuantConfig)
    activations: ActivationQuantConfig | None = None
    kv_cache: KVCacheQuantConfig | None = None

    @model_validator(mode="after")
    def _something_to_do(self) -> QuantizeConfig:
        if self.weights is None and self.activations is None and self.kv_cache is None:
            raise ValueError("quantize needs at least one of weights, activations, kv_cache")
        return self


class HadamardConfig(StrictModel):
    """Fixed random-Hadamard rotations in the QuaRot style (fused offline + online where needed)."""

    seed: int = Field(0, ge=0, description="seed of the random sign flips")
    r1: bool = Field(True, description="rotate the residual stream (fused into all weights)")
    r2: bool = Field(True, description="rotate each value head on the v_proj -> o_proj path (fused)")
    online_down_proj: bool = Field(True, description="online Hadamard on the down_proj input")
    online_qk: Literal["auto", "on", "off"] = Field(
        "auto", description="Hadamard on Q and K after RoPE; 'auto' = only when the KV cache is quantized"
    )


class AffineQuantConfig(StrictModel):
    """AffineQuant: learned equivalent affine transforms and weight clipping, trained block by block (OmniQuant loop)."""

    weights: WeightQuantConfig = Field(default_factory=WeightQuantConfig, description="weight quantizer (method rtn: rounding with learned clipping)")
    activations: ActivationQuantConfig | None = Field(None, description="dynamic per-token input quantization (W4A4); none = weight-only")
    epochs: int = Field(20, ge=1, le=200, description="passes over the calibration set per decoder layer")
    batch_size: int = Field(1, ge=1, le=64, description="calibration samples per optimizer step")
    mask: Literal["gradual", "diagonal"] = Field(
        "gradual", description="'gradual': unlocked band grows from the diagonal to dense; 'diagonal': held at the diagonal (OmniQuant-style scales)"
    )
    stability_factor: float = Field(0.01, gt=0.0, le=1.0, description="damping of unlocked off-diagonals (sf)")
    ln_matrix: Literal["diagonal", "dense"] = Field(
        "diagonal", description="norm -> q/k/v and norm -> gate/up: 'diagonal' folds into the norm (servable); 'dense' needs a matmul at run time (research)"
    )
    qk_matrix: bool = Field(True, description="learn a RoPE-commuting matrix per KV head between q_proj and k_proj")
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="SmoothQuant migration strength of the diagonal's initial value")
    transform_lr: float = Field(5e-3, gt=0.0, le=10.0, description="AdamW learning rate of the affine matrices")
    clip_lr: float = Field(1e-2, gt=0.0, le=10.0, description="AdamW learning rate of the learnable weight clipping")
    lr_schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="per layer: cosine decay to 0 over all its steps (steadier with few steps), or constant as in the paper"
    )
    learnable_clipping: bool = Field(True, description="learn per-row (or per-group) clipping factors of the weight range")
    loss: Literal["mse", "kl_top"] = Field(
        "mse", description="'mse' of the block outputs, or 'kl_top' of the logits the final norm and lm_head read from them"
    )
    kl_top_k: int = Field(1000, ge=1, le=1_000_000, description="teacher top-k tokens kept by the kl_top loss")
    kl_top_positions: int = Field(64, ge=1, le=8192, description="token positions per sample scored by the kl_top loss")
    aug_loss: bool = Field(False, description="also fit the original layer's output on the quantized inputs")
    min_dominance: float = Field(
        0.01, gt=0.0, lt=1.0, description="rows whose diagonal-dominance margin (relative to the diagonal) falls below this are repaired"
    )

    @model_validator(mode="after")
    def _consistent(self) -> AffineQuantConfig:
        if self.mask == "gradual" and self.epochs < 2:
            raise ValueError("the gradual mask needs epochs >= 2 (diagonal at the first epoch, dense at the last)")
        if self.weights.method != "rtn":
            raise ValueError("affinequant rounds weights itself (method 'rtn' with learned clipping); run GPTQ in a later quantize stage instead")
        if self.weights.clip_search:
            raise ValueError("affinequant learns the clipping range; set weights.clip_search: false")
        if self.weights.strategy == "tensor":
            raise ValueError("affinequant learns a clipping range per row or group; use strategy 'channel' or 'group'")
        return self


class OSTQuantConfig(StrictModel):
    """OSTQuant: learnable orthogonal (Stiefel) and scaling transforms trained end to end with KL-Top.

    What is fake-quantized during training follows the next `quantize` stage of the recipe:
    weights for weight-only targets; activations and KV cache for W4A4-style targets (their
    weights are then quantized by that stage, typically GPTQ, on the fused model).
    """

    rotations: list[Literal["r1", "r2"]] = Field(default_factory=lambda: ["r1", "r2"], description="learned rotations: r1 residual, r2 per KV head on v->o")
    scales: bool = Field(True, description="learn the smoothing scales (norm->qkv, norm->up/gate, v->o, up->down, q/k per rotary pair)")
    online_down_proj: bool = Field(True, description="fixed online Hadamard on the down_proj input (R4)")
    online_qk: Literal["auto", "on", "off"] = Field("auto", description="Hadamard on Q/K after RoPE (R3); 'auto' = when the KV cache is quantized")
    init: Literal["hadamard", "klt"] = Field("hadamard", description="rotation start: random Hadamard, or KLT (weight-row eigenvectors) times Hadamard")
    loss: Literal["kl_top", "cross_entropy", "kl"] = Field("kl_top", description="calibration objective against the unquantized model")
    k: int = Field(1000, ge=1, le=1_000_000, description="teacher top-k tokens of the KL-Top loss")
    renormalize: bool = Field(False, description="KL-Top: softmax over the top-k entries only")
    steps: int = Field(60, ge=0, le=100_000, description="optimizer steps")
    batch_size: int = Field(1, ge=1, le=256, description="calibration chunks per step")
    rotation_lr: float = Field(0.02, gt=0.0, le=10.0, description="Cayley-Adam learning rate of the rotations")
    scale_lr: float = Field(0.005, gt=0.0, le=10.0, description="Adam learning rate of the log-scales")
    lr_schedule: Literal["linear", "constant"] = Field("linear", description="'linear': both rates decay linearly to 0 over the steps (the paper's HF Trainer default); 'constant'")
    seed: int = Field(0, ge=0, description="seed of the random Hadamard starts")
    qsur_samples: int = Field(4, ge=0, le=256, description="calibration chunks used for the QSUR table (0 = skip)")


class ProSparseConfig(StrictModel):
    """ProSparse: ReLU on the gate, sine-scheduled L1 on the FFN intermediate activation, FATReLU at the end.

    The λ schedule has one peak per stage: stage 1 holds `lambdas[0]` for `stage_steps[0]`
    steps (warm-up; 0 = ReLU-only adaptation), each later stage ramps from the previous peak
    to its own along a half sine. Total fine-tuning steps = sum(stage_steps). Defaults fit a
    135M model on CPU (a few hundred short steps); raise them on GPUs.
    """

    lambdas: list[float] = Field(default_factory=lambda: [0.0, 0.5, 2.0, 2.0], min_length=1, max_length=32, description="L1 peak per stage")
    stage_steps: list[int] = Field(default_factory=lambda: [20, 20, 60, 20], min_length=1, max_length=32, description="optimizer steps per stage")
    fatrelu_threshold: float = Field(0.01, ge=0.0, le=10.0, description="final activation threshold: gate outputs <= t become 0 (0 = plain ReLU)")
    finetune: Literal["full", "hft"] = Field("full", description="train every parameter, or HFT: a re-drawn half of each layer frozen per stage")
    lr: float = Field(1e-4, gt=0.0, le=1.0, description="AdamW peak learning rate (linear warm-up, cosine decay to 10%)")
    warmup_steps: int = Field(10, ge=0, le=100_000, description="learning-rate warm-up steps")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    batch_size: int = Field(1, ge=1, le=256, description="calibration chunks per step (chunk length = calibration.seqlen)")
    grad_clip: float = Field(1.0, gt=0.0, le=1000.0, description="max global gradient norm")
    seed: int = Field(0, ge=0, description="seed of batch order and HFT draws")
    sparsity_eval_tokens: int = Field(4096, ge=64, le=1_048_576, description="wiki test tokens on which per-layer activation sparsity is measured")
    ppl_p: float | None = Field(None, gt=0.0, le=100.0, description="also report CETT-based PPL-p% sparsity (p, e.g. 1); costs ~10 evaluations")
    cett_eval_tokens: int = Field(4096, ge=64, le=1_048_576, description="tokens scored per step of the PPL-p% search")

    @model_validator(mode="after")
    def _schedule_shape(self) -> ProSparseConfig:
        if len(self.lambdas) != len(self.stage_steps):
            raise ValueError(f"lambdas ({len(self.lambdas)}) and stage_steps ({len(self.stage_steps)}) need one entry per stage")
        if any(v < 0 for v in self.lambdas):
            raise ValueError("lambdas must be >= 0")
        if any(n < 1 for n in self.stage_steps):
            raise ValueError("every stage needs at least one step")
        return self


StageName = Literal["hadamard", "quantize", "affinequant", "ostquant", "prosparse"]


class HadamardStage(StrictModel):
    hadamard: HadamardConfig = Field(default_factory=HadamardConfig)


class QuantizeStage(StrictModel):
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)


class AffineQuantStage(StrictModel):
    affinequant: AffineQuantConfig = Field(default_factory=AffineQuantConfig)


class OSTQuantStage(StrictModel):
    ostquant: OSTQuantConfig = Field(default_factory=OSTQuantConfig)


class ProSparseStage(StrictModel):
    prosparse: ProSparseConfig = Field(default_factory=ProSparseConfig)


def _stage_tag(value: Any) -> str | None:
    """The stage name of a recipe entry: the single key of its mapping."""
    if isinstance(value, dict):
        return next(iter(value)) if len(value) == 1 else None
    if isinstance(value, BaseModel):
        return next(iter(type(value).model_fields))
    return None


Stage = Annotated[
    Union[
        Annotated[HadamardStage, Tag("hadamard")],
        Annotated[QuantizeStage, Tag("quantize")],
        Annotated[AffineQuantStage, Tag("affinequant")],
        Annotated[OSTQuantStage, Tag("ostquant")],
        Annotated[ProSparseStage, Tag("prosparse")],
    ],
    Discriminator(
        _stage_tag,
        custom_error_type="invalid_stage",
        custom_error_message="each stage is a mapping with exactly one key, one of: hadamard, quantize, affinequant, ostquant, prosparse",
    ),
]


def stage_config(stage: BaseModel) -> StrictModel:
    """The config object inside a one-key stage wrapper."""
    return getattr(stage, next(iter(type(stage).model_fields)))


# --------------------------------------------------------------------------- data and eval


class CalibrationConfig(StrictModel):
    """Which text calibrates the methods that need data (GPTQ, learned transforms)."""

    dataset: str = Field("wiki", description="'wiki' (bundled), or the name of a user text file in the store's data/ folder")
    samples: int = Field(128, ge=1, le=4096, description="number of token chunks")
    seqlen: int = Field(512, ge=16, le=8192, description="tokens per chunk")

    @field_validator("dataset")
    @classmethod
    def _no_paths(cls, v: str) -> str:
        if v not in ("wiki", "news") and not re.fullmatch(r"[A-Za-z0-9._-]+\.(txt|jsonl)", v):
            raise ValueError("dataset must be 'wiki', 'news', or a file name like 'mytext.jsonl' (no paths)")
        if ".." in v:
            raise ValueError("dataset must not contain '..'")
        return v


class EvalConfig(StrictModel):
    """Perplexity and KL protocol: non-overlapping windows over the first `max_tokens` tokens."""

    datasets: list[Literal["wiki", "news"]] = Field(default_factory=lambda: ["wiki", "news"])
    max_tokens: int = Field(16384, ge=64, le=1_048_576, description="tokens of each evaluation text used")
    window: int = Field(512, ge=16, le=8192, description="tokens per non-overlapping window")
    kl: bool = Field(True, description="KL divergence of the compressed model to the original")
    original: bool = Field(True, description="also evaluate the original model (before/after in the report)")


class ExportConfig(StrictModel):
    """How the compressed checkpoint is written."""

    format: Literal["compressed-tensors", "none"] = Field(
        "compressed-tensors", description="packed integer checkpoint with a manifest, or no checkpoint"
    )


class Recipe(StrictModel):
    """An ordered list of stages plus the calibration, evaluation and export settings."""

    version: Literal[1] = SPEC_VERSION
    name: str | None = Field(None, max_length=128)
    stages: list[Stage] = Field(default_factory=list, max_length=32)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    seed: int = Field(0, ge=0, le=2**31 - 1)

    def stage_configs(self) -> list[StrictModel]:
        return [stage_config(s) for s in self.stages]

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def sha256(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


class JobSpec(StrictModel):
    """What a client submits: a model from the store and a recipe."""

    version: Literal[1] = SPEC_VERSION
    model: str = Field(..., pattern=MODEL_NAME_PATTERN, description="a model name in the model store, e.g. smollm2-135m")
    recipe: Recipe


# --------------------------------------------------------------------------- recipe files

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


def load_recipe(path_or_name: str | Path) -> Recipe:
    """A recipe from a YAML/JSON file, or a ready-made one by name (`w4a16-gptq`)."""
    path = Path(path_or_name)
    if not path.exists():
        candidate = RECIPES_DIR / f"{path_or_name}.yaml"
        if not candidate.exists():
            known = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
            raise FileNotFoundError(f"no recipe file '{path_or_name}' and no ready-made recipe of that name; ready-made: {known}")
        path = candidate
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe is a mapping with keys such as stages, calibration, eval")
    data.setdefault("name", path.stem)
    return Recipe.model_validate(data)


def ready_made_recipes() -> dict[str, Recipe]:
    return {p.stem: load_recipe(p) for p in sorted(RECIPES_DIR.glob("*.yaml"))}
