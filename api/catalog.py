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
    check_job_fits_workers(spec, config, settings)


def check_job_fits_workers(spec: Any, config: dict[str, Any], settings: Settings) -> None:
    """422 with the numbers when the job's estimated peak memory fits no worker of `COMPRESSOR_WORKER_MEMORY`.

    Unset (the default) = no check: the operator has not said what its workers hold. With
    `execution.layers: auto` a job fits if it fits resident or, where its stages allow it
    (`compressor.execution.layer_policy`), sequential (one layer at a time).
    """
    workers = settings.worker_memory_bytes
    if not workers:
        return
    from compressor.execution.layer_policy import sequential_blockers
    from compressor.execution.memory import estimate_peak, format_bytes
    from compressor.execution.plan import what_to_change

    recipe = spec.recipe
    modes = {"resident": ["resident"], "sequential": ["sequential"]}.get(recipe.execution.layers, ["resident", "sequential"])
    if recipe.execution.layers == "auto" and sequential_blockers(recipe):
        modes = ["resident"]  # a stage that needs the whole model: auto stays resident
    best = None
    for kind, memory in workers.items():
        for layers in modes:
            estimate = estimate_peak(config, recipe, kind, layers)
            if estimate.total_bytes <= memory:
                return
            if best is None or estimate.total_bytes - memory < best[0].total_bytes - best[1]:
                best = (estimate, memory, kind)
    estimate, memory, kind = best
    largest = ", ".join(f"{k} {format_bytes(v)}" for k, v in sorted(workers.items()))
    msg = (f"{spec.model}: this job needs about {format_bytes(estimate.total_bytes)} of memory at its peak "
           f"(estimated for a {kind} worker, layers {estimate.layers}: {estimate.describe()}), more than the largest "
           f"configured worker holds ({largest}; COMPRESSOR_WORKER_MEMORY). To fit: {what_to_change(recipe, estimate)}")
    raise HTTPException(422, [{"loc": ["body", "recipe"], "msg": msg, "type": "job_exceeds_worker_memory",
                               "ctx": {"estimate_bytes": estimate.total_bytes, "worker_bytes": memory, "device_kind": kind}}])


def list_recipes() -> dict[str, dict[str, Any]]:
    from api.job_request import ready_made

    return ready_made()
