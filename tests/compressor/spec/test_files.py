"""Ready-made recipes are package data: they load from an installed wheel, away from the checkout."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from compressor.spec import load_recipe, ready_made_recipes, recipes_dir

REPO = Path(__file__).resolve().parents[3]


def test_ready_made_recipes_are_read_from_the_package():
    folder = Path(str(recipes_dir()))
    assert folder == REPO / "compressor" / "recipes"
    assert set(ready_made_recipes()) == {p.stem for p in folder.glob("*.yaml")}
    assert load_recipe("w4a16-rtn").name == "w4a16-rtn"


def test_recipes_load_from_a_built_wheel(tmp_path):
    """Build a wheel of the library alone, unpack it, and list the recipes from there with the checkout out of reach."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "compressor", src / "compressor", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", src)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(tmp_path / "dist"), str(src)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("compressor-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "compressor/recipes/w4a16-gptq.yaml" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import sys, compressor.spec as s; "
        "print(s.__file__); print(','.join(sorted(s.ready_made_recipes()))); print('torch' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, check=True, timeout=120).stdout.splitlines()
    assert out[0] == str(site / "compressor" / "spec" / "__init__.py")
    assert out[1] == ",".join(sorted(p.stem for p in (REPO / "compressor" / "recipes").glob("*.yaml")))
    assert out[2] == "False"
