"""The dry-run runner writes what the real pipeline writes, in the same shapes, so the service's
tests and the dashboard exercise a report and a manifest the pipeline really produces."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from compressor.eval.report import Report
from compressor.progress import ProgressEvent
from compressor.spec import JobSpec, load_recipe
from workers import dry_run


def test_report_and_manifest_have_the_pipelines_shapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPRESSOR_DRY_RUN_LAYER_S", "0")
    spec = JobSpec(model="smollm2-135m", recipe=load_recipe("w4a16-rtn"))
    events: list[ProgressEvent] = []
    result = dry_run.run(spec, tmp_path / "out", progress=events.append, home=tmp_path / "home")

    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report == result.report
    assert Report.model_validate(report).model_dump(mode="json") == report  # the pipeline's typed report, key for key
    assert report["job"]["recipe_sha256"] == spec.recipe.sha256() and report["job"]["dry_run"] is True
    assert set(report["size"]) == {"bits_per_weight", "checkpoint_bytes", "original_bytes"}

    checkpoint = tmp_path / "out" / dry_run.CHECKPOINT_DIR
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    files = {p.name: p for p in checkpoint.iterdir() if p.name != "manifest.json"}
    assert [f["name"] for f in manifest["files"]] == sorted(files)
    for entry in manifest["files"]:
        data = files[entry["name"]].read_bytes()
        assert entry == {"name": entry["name"], "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert manifest["recipe_sha256"] == spec.recipe.sha256()
    assert [e.layer for e in events if e.kind == "layer"] == list(range(dry_run.NUM_LAYERS))
