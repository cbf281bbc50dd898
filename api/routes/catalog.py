"""/v1/recipes: the ready-made recipes a job may name (models: `api/routes/models.py`)."""

from __future__ import annotations

from fastapi import APIRouter

from api.catalog import list_recipes
from api.deps import OwnerDep
from api.schemas import ErrorBody, RecipeInfo, RecipeList

router = APIRouter(prefix="/v1", tags=["catalog"])


@router.get("/recipes", response_model=RecipeList, operation_id="recipes-list", responses={401: {"model": ErrorBody}})
def recipes(owner: OwnerDep) -> RecipeList:
    """The ready-made recipes, in full, with the JSON schema they follow: post one by name, by name with
    overrides (`{"base": name, "set": {"eval.max_tokens": 2048}}`), or edited in full."""
    from compressor.export.engines import recipe_engine_tables
    from compressor.spec import Recipe

    tables = recipe_engine_tables()
    data = [RecipeInfo(name=n, stages=[next(iter(stage)) for stage in r["stages"]], recipe=r, engines=tables.get(n, {}))
            for n, r in list_recipes().items()]
    return RecipeList(data=data, recipe_schema=Recipe.model_json_schema())
