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


def list_recipes() -> dict[str, dict[str, Any]]:
    from api.job_request import ready_made

    return ready_made()
