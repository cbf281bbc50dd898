"""The recipe's stage list: one tuple of stage configs builds the wrappers, the union and its error.

A recipe stage is a mapping with one key, the stage name (`- quantize: {...}`). Adding a
method means adding its config class to `STAGE_CONFIGS`; the one-key wrapper, the tagged
union and the list of allowed names in the error message all follow from it.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BaseModel, Discriminator, Field, Tag, create_model

from compressor.spec.base import StrictModel
from compressor.spec.methods import AffineQuantConfig, FlatQuantConfig, HadamardConfig, OSTQuantConfig, ProSparseConfig
from compressor.spec.quant import QuantizeConfig

STAGE_CONFIGS: tuple[type[StrictModel], ...] = (
    HadamardConfig,
    QuantizeConfig,
    AffineQuantConfig,
    OSTQuantConfig,
    FlatQuantConfig,
    ProSparseConfig,
)
STAGE_NAMES: tuple[str, ...] = tuple(c.stage for c in STAGE_CONFIGS)


def _wrapper(config_cls: type[StrictModel]) -> type[StrictModel]:
    """`class QuantizeStage(StrictModel): quantize: QuantizeConfig = QuantizeConfig()`, built from the config."""
    name = config_cls.__name__.removesuffix("Config") + "Stage"
    return create_model(
        name, __base__=StrictModel, __module__=__name__,
        **{config_cls.stage: (config_cls, Field(default_factory=config_cls))},
    )


STAGE_WRAPPERS: dict[str, type[StrictModel]] = {c.stage: _wrapper(c) for c in STAGE_CONFIGS}
HadamardStage = STAGE_WRAPPERS["hadamard"]
QuantizeStage = STAGE_WRAPPERS["quantize"]
AffineQuantStage = STAGE_WRAPPERS["affinequant"]
OSTQuantStage = STAGE_WRAPPERS["ostquant"]
FlatQuantStage = STAGE_WRAPPERS["flatquant"]
ProSparseStage = STAGE_WRAPPERS["prosparse"]


def _stage_tag(value: Any) -> str | None:
    """The stage name of a recipe entry: the single key of its mapping."""
    if isinstance(value, dict):
        return next(iter(value)) if len(value) == 1 else None
    if isinstance(value, BaseModel):
        return next(iter(type(value).model_fields))
    return None


Stage = Annotated[
    Union[tuple(Annotated[wrapper, Tag(name)] for name, wrapper in STAGE_WRAPPERS.items())],  # type: ignore[valid-type]
    Discriminator(
        _stage_tag,
        custom_error_type="invalid_stage",
        custom_error_message=f"each stage is a mapping with exactly one key, one of: {', '.join(STAGE_NAMES)}",
    ),
]


def stage_config(stage: BaseModel) -> StrictModel:
    """The config object inside a one-key stage wrapper."""
    return getattr(stage, next(iter(type(stage).model_fields)))
