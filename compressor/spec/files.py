"""Recipe files: a user's YAML/JSON file, or a ready-made recipe shipped as package data.

The ready-made recipes live in `compressor/recipes/` and are read through importlib.resources,
so they load from an installed wheel as well as from a checkout.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

import yaml

from compressor.spec.recipe import Recipe

RECIPES_PACKAGE = "compressor"
RECIPES_FOLDER = "recipes"


def recipes_dir() -> Traversable:
    """The folder of ready-made recipes inside the installed package."""
    return files(RECIPES_PACKAGE) / RECIPES_FOLDER


def _ready_made_files() -> dict[str, Traversable]:
    return {p.name.removesuffix(".yaml"): p for p in recipes_dir().iterdir() if p.name.endswith(".yaml")}


def _parse(text: str, name: str, source: str) -> Recipe:
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a recipe is a mapping with keys such as stages, calibration, eval")
    data.setdefault("name", name)
    return Recipe.model_validate(data)


def load_recipe(path_or_name: str | Path) -> Recipe:
    """A recipe from a YAML/JSON file, or a ready-made one by name (`w4a16-gptq`)."""
    path = Path(path_or_name)
    if path.exists():
        return _parse(path.read_text(), path.stem, str(path))
    ready = _ready_made_files()
    if str(path_or_name) not in ready:
        known = ", ".join(sorted(ready))
        raise FileNotFoundError(f"no recipe file '{path_or_name}' and no ready-made recipe of that name; ready-made: {known}")
    return _parse(ready[str(path_or_name)].read_text(), str(path_or_name), f"ready-made recipe {path_or_name}")


def ready_made_recipes() -> dict[str, Recipe]:
    return {name: load_recipe(name) for name in sorted(_ready_made_files())}
