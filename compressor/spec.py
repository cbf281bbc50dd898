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
    gptq_act_order: bool = Field(False, description="GPTQ: quantize columns in order of decreasing Hessian diagonal")

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


StageName = Literal["hadamard", "quantize"]


class HadamardStage(StrictModel):
    hadamard: HadamardConfig = Field(default_factory=HadamardConfig)


class QuantizeStage(StrictModel):
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)


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
    ],
    Discriminator(
        _stage_tag,
        custom_error_type="invalid_stage",
        custom_error_message="each stage is a mapping with exactly one key, one of: hadamard, quantize",
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
