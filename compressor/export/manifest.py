"""`manifest.json`: what an artifact folder holds, how it was made, and who can serve it.

Deterministic on purpose (no timestamps), so the same job twice yields byte-identical
checkpoints and manifests; timings live in the report instead.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "transformers", "compressed-tensors", "safetensors", "compressor"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def write_manifest(folder: Path, info: dict[str, Any]) -> Path:
    """List every file in `folder` (name, size, sha256) together with `info`."""
    files = [
        {"name": p.name, "size": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST
    ]
    manifest = {**info, "files": files}
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path
