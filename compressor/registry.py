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


def register_stage(config_cls: type[BaseModel], name: str) -> Callable[[F], F]:
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
