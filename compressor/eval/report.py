"""`Report`: the typed form of a job's report.json, built here and read by the HTML view and the tests.

report.json is read by programs outside this package (the API serves it as the job's report,
the dashboard draws it), so `Report.model_dump(mode="json")` keeps the keys report.json has
always had: optional sections and optional keys that a job did not produce are left out rather
than written as null. Unknown keys are errors, so a section written by a stage and the
model cannot drift apart silently. Torch-free, like `compressor.spec`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from compressor.machine import MachineInfo
from compressor.spec import Recipe


class ReportModel(BaseModel):
    """Base of the report's parts: unknown keys refused; keys in `OMIT_WHEN_NONE` left out when unset."""

    model_config = ConfigDict(extra="forbid")
    OMIT_WHEN_NONE: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        return {k: v for k, v in data.items() if not (v is None and k in self.OMIT_WHEN_NONE)}


class JobInfo(ReportModel):
    """Which job this is: the model, the recipe as run, its hash and seed (and `dry_run` for the service's stand-in)."""

    OMIT_WHEN_NONE = frozenset({"dry_run"})
    model: str
    recipe: dict[str, Any]
    recipe_sha256: str
    seed: int
    dry_run: bool | None = None


class SizeInfo(ReportModel):
    bits_per_weight: float | None = Field(description="stored bits per decoder-linear weight, scales included; none when unquantized")
    checkpoint_bytes: int | None = Field(description="bytes of the exported checkpoint; none without export")
    original_bytes: int = Field(description="the same model stored in bf16")


class StageReport(ReportModel):
    """Time and peak memory of one step of the job (load, each stage, export, each evaluation)."""

    name: str
    seconds: float
    peak_rss_mb: float
    details: dict[str, Any] = Field(default_factory=dict)


class LayerError(ReportModel):
    """Relative error of one quantized linear's weight, ‖Ŵ − W‖ / ‖W‖."""

    name: str
    layer: int
    kind: str
    rel_error: float


class QSURRow(ReportModel):
    """QSUR of one layer input under each transform variant (OSTQuant)."""

    layer: int
    name: str
    kind: str
    values: dict[str, float]


class SparsitySection(ReportModel):
    """ProSparse's activation sparsity, per layer and overall, and the optional PPL-p% search."""

    OMIT_WHEN_NONE = frozenset({"ppl_p", "ppl_p_sparsity", "cett", "ppl_p_per_layer"})
    per_layer: list[float]
    mean: float
    fatrelu_threshold: float
    eval_tokens: int
    finetune: str
    steps: int
    ppl_p: float | None = None
    ppl_p_sparsity: float | None = None
    cett: float | None = None
    ppl_p_per_layer: list[float] | None = None


class ProSparseStep(ReportModel):
    step: int
    # `lambda` is a Python keyword: the attribute is `lambda_`, the JSON key stays "lambda"
    lambda_: float = Field(alias="lambda", serialization_alias="lambda")
    loss: float
    lm_loss: float
    sparsity: float

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)


class WarmStartLayer(ReportModel):
    """One decoder layer of OSTQuant's layer-wise warm start: its block output MSE per epoch."""

    layer: int
    epoch_loss: list[float]
    seconds: float


class TrainingSection(ReportModel):
    """Loss curves of the stages that train."""

    OMIT_WHEN_NONE = frozenset({"ostquant_loss", "ostquant_warm_start", "prosparse"})
    ostquant_loss: list[float] | None = None
    ostquant_warm_start: list[WarmStartLayer] | None = None
    prosparse: list[ProSparseStep] | None = None


class ResumeSection(ReportModel):
    """How this run used the job's checkpoints: where it resumed, what that saved, what the checkpoints cost on disk."""

    OMIT_WHEN_NONE = frozenset({"resumed_from", "fresh_reason"})
    attempt: int
    resumed_from: str | None = Field(None, description="where a resumed run picked up, e.g. 'stage 1/1 quantize at layer 17 of 30'")
    units_reused: int = Field(description="checkpointed layers, training states and scores reused")
    seconds_saved: float = Field(description="compute seconds those units took in earlier attempts")
    fresh_reason: str | None = Field(None, description="why an existing checkpoint was not used (changed model, recipe, ...)")
    checkpoint_bytes_written: int
    checkpoint_peak_bytes: int


class EngineRow(ReportModel):
    """Whether one engine serves the exported checkpoint (the manifest's `engine_support`, `compressor/export/engines.py`)."""

    serves: bool
    path: str | None = Field(None, description="what the engine runs (e.g. its kernel family)")
    reason: str | None = Field(None, description="why not, or what it gives up")


class ExecutionSection(ReportModel):
    """Where the job ran and what memory it needed: the estimate made before loading beside the measured peak."""

    OMIT_WHEN_NONE = frozenset({"estimate_peak_mb", "peak_device_mb"})
    device: str = Field(description="cpu, or cuda:N with the GPU's name in `machine`")
    dtype: str = Field(description="working dtype of the weights")
    layers: str = Field(description="resident (whole model on the device) or sequential (one decoder layer at a time)")
    estimate_peak_mb: float | None = Field(None, description="peak memory estimated from the model's config and the recipe before loading")
    measured_peak_mb: float = Field(description="measured peak resident memory of the job process (CPU) ")
    peak_device_mb: float | None = Field(None, description="peak memory allocated on the GPU")


class ReloadCheck(ReportModel):
    """The exported checkpoint as `compressor.load` runs it, against the fake-quant model the job evaluated, on the same windows."""

    dataset: str
    windows: int
    tokens: int = Field(description="predicted tokens scored")
    fake_quant_perplexity: float
    reloaded_perplexity: float
    relative_difference: float = Field(description="|reloaded / fake-quant - 1|")
    tolerance: float
    passed: bool


