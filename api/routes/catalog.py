"""/v1/models and /v1/recipes: what a job may name."""

from __future__ import annotations

from fastapi import APIRouter

from api.catalog import list_models, list_recipes
from api.deps import OwnerDep, SettingsDep
from api.schemas import ErrorBody, ModelInfo, ModelList, RecipeInfo, RecipeList

router = APIRouter(prefix="/v1", tags=["catalog"])


@router.get("/models", response_model=ModelList, operation_id="models-list", responses={401: {"model": ErrorBody}})
def models(owner: OwnerDep, settings: SettingsDep) -> ModelList:
    """The models in the store (import more with `compressor models import`)."""
    fields = ModelInfo.model_fields
    return ModelList(data=[ModelInfo(**{k: v for k, v in m.items() if k in fields}) for m in list_models(settings)])


@router.get("/recipes", response_model=RecipeList, operation_id="recipes-list", responses={401: {"model": ErrorBody}})
def recipes(owner: OwnerDep) -> RecipeList:
    """The ready-made recipes, in full, with the JSON schema they follow: post one by name, by name with
    overrides (`{"base": name, "set": {"eval.max_tokens": 2048}}`), or edited in full."""
    from compressor.spec import Recipe

    data = [RecipeInfo(name=n, stages=[next(iter(stage)) for stage in r["stages"]], recipe=r)
            for n, r in list_recipes().items()]
    return RecipeList(data=data, recipe_schema=Recipe.model_json_schema())
