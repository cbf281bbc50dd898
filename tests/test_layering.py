"""The floors import only downwards: api/ → workers/ → service/, and compressor/ knows none of them.

Read statically from every file's syntax tree (lazy imports inside functions and
`importlib.import_module("…")` with a literal count too), then once at run time in a fresh
interpreter, in the style of `test_api_process_never_imports_torch`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# package -> the top-level packages it must never import
FORBIDDEN = {
    "compressor": {"api", "workers", "service"},
    "triton_kernels": {"api", "workers", "service", "compressor"},
    "service": {"api", "workers"},
    "workers": {"api"},
}


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in the file, wherever it sits."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value.split(".")[0]))
    return found


def upward_imports(package: str) -> list[str]:
    forbidden = FORBIDDEN[package]
    return [f"{path.relative_to(REPO)}:{line} imports {name}"
            for path in sorted((REPO / package).rglob("*.py"))
            for line, name in imported_packages(path) if name in forbidden]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_points_up(package: str) -> None:
    assert (REPO / package / "__init__.py").is_file()
    assert upward_imports(package) == []


def test_the_checker_sees_lazy_and_string_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os\ndef f():\n    from api.db import jobs\n    import workers.local as w\n"
                      "    importlib.import_module('service.settings')\nfrom . import sibling\n")
    assert imported_packages(sample) == [(1, "os"), (3, "api"), (4, "workers"), (5, "service")]


def test_service_and_library_load_without_the_floors_above() -> None:
    code = (
        "import sys, pkgutil, importlib, service, service.db, service.storage\n"
        "for m in pkgutil.walk_packages(service.__path__, 'service.'):\n"
        "    if '.migrations' not in m.name: importlib.import_module(m.name)\n"
        "import service.storage.s3, compressor.cli, compressor.spec\n"
        "loaded = sorted({n.split('.')[0] for n in sys.modules} & {'api', 'workers'})\n"
        "assert not loaded, loaded; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
