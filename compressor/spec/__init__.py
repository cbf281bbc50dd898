"""The job contract: `JobSpec`, its `Recipe`, and one pydantic config per recipe stage.

This package imports no torch, so the API can validate requests with the very classes the
worker receives. Every model forbids unknown fields, so a typo is an error naming the field
rather than a silently ignored option. Modules: `base` (the strict base model), `quant`
(quantizers and the quantize stage), `methods` (transform and sparsity stages), `stages`
(the stage union built from `STAGE_CONFIGS`), `order` (stage-order rules), `recipe`
(`Recipe`, `JobSpec`), `files` (recipe files and the ready-made recipes).
"""

from compressor.spec.base import MODEL_NAME_PATTERN, SPEC_VERSION, StrictModel
from compressor.spec.files import load_recipe, ready_made_recipes, recipes_dir
from compressor.spec.methods import (AffineQuantConfig, FlatQuantConfig, HadamardConfig, OSTQuantConfig, OSTWarmStartConfig,
                                      ProSparseConfig)
from compressor.spec.quant import ActivationQuantConfig, KVCacheQuantConfig, QuantizeConfig, WeightQuantConfig
from compressor.spec.recipe import CalibrationConfig, EvalConfig, ExecutionConfig, ExportConfig, JobSpec, Recipe, SpeedConfig
from compressor.spec.stages import (
    STAGE_CONFIGS,
    STAGE_NAMES,
    AffineQuantStage,
    FlatQuantStage,
    HadamardStage,
    OSTQuantStage,
    ProSparseStage,
    QuantizeStage,
    Stage,
    stage_config,
)

__all__ = [
    "MODEL_NAME_PATTERN", "SPEC_VERSION", "STAGE_CONFIGS", "STAGE_NAMES",
    "ActivationQuantConfig", "AffineQuantConfig", "AffineQuantStage", "CalibrationConfig", "EvalConfig",
    "ExecutionConfig", "ExportConfig", "FlatQuantConfig", "FlatQuantStage", "HadamardConfig", "HadamardStage", "JobSpec", "KVCacheQuantConfig", "OSTQuantConfig", "OSTWarmStartConfig",
    "OSTQuantStage", "ProSparseConfig", "ProSparseStage", "QuantizeConfig", "QuantizeStage", "Recipe",
    "SpeedConfig", "Stage", "StrictModel", "WeightQuantConfig", "load_recipe", "ready_made_recipes", "recipes_dir", "stage_config",
]
