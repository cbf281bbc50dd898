"""The body of POST /v1/jobs: a model and a recipe, given in full, by ready-made name, or as a
ready-made recipe with overrides.

    {"model": "smollm2-135m", "recipe": "w4a16-gptq"}
    {"model": "smollm2-135m", "recipe": {"base": "w4a16-gptq", "set": {"eval.max_tokens": 2048}}}
    {"model": "smollm2-135m", "recipe": {"stages": [...], "eval": {...}}}

Whatever the form, the job stores and runs the recipe in full (`JobSpec`), so a pipeline can
post a name and read back exactly what ran. A bad name, an unknown override path or a value the
recipe refuses is a 422 whose `loc` names it (`["body", "recipe", "set", "eval.max_tokens"]`).
"""

from __future__ import annotations

import copy
import functools
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidatorFunctionWrapHandler, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from compressor.spec import JobSpec, Recipe, ready_made_recipes


@functools.cache
def ready_made_recipe_specs() -> dict[str, Any]:
    """The ready-made recipes (`Recipe` objects, read-only by convention), read once per process (they ship with the code)."""
    return ready_made_recipes()


@functools.cache
def ready_made() -> dict[str, dict[str, Any]]:
    """The ready-made recipes as JSON."""
    return {name: recipe.model_dump(mode="json") for name, recipe in ready_made_recipe_specs().items()}


RecipeName = Annotated[str, Field(
    description="a ready-made recipe by name (GET /v1/recipes lists them)",
    json_schema_extra=lambda schema: schema.update(enum=sorted(ready_made())), examples=["w4a16-gptq"])]


class RecipeOverrides(BaseModel):
    """A ready-made recipe with some of its fields changed."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"base": "w4a16-gptq", "set": {"eval.max_tokens": 2048, "calibration.samples": 64}}]})

    base: RecipeName
    set: dict[str, Any] = Field(
        default_factory=dict, max_length=64,
        description="dotted paths into the recipe → new values, e.g. `eval.max_tokens`, "
                    "`stages.0.quantize.weights.group_size`; every path must exist in the base recipe",
        examples=[{"eval.max_tokens": 2048}])


class JobCreate(JobSpec):
    """What a client submits: a model from the store and a recipe (in full, by name, or a name with overrides)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"model": "smollm2-135m", "recipe": "w4a16-gptq"},
        {"model": "smollm2-135m", "recipe": {"base": "w4a16-gptq", "set": {"eval.max_tokens": 2048}}},
    ]})

    recipe: Recipe | RecipeName | RecipeOverrides = Field(  # type: ignore[assignment]
        description="a recipe in full, a ready-made recipe's name, or {base, set}: a ready-made recipe with overrides")

    @field_validator("recipe", mode="wrap")
    @classmethod
    def _resolve(cls, value: Any, _handler: ValidatorFunctionWrapHandler) -> Recipe:
        if isinstance(value, Recipe):
            return value
        if isinstance(value, str):
            return Recipe.model_validate(_ready_made(value, ()))
        if isinstance(value, dict) and "base" in value:
            overrides = RecipeOverrides.model_validate(value)
            return _with_overrides(_ready_made(overrides.base, ("base",)), overrides.set)
        return Recipe.model_validate(value)

    def job_spec(self) -> JobSpec:
        return JobSpec(version=self.version, model=self.model, recipe=self.recipe)


def _ready_made(name: str, loc: tuple[str, ...]) -> dict[str, Any]:
    recipes = ready_made()
    if name not in recipes:
        raise _error(loc, "unknown_recipe", f"no ready-made recipe {name!r}; ready-made: {', '.join(sorted(recipes))}")
    return recipes[name]


def _with_overrides(base: dict[str, Any], assignments: dict[str, Any]) -> Recipe:
    """`base` with each dotted path set; then validated, with a refused value's error at its path."""
    data = copy.deepcopy(base)
    for path, value in assignments.items():
        _assign(data, path, value)
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        details: list[InitErrorDetails] = []
        for err in e.errors(include_url=False):
            # a stage's tag repeats in the loc (stages.0.quantize.quantize.weights): once is its path
            parts = [p for i, p in enumerate(err["loc"]) if i == 0 or p != err["loc"][i - 1]]
            dotted = ".".join(str(p) for p in parts)
            path = next((p for p in assignments if dotted == p or dotted.startswith(p + ".")), None)
            loc = ("set", path, *parts[len(path.split(".")):]) if path else tuple(err["loc"])
            details.append({"type": PydanticCustomError(err["type"], err["msg"]), "loc": loc, "input": err.get("input")})
        raise ValidationError.from_exception_data("RecipeOverrides", details) from None


def _assign(data: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node: Any = data
    for depth, part in enumerate(parts):
        here = ".".join(parts[:depth]) or "the recipe"
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise _error(("set", path), "unknown_path", f"{here} has {len(node)} entries; {part!r} is not one of their indices")
            key: Any = int(part)
        elif isinstance(node, dict):
            if part not in node:
                known = ", ".join(sorted(node)) or "none"
                raise _error(("set", path), "unknown_path", f"{here} has no field {part!r}; its fields: {known}")
            key = part
        else:
            raise _error(("set", path), "unknown_path",
                         f"{here} is {node!r} in the base recipe, not a mapping; set {here} as a whole instead")
        if depth == len(parts) - 1:
            node[key] = value
        else:
            node = node[key]


def _error(loc: tuple[str, ...], kind: str, message: str) -> ValidationError:
    return ValidationError.from_exception_data(
        "JobCreate", [{"type": PydanticCustomError(kind, message), "loc": loc, "input": None}])