class Throughput(ReportModel):
    """Tokens per second of one phase at one batch size, original against compressed, same device and dtype."""

    phase: Literal["prefill", "decode"]
    batch: int
    tokens_per_sequence: int = Field(description="prompt tokens (prefill) or generated tokens (decode) per sequence")
    original_tokens_per_s: float
    compressed_tokens_per_s: float
    speedup: float = Field(description="compressed / original tokens per second")


class LinearBackend(ReportModel):
    """Which kernel runs one kind of linear in the reloaded model (`QuantLinear.resolve_backend` on the job's device)."""

    kind: str = Field(description="int4, int8_w8a16, int8_w8a8 (QuantLinear) or dense (dequantized fallback)")
    backend: str = Field(description="triton, native, reference or dense")
    kernel: str
    modules: int


class SpeedSection(ReportModel):
    """What compression bought in speed, measured on the reloaded checkpoint; or why it could not be measured."""

    OMIT_WHEN_NONE = frozenset({"skipped_reason", "reload"})
    device: str
    dtype: str = Field(description="compute dtype of both models (the job's working dtype)")
    threads: int = Field(description="torch CPU threads")
    skipped_reason: str | None = Field(None, description="why the checkpoint was not reloaded or timed")
    reload: ReloadCheck | None = None
    throughput: list[Throughput] = Field(default_factory=list)
    backends: list[LinearBackend] = Field(default_factory=list)
    weight_bytes: dict[str, int] = Field(default_factory=dict, description="resident weight bytes: original, compressed")
    rounds: int = Field(0, description="timed rounds per measurement (median), after one warm-up run")
    seconds: float = 0.0


class Report(ReportModel):
    """Everything report.json holds."""

    OMIT_WHEN_NONE = frozenset({"qsur", "sparsity", "training", "machine", "resume", "engines", "execution", "speed"})
    job: JobInfo
    versions: dict[str, str]
    perplexity: dict[str, dict[str, float]] = Field(description="'original' and 'compressed' → dataset → perplexity")
    kl: dict[str, float] = Field(description="dataset → KL(original ‖ compressed), nats per token")
    eval_tokens: dict[str, int]
    size: SizeInfo
    stages: list[StageReport]
    layers: list[LayerError]
    qsur: list[QSURRow] | None = None
    sparsity: SparsitySection | None = None
    training: TrainingSection | None = None
    seconds: float
    peak_rss_mb: float
    machine: MachineInfo | None = Field(None, description="CPU model, ISA flags, threads, GPU: float results differ between machines")
    resume: ResumeSection | None = None
    engines: dict[str, EngineRow] | None = Field(None, description="engine (transformers, vllm-ampere/-hopper/-blackwell) → serves?")
    execution: ExecutionSection | None = None
    speed: SpeedSection | None = Field(None, description="the checkpoint reloaded with compressor.load: perplexity check, prefill/decode tokens/s")


def resume_section(info: Any) -> ResumeSection:
    """The report's view of a `compressor.checkpoints.ResumeInfo`."""
    return ResumeSection(attempt=info.attempt, resumed_from=info.resumed_from, units_reused=info.units_reused,
                         seconds_saved=round(info.seconds_saved, 3), fresh_reason=info.fresh_reason,
                         checkpoint_bytes_written=info.bytes_written, checkpoint_peak_bytes=info.peak_bytes)


def job_info(model: str, recipe: Recipe) -> JobInfo:
    return JobInfo(model=model, recipe=recipe.model_dump(mode="json"), recipe_sha256=recipe.sha256(), seed=recipe.seed)


class EvalScores(ReportModel):
    """What `evaluate` measured: perplexities, KL and the tokens scored per dataset."""

    perplexity: dict[str, dict[str, float]] = Field(default_factory=dict)
    kl: dict[str, float] = Field(default_factory=dict)
    eval_tokens: dict[str, int] = Field(default_factory=dict)


def build_report(
    *,
    model: str,
    recipe: Recipe,
    versions: dict[str, str],
    scores: EvalScores,
    size: SizeInfo,
    costs: dict[str, Any],
    stage_details: dict[str, dict[str, Any]],
    layers: list[dict[str, Any]],
    sections: dict[str, Any],
    machine: MachineInfo | None = None,
    resume: ResumeSection | None = None,
    engines: dict[str, Any] | None = None,
    execution: ExecutionSection | None = None,
    speed: SpeedSection | None = None,
) -> Report:
    """The job's report from what the pipeline measured.

    `costs` maps each measured step (`load`, `0:quantize`, `export`, `eval:wiki`, …) to its
    `StageCost`, in order; `stage_details` holds the recipe stages' own details under the
    same keys; `sections` the extra sections stages wrote (qsur, sparsity, training).
    """
    return Report(
        job=job_info(model, recipe),
        versions=versions,
        perplexity=scores.perplexity,
        kl=scores.kl,
        eval_tokens=scores.eval_tokens,
        size=size,
        stages=[
            StageReport(name=name, seconds=c.seconds, peak_rss_mb=c.peak_rss_mb, details=stage_details.get(name, {}))
            for name, c in costs.items()
        ],
        layers=layers,
        **sections,
        seconds=sum(c.seconds for c in costs.values()),
        peak_rss_mb=max((c.peak_rss_mb for c in costs.values()), default=0.0),
        machine=machine,
        resume=resume,
        engines=engines,
        execution=execution,
        speed=speed,
    )
