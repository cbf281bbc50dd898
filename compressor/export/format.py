"""The artifact format: the one place that names what export writes and `compressor.load` reads.

Both halves of the format live here so that they cannot drift: the files of an artifact folder,
the tensor keys of a compressed-tensors linear, the manifest (what the folder holds, how it was
made, who can serve it) and the runtime-requirement codes a runtime must meet beyond a stock
graph. The manifest is deterministic on purpose (no timestamps), so the same job twice yields
byte-identical checkpoints and manifests; timings live in the report instead.
"""

from __future__ import annotations

import hashlib
import json
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch-free at run time: the service hashes artifact files with `sha256_file`
    from torch import nn

MANIFEST = "manifest.json"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

# Tensor keys of one compressed-tensors linear, `<linear name>.<key>`.
WEIGHT = "weight"  # int-quantized: one signed code per value
WEIGHT_PACKED = "weight_packed"  # pack-quantized: codes packed along K into int32
WEIGHT_SCALE = "weight_scale"
WEIGHT_ZERO_POINT = "weight_zero_point"  # pack-quantized: packed along N
WEIGHT_SHAPE = "weight_shape"


class RuntimeRequirement(str, Enum):
    """Codes in the manifest's `runtime_requirements`: the machine-readable twins of `not_servable_reasons`."""

    ONLINE_INPUT_ROTATION = "online_input_rotation"
    ONLINE_INPUT_KRONECKER = "online_input_kronecker"
    QK_ROTATION_AFTER_ROPE = "qk_rotation_after_rope"
    ACTIVATIONS_BELOW_8_BITS = "activations_below_8_bits"
    RUNTIME_OUTPUT_MATRIX = "runtime_output_matrix"
    FATRELU_ACTIVATION = "fatrelu_activation"


class UnsupportedArtifactError(ValueError):
    """The artifact needs something the loader cannot run faithfully, or is not what its manifest says."""


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


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise UnsupportedArtifactError(f"{folder} has no {MANIFEST}: not an artifact folder written by compressor")
    return json.loads(path.read_text())


def verify_files(folder: Path, manifest: dict[str, Any], checksums: bool = True) -> None:
    """Every file the manifest lists exists with its size (and sha256)."""
    for entry in manifest.get("files", []):
        path = folder / entry["name"]
        if not path.is_file():
            raise UnsupportedArtifactError(f"{path} is listed in the manifest but missing")
        if path.stat().st_size != entry["size"]:
            raise UnsupportedArtifactError(f"{path}: size {path.stat().st_size} != manifest {entry['size']}")
        if checksums and sha256_file(path) != entry["sha256"]:
            raise UnsupportedArtifactError(f"{path}: sha256 differs from the manifest")


def check_requirements(manifest: dict[str, Any], supported: set[RuntimeRequirement], runtime: str) -> None:
    """Refuse an artifact whose `runtime_requirements` name anything outside `supported`."""
    known = {r.value for r in RuntimeRequirement}
    unmet = [r for r in manifest.get("runtime_requirements", []) if r not in known or RuntimeRequirement(r) not in supported]
    if unmet:
        reasons = "; ".join(manifest.get("not_servable_reasons", [])) or ", ".join(unmet)
        raise UnsupportedArtifactError(f"{runtime} cannot run this artifact: it needs {', '.join(unmet)} ({reasons})")


def module_name(model: nn.Module, module: nn.Module) -> str:
    """The qualified name of `module` inside `model` (state-dict prefix)."""
    return next(name for name, m in model.named_modules() if m is module)
