"""`Recipe` (ordered stages plus calibration, evaluation and export settings) and `JobSpec`."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from compressor.spec.base import MODEL_NAME_PATTERN, SPEC_VERSION, StrictModel
from compressor.spec.order import sequential_stage_problems, stage_order_problems
from compressor.spec.quant import KVCacheQuantConfig, QuantizeConfig
from compressor.spec.stages import Stage, stage_config


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


class SpeedConfig(StrictModel):
    """What compression bought in speed: the exported checkpoint reloaded with `compressor.load` and timed.

    Off unless a recipe asks (`eval.speed: {}`): on the CPU it costs tens of seconds per job. The
    reloaded model is scored on the first `windows` evaluation windows of the first eval dataset
    and compared with the fake-quant model on the same windows; then prefill and decode are
    timed for the reloaded and the original model on the job's device.
    """

    windows: int = Field(4, ge=1, le=256, description="evaluation windows of the first eval dataset scored after reloading")
    prompt_tokens: int = Field(128, ge=1, le=8192, description="tokens per sequence in the timed prefill")
    decode_tokens: int = Field(32, ge=2, le=4096, description="tokens generated per sequence in the timed decode (KV cache on)")
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 8], min_length=1, max_length=4,
                                   description="sequences per batch, each timed; 1 to 256, no repeats")
    rounds: int = Field(1, ge=1, le=20, description="timed repetitions per measurement (median), after an untimed warm-up; "
                        "more rounds steady the numbers on a busy machine at that many times the cost")
    tolerance: float = Field(0.005, gt=0, le=0.5, description="largest relative perplexity difference, reloaded vs fake-quant, that passes")

    @field_validator("batch_sizes")
    @classmethod
    def _batch_sizes(cls, v: list[int]) -> list[int]:
        if any(b < 1 or b > 256 for b in v) or len(set(v)) != len(v):
            raise ValueError(f"batch_sizes {v}: each must be between 1 and 256, without repeats")
        return v


class EvalConfig(StrictModel):
    """Perplexity and KL protocol: non-overlapping windows over the first `max_tokens` tokens."""

    datasets: list[Literal["wiki", "news"]] = Field(default_factory=lambda: ["wiki", "news"])
    max_tokens: int = Field(16384, ge=64, le=1_048_576, description="tokens of each evaluation text used")
    window: int = Field(512, ge=16, le=8192, description="tokens per non-overlapping window")
    kl: bool = Field(True, description="KL divergence of the compressed model to the original")
    original: bool = Field(True, description="also evaluate the original model (before/after in the report)")
    speed: SpeedConfig | None = Field(None, description="reload the checkpoint with compressor.load, check its perplexity, time prefill/decode against the original")

    @model_validator(mode="after")
    def _window_fits(self) -> EvalConfig:
        if self.datasets and self.window > self.max_tokens:
            raise ValueError(f"window ({self.window}) is longer than max_tokens ({self.max_tokens}); allowed: window <= max_tokens")
        return self


class ExportConfig(StrictModel):
    """How the compressed checkpoint is written."""

    format: Literal["compressed-tensors", "none"] = Field(
        "compressed-tensors", description="packed integer checkpoint with a manifest, or no checkpoint"
    )


class ExecutionConfig(StrictModel):
    """Where the job's tensors live while it runs; the device itself is the worker's (`COMPRESSOR_DEVICE`)."""

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="working dtype of the weights: auto = bfloat16 on a GPU, float32 on the CPU"
    )
    layers: Literal["auto", "resident", "sequential"] = Field(
        "auto",
        description="resident: the whole model on the device; sequential: one decoder layer on the device at a time, "
        "the rest in its safetensors shards or in files of finished layers (models bigger than the device); "
        "auto: sequential when the resident model would not fit",
    )


class Recipe(StrictModel):
    """An ordered list of stages plus the calibration, evaluation and export settings."""

    version: Literal[1] = SPEC_VERSION
    name: str | None = Field(None, max_length=128)
    stages: list[Stage] = Field(default_factory=list, max_length=32)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _stage_order(self) -> Recipe:
        problems = stage_order_problems(self.stage_configs(), self.calibration.samples)
        if problems:
            raise ValueError("; ".join(problems))
        if self.execution.layers == "sequential":
            problems = sequential_stage_problems(self.stage_configs())
            if problems:
                raise ValueError("execution.layers: sequential is not possible for this recipe: " + "; ".join(problems))
        return self

    def stage_configs(self) -> list[StrictModel]:
        return [stage_config(s) for s in self.stages]

    def final_kv_cache(self) -> KVCacheQuantConfig | None:
        """The KV-cache quantization the compressed model ends with.

        Each quantize stage replaces the dynamic quantizers of the one before, so the last
        quantize stage decides; this is what `online_qk: auto` and the export describe.
        """
        last = next((c for c in reversed(self.stage_configs()) if isinstance(c, QuantizeConfig)), None)
        return last.kv_cache if last is not None else None

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def sha256(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


class JobSpec(StrictModel):
    """What a client submits: a model from the store and a recipe."""

    version: Literal[1] = SPEC_VERSION
    model: str = Field(..., pattern=MODEL_NAME_PATTERN, description="a model name in the model store, e.g. smollm2-135m")
    recipe: Recipe
