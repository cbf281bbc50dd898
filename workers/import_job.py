"""The import job: what the job process runs for a `model-import` job (POST /v1/models).

It runs on the same executors as a compression job, with the same progress events, cancel
and retries; its `report` is the model's store.json. The source is admitted again here under
the allow-list the API admitted it with, so a job row alone cannot widen it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.records import JobKind, ModelImportSpec

KIND = JobKind.model_import.value


@dataclass
class ImportResult:
    report: dict[str, Any]


def run(spec: ModelImportSpec, out_dir: Path, *, home: Path, progress: Callable, should_cancel: Callable) -> ImportResult:
    from compressor.models.sources import SourcePolicy
    from compressor.models.store import ModelStore

    store = ModelStore(home)
    # an earlier attempt killed mid-copy left its staging folder; the models table makes this job
    # the only import of the name, so whatever staging the name has is that attempt's
    for stale in store.root.glob(f".{spec.name}.importing-*"):
        shutil.rmtree(stale, ignore_errors=True)
    path = store.import_source(spec.source, spec.name, spec.revision, policy=SourcePolicy.parse(spec.allowed_sources),
                               max_bytes=spec.max_bytes, progress=progress, should_cancel=should_cancel)
    return ImportResult(report=json.loads((path / "store.json").read_text()))
