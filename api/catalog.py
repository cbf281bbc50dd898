"""What jobs may name: the models in the store and the ready-made recipes (torch-free)."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException

from service.settings import Settings


def check_model(name: str, settings: Settings) -> None:
    """422 naming the known models when `name` is not in the store."""
    from compressor.models.store import ModelStore, UnknownModelError

    try:
        ModelStore(settings.home).resolve(name)
    except UnknownModelError as e:
        raise HTTPException(422, [{"loc": ["body", "model"], "msg": str(e), "type": "unknown_model"}]) from None


def check_recipe_fits_model(spec: Any, settings: Settings) -> None:
    """422 naming each recipe field the model's family or widths cannot run (read from its config.json, no torch)."""
    from compressor.models.compatibility import check_recipe_against_model
    from compressor.models.store import ModelStore

    try:
        config = ModelStore(settings.home).config(spec.model)
    except (OSError, ValueError):
        return  # a store entry without a readable config.json: the job reports it
    problems = check_recipe_against_model(config, spec.recipe)
    if problems:
        raise HTTPException(422, [{"loc": ["body", "recipe"], "msg": f"{spec.model}: {p}", "type": "recipe_not_for_model"}
                                  for p in problems])


def list_recipes() -> dict[str, dict[str, Any]]:
    from api.job_request import ready_made

    return ready_made()
