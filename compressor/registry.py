"""Recipe stage registry: config class → the function that runs it.

Registration is explicit (a decorator next to each method's code), and `compressor.stages`
imports every method module once, so the pipeline never guesses by class name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

if TYPE_CHECKING:
    from compressor.context import CompressionContext

StageHandler = Callable[["CompressionContext", Any], dict[str, Any]]
_HANDLERS: dict[type[BaseModel], tuple[str, StageHandler]] = {}
F = TypeVar("F", bound=StageHandler)


def register_stage(config_cls: type[BaseModel]) -> Callable[[F], F]:
    """Register `fn` as the handler of `config_cls`; the stage name is the config's `stage`."""
    name = getattr(config_cls, "stage", None)
    if not isinstance(name, str):
        raise TypeError(f"{config_cls.__name__} has no `stage: ClassVar[str]` naming its recipe key")

    def decorate(fn: F) -> F:
        if config_cls in _HANDLERS:
            raise ValueError(f"stage config {config_cls.__name__} registered twice")
        _HANDLERS[config_cls] = (name, fn)
        return fn

    return decorate


def stage_handler(config: BaseModel) -> tuple[str, StageHandler]:
    try:
        return _HANDLERS[type(config)]
    except KeyError:
        raise ValueError(f"no handler registered for stage config {type(config).__name__}") from None
