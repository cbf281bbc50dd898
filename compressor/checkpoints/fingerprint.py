"""The fingerprint of a job: everything that changes its result, so a checkpoint is reused only for the same job.

Model files (sha256 each), the recipe (its canonical sha256, which covers the seed and the
calibration settings), the calibration text, library versions and the device kind (CPU ISA
level or GPU model: float kernels differ between them). Thread count is left out: the same
job gave bit-identical weights at 1 and 2 threads here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import BaseModel

from compressor.data import load_text
from compressor.export.format import library_versions, sha256_file
from compressor.spec import JobSpec

MODEL_FILE_SUFFIXES = (".safetensors", ".json", ".model", ".txt", ".gguf")


class Fingerprint(BaseModel):
    model: str
    model_files: dict[str, str]
    recipe_sha256: str
    calibration_sha256: str | None
    versions: dict[str, str]
    device_kind: str

    def differences(self, other: Fingerprint) -> list[str]:
        """What changed from `self` to `other`, in words (empty: the same job)."""
        out = []
        if self.model != other.model:
            out.append(f"model {self.model} → {other.model}")
        changed = sorted(n for n in set(self.model_files) | set(other.model_files)
                         if self.model_files.get(n) != other.model_files.get(n))
        if changed:
            out.append(f"model files changed: {', '.join(changed[:5])}")
        if self.recipe_sha256 != other.recipe_sha256:
            out.append(f"recipe sha256 {self.recipe_sha256[:12]} → {other.recipe_sha256[:12]}")
        if self.calibration_sha256 != other.calibration_sha256:
            out.append("calibration text changed")
        for lib in sorted(set(self.versions) | set(other.versions)):
            if self.versions.get(lib) != other.versions.get(lib):
                out.append(f"{lib} {self.versions.get(lib)} → {other.versions.get(lib)}")
        if self.device_kind != other.device_kind:
            out.append(f"device {self.device_kind} → {other.device_kind}")
        return out


def job_fingerprint(spec: JobSpec, model_dir: Path, data_dir: Path, device_kind: str) -> Fingerprint:
    """What must be equal for a checkpoint to be reused: model files, recipe, calibration text, versions, device."""
    cal = spec.recipe.calibration
    try:
        calibration = text_sha256(load_text(cal.dataset, "calibration", data_dir))
    except (FileNotFoundError, ValueError):
        calibration = None  # the stage that needs it reports the error
    return Fingerprint(model=spec.model, model_files=model_file_hashes(model_dir), recipe_sha256=spec.recipe.sha256(),
                       calibration_sha256=calibration, versions=library_versions(), device_kind=device_kind)


def model_file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of each file of a stored model (what loading reads); `store.json` lists them when the import recorded them."""
    return {p.name: sha256_file(p) for p in sorted(Path(folder).iterdir())
            if p.is_file() and p.suffix in MODEL_FILE_SUFFIXES and p.name != "store.json"}


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
