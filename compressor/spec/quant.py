"""Quantizer configs (weights, activations, KV cache) and the `quantize` stage that applies them."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from compressor.spec.base import StrictModel

# Number formats of quantized values. "int" is integer codes with a scale (and maybe a zero
# point); the float formats are the ones compressed-tensors stores and vLLM serves:
#   fp8    E4M3 values, a float scale per tensor / channel / token
#   nvfp4  E2M1 values, an E4M3 scale per 16 values and one float32 global scale per tensor
#   mxfp4  E2M1 values, an E8M0 (power-of-two) scale per 32 values
NumberFormat = Literal["int", "fp8", "nvfp4", "mxfp4"]
FORMAT_BITS = {"fp8": 8, "nvfp4": 4, "mxfp4": 4}
FORMAT_GROUP = {"nvfp4": 16, "mxfp4": 32}  # the block size the format's scales are defined for


def float_format_problems(fmt: str, bits: int, symmetric: bool, strategy: str, group_size: int | None,
                          strategies: tuple[str, ...]) -> list[str]:
    """What a float format cannot hold, each naming the field and what is allowed (empty for int)."""
    if fmt == "int":
        return []
    problems = []
    if bits != FORMAT_BITS[fmt]:
        problems.append(f"bits: {fmt} values are {FORMAT_BITS[fmt]}-bit; got {bits} (set bits: {FORMAT_BITS[fmt]})")
    if not symmetric:
        problems.append(f"symmetric: {fmt} is a sign-magnitude format with no zero point; set symmetric: true")
    if fmt in FORMAT_GROUP:
        if strategy != "group" or group_size != FORMAT_GROUP[fmt]:
            problems.append(f"group_size: {fmt} stores one scale per {FORMAT_GROUP[fmt]} values; got strategy "
                            f"{strategy!r}, group_size {group_size} (allowed: strategy 'group', group_size {FORMAT_GROUP[fmt]})")
    elif strategy not in strategies:
        problems.append(f"strategy: {fmt} supports {', '.join(repr(s) for s in strategies)}; got {strategy!r}")
    return problems


class WeightQuantConfig(StrictModel):
    """How linear weights are quantized (all linears of the decoder; lm_head stays full precision)."""

    format: NumberFormat = Field("int", description="number format: int, fp8 (E4M3), nvfp4 (E2M1, E4M3 scale per 16 + global), mxfp4 (E2M1, E8M0 scale per 32)")
    bits: int = Field(4, ge=2, le=8, description="bit width of a value, 2 to 8 (fp8: 8, nvfp4/mxfp4: 4)")
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
        problems = float_format_problems(self.format, self.bits, self.symmetric, self.strategy, self.group_size, ("channel", "tensor"))
        if self.format != "int" and self.method != "rtn":
            problems.append(f"method: {self.format} weights are rounded to nearest (method 'rtn'); GPTQ here searches integer grids only")
        if self.format != "int" and self.clip_search:
            problems.append(f"clip_search: the MSE clip search is for int grids; set clip_search: false with format {self.format}")
        if problems:
            raise ValueError("weights: " + "; ".join(problems))
        return self


class ActivationQuantConfig(StrictModel):
    """Quantization of every linear input: dynamic per token (no calibration), or static per tensor (calibrated).

    nvfp4 inputs are quantized per 16 values at run time under one global scale per linear
    calibrated on the calibration text (compressed-tensors' NVFP4 scheme); mxfp4 inputs per 32
    values at run time.
    """

    format: NumberFormat = Field("int", description="number format: int, fp8 (E4M3), nvfp4, mxfp4")
    bits: int = Field(8, ge=2, le=8, description="bit width of a value, 2 to 8 (fp8: 8, nvfp4/mxfp4: 4)")
    symmetric: bool = Field(False, description="symmetric or asymmetric per-token range")
    clip_ratio: float = Field(1.0, gt=0.0, le=1.0, description="fraction of the per-token range kept (int only)")
    strategy: Literal["token", "tensor", "group"] = Field(
        "token", description="'token': a dynamic scale per token; 'tensor': one static scale per linear from calibration (fp8); "
        "'group': nvfp4/mxfp4 blocks")
    group_size: int | None = Field(None, description="nvfp4: 16, mxfp4: 32 (strategy 'group' only)")

    @model_validator(mode="after")
    def _format_fits(self) -> ActivationQuantConfig:
        problems = float_format_problems(self.format, self.bits, self.symmetric, self.strategy, self.group_size, ("token", "tensor"))
        if self.format == "int" and self.strategy != "token":
            problems.append(f"strategy: int activations are quantized per token at run time; got {self.strategy!r} (allowed: 'token')")
        if self.format != "int" and self.clip_ratio != 1.0:
            problems.append(f"clip_ratio: {self.format} activations keep their full range; set clip_ratio: 1.0")
        if self.strategy != "group" and self.group_size is not None:
            problems.append(f"group_size: only with strategy 'group', not {self.strategy!r}")
        if problems:
            raise ValueError("activations: " + "; ".join(problems))
        return self

    @property
    def static(self) -> bool:
        """Whether some scale comes from calibration (fp8 per tensor; the nvfp4 global scale)."""
        return self.strategy == "tensor" or self.format == "nvfp4"


class KVCacheQuantConfig(StrictModel):
    """Keys (after RoPE) and values: int with one dynamic range per token and head, or fp8 with one calibrated scale each."""

    format: Literal["int", "fp8"] = Field("int", description="int (dynamic per token and head) or fp8 (E4M3, static k/v scales per layer from calibration, what vLLM's fp8 KV cache reads)")
    bits: int = Field(8, ge=2, le=8, description="bit width, 2 to 8 (fp8: 8)")
    symmetric: bool = Field(False, description="symmetric or asymmetric per-head range")
    clip_ratio: float = Field(1.0, gt=0.0, le=1.0, description="fraction of the per-head range kept (int only)")

    @model_validator(mode="after")
    def _format_fits(self) -> KVCacheQuantConfig:
        problems = float_format_problems(self.format, self.bits, self.symmetric, "tensor", None, ("tensor",))
        if self.format != "int" and self.clip_ratio != 1.0:
            problems.append("clip_ratio: fp8 keeps the full calibrated range; set clip_ratio: 1.0")
        if problems:
            raise ValueError("kv_cache: " + "; ".join(problems))
        return self


class QuantizeConfig(StrictModel):
    """Quantize weights (RTN or GPTQ), and optionally activations and the KV cache."""

    stage: ClassVar[str] = "quantize"

    weights: WeightQuantConfig | None = Field(default_factory=WeightQuantConfig)
    activations: ActivationQuantConfig | None = None
    kv_cache: KVCacheQuantConfig | None = None

    @model_validator(mode="after")
    def _something_to_do(self) -> QuantizeConfig:
        if self.weights is None and self.activations is None and self.kv_cache is None:
            raise ValueError("quantize needs at least one of weights, activations, kv_cache")
        return self
