"""Rules about the order of a recipe's stages, checked when the recipe is validated.

Each rule used to surface only in the worker, after the model was loaded (or not at all, as
a checkpoint whose stored codes no longer match its weights). Checked here, the API answers
422 and the CLI refuses the recipe before any work starts. Every message names the stage by
its place, `stages[i].<name>`, and says what is allowed.
"""

from __future__ import annotations

from collections.abc import Sequence

from compressor.spec.base import StrictModel
from compressor.spec.methods import AffineQuantConfig, FlatQuantConfig, HadamardConfig, OSTQuantConfig, ProSparseConfig
from compressor.spec.quant import QuantizeConfig

# Stages that rewrite the decoder weights in place (rotations, fine-tuning).
WEIGHT_CHANGING = (HadamardConfig, OSTQuantConfig, FlatQuantConfig, ProSparseConfig)
# Stages that install online input transforms (R3/R4 rotations, learned Kronecker transforms).
ROTATION_STAGES = (HadamardConfig, OSTQuantConfig, FlatQuantConfig)
# Stages that train for the quantizers of the recipe's next quantize stage.
TRAINS_FOR_NEXT_QUANTIZE = (OSTQuantConfig, FlatQuantConfig)


def _at(index: int, cfg: StrictModel) -> str:
    return f"stages[{index}].{cfg.stage}"


def stores_quantized_weights(cfg: StrictModel) -> bool:
    """Whether the stage leaves integer codes of the weights for export."""
    return isinstance(cfg, AffineQuantConfig) or (isinstance(cfg, QuantizeConfig) and cfg.weights is not None)


def needs_a_later_quantize(stages: Sequence[StrictModel]) -> list[str]:
    """OSTQuant and FlatQuant train for the quantizers of the next quantize stage, so there must be one."""
    return [
        f"{_at(i, cfg)}: needs a later quantize stage (it trains its transforms for that stage's weights, "
        f"activations and KV cache); add one after it, e.g. '- quantize: {{weights: {{method: gptq}}}}'"
        for i, cfg in enumerate(stages)
        if isinstance(cfg, TRAINS_FOR_NEXT_QUANTIZE) and not any(isinstance(c, QuantizeConfig) for c in stages[i + 1 :])
    ]


def flatquant_targets_int(stages: Sequence[StrictModel]) -> list[str]:
    """FlatQuant's training quantizers (learned weight and per-token activation clipping) are the int ones."""
    problems = []
    for i, cfg in enumerate(stages):
        target = next((c for c in stages[i + 1 :] if isinstance(c, QuantizeConfig)), None)
        if not isinstance(cfg, FlatQuantConfig) or target is None:
            continue
        for field, quantizer in (("weights", target.weights), ("activations", target.activations)):
            if quantizer is not None and quantizer.format != "int":
                problems.append(f"{_at(i, cfg)}: trains for int quantizers, but the next quantize stage's {field} are "
                                f"{quantizer.format}; allowed: format 'int'")
        if target.activations is not None and target.activations.strategy != "token":
            problems.append(f"{_at(i, cfg)}: trains for dynamic per-token activations; the next quantize stage's "
                            f"activations.strategy is {target.activations.strategy!r} (allowed: 'token')")
    return problems


def no_weight_change_after_quantized_weights(stages: Sequence[StrictModel]) -> list[str]:
    """A rotation or fine-tuning after weights were quantized would leave export stale codes."""
    problems = []
    for i, cfg in enumerate(stages):
        if not isinstance(cfg, WEIGHT_CHANGING):
            continue
        earlier = next((j for j in range(i) if stores_quantized_weights(stages[j])), None)
        if earlier is not None:
            problems.append(
                f"{_at(i, cfg)}: comes after {_at(earlier, stages[earlier])}, which quantized the weights; "
                f"{cfg.stage} rewrites the weights, so the stored codes would no longer match them. "
                f"Put hadamard, ostquant, flatquant and prosparse before the stages that quantize weights (quantize with weights, affinequant)"
            )
    return problems


def one_rotation_stage(stages: Sequence[StrictModel]) -> list[str]:
    """Both rotation stages fold the norms and install online rotations; a second would replace the first's."""
    rotations = [i for i, cfg in enumerate(stages) if isinstance(cfg, ROTATION_STAGES)]
    return [
        f"{_at(i, stages[i])}: a recipe takes at most one rotation stage (hadamard, ostquant or flatquant), and "
        f"{_at(rotations[0], stages[rotations[0]])} is one already"
        for i in rotations[1:]
    ]


def batches_fit_calibration(stages: Sequence[StrictModel], calibration_samples: int) -> list[str]:
    """ProSparse draws whole batches of distinct calibration chunks."""
    return [
        f"{_at(i, cfg)}.batch_size: {cfg.batch_size} is more than calibration.samples ({calibration_samples}); "
        f"allowed: at most {calibration_samples}"
        for i, cfg in enumerate(stages)
        if isinstance(cfg, ProSparseConfig) and cfg.batch_size > calibration_samples
    ]


def stage_order_problems(stages: Sequence[StrictModel], calibration_samples: int) -> list[str]:
    return [
        *needs_a_later_quantize(stages),
        *flatquant_targets_int(stages),
        *no_weight_change_after_quantized_weights(stages),
        *one_rotation_stage(stages),
        *batches_fit_calibration(stages, calibration_samples),
    ]


def sequential_stage_problems(stages: Sequence[StrictModel]) -> list[str]:
    """What keeps a recipe from running one decoder layer at a time (`execution.layers: sequential`).

    Sequential execution covers the stages that work layer by layer (the embedding and head
    on their own, after the layers); the others need the whole model at once.
    """
    problems = []
    for index, cfg in enumerate(stages):
        where = _at(index, cfg)
        if isinstance(cfg, (HadamardConfig, AffineQuantConfig, FlatQuantConfig)):
            continue
        if not isinstance(cfg, QuantizeConfig):
            problems.append(f"{where}: this method works on the whole model; one layer at a time runs: hadamard, affinequant, flatquant, "
                            "quantize (rtn, gptq)")
            continue
        if cfg.activations is not None and cfg.activations.static:
            problems.append(f"{where}.activations: static scales are calibrated through the whole model; use dynamic scales")
        if cfg.kv_cache is not None and cfg.kv_cache.format == "fp8":
            problems.append(f"{where}.kv_cache: fp8 k/v scales are calibrated through the whole model; use the int KV cache")
    return problems
