"""A job SIGKILLed mid-stage resumes from its checkpoint (through the CLI) and ends with the same bytes.

Each test runs the job once uninterrupted (in process), then as `compressor run` in a
subprocess that `COMPRESSOR_FAILPOINT` kills with SIGKILL right after a given unit is saved,
then `compressor run --resume OUT`; the exported model.safetensors must have the sha256 of
the uninterrupted run, and the report must say where it resumed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from compressor.checkpoints import failpoint
from compressor.checkpoints.store import INTERVAL_ENV, JOURNAL
from compressor.export.format import sha256_file
from compressor.pipeline import run
from compressor.spec import JobSpec

from tests.resume_jobs import GPTQ, KILLS, SMALL

REPO = Path(__file__).resolve().parents[3]

def cli(home: Path, *args: str, failpoint_key: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COMPRESSOR_HOME": str(home), INTERVAL_ENV: "0", "PYTHONPATH": str(REPO)}
    env.pop(failpoint.ENV, None)
    if failpoint_key:
        env[failpoint.ENV] = failpoint_key
    return subprocess.run([sys.executable, "-m", "compressor.cli", "run", *args], env=env, capture_output=True, text=True,
                          timeout=600)


def killed_then_resumed(home: Path, tmp_path: Path, stages: list, key: str) -> tuple[dict, Path]:
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"stages": stages, **SMALL}))
    out = tmp_path / "cli-out"
    first = cli(home, "--model", "tiny4", "--recipe", str(recipe), "--out", str(out), failpoint_key=key)
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    journal = json.loads((out / "resume" / JOURNAL).read_text())
    assert key in journal["units"]
    second = cli(home, "--resume", str(out))
    assert second.returncode == 0, second.stderr[-3000:]
    assert not (out / "resume").exists()  # deleted once the job succeeded
    return json.loads((out / "report.json").read_text()), out


def uninterrupted(home: Path, tmp_path: Path, stages: list) -> tuple[dict, str]:
    spec = JobSpec.model_validate({"model": "tiny4", "recipe": {"stages": stages, **SMALL}})
    result = run(spec, tmp_path / "whole", home=home)
    return result.report, sha256_file(tmp_path / "whole" / "checkpoint" / "model.safetensors")


@pytest.mark.parametrize("job", sorted(KILLS))
def test_killed_job_resumes_to_the_same_bytes(tiny4_store, tmp_path, job, monkeypatch):
    stages, key, where = KILLS[job]
    monkeypatch.setenv(INTERVAL_ENV, "0")
    whole, whole_sha = uninterrupted(tiny4_store, tmp_path, stages)
    report, out = killed_then_resumed(tiny4_store, tmp_path, stages, key)
    assert sha256_file(out / "checkpoint" / "model.safetensors") == whole_sha
    assert report["perplexity"] == whole["perplexity"]
    assert report["resume"]["resumed_from"] == where
    assert report["resume"]["attempt"] == 2
    assert report["resume"]["units_reused"] >= 1 and report["resume"]["seconds_saved"] > 0


def test_changed_recipe_does_not_resume_from_a_stale_checkpoint(tiny4_store, tmp_path):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"stages": GPTQ, **SMALL}))
    out = tmp_path / "out"
    assert cli(tiny4_store, "--model", "tiny4", "--recipe", str(recipe), "--out", str(out),
               failpoint_key="s0:layer:00001").returncode == -signal.SIGKILL
    changed = JobSpec.model_validate({"model": "tiny4", "recipe": {"stages": GPTQ, **SMALL, "seed": 1}})
    events = []
    result = run(changed, out, home=tiny4_store, resume_dir=out / "resume", progress=events.append)
    assert result.report["resume"]["units_reused"] == 0
    assert "resumed_from" not in result.report["resume"]
    assert "recipe sha256" in result.report["resume"]["fresh_reason"]
    assert any(e.message.startswith("starting fresh: the checkpoint is for a different job") for e in events)


def test_changed_model_file_does_not_resume(tiny4_store, tmp_path):
    spec = JobSpec.model_validate({"model": "tiny4", "recipe": {"stages": GPTQ, **SMALL}})
    out = tmp_path / "out"
    from compressor.checkpoints import CheckpointStore
    from compressor.checkpoints.fingerprint import job_fingerprint

    model_dir = tiny4_store / "models" / "tiny4"
    before = job_fingerprint(spec, model_dir, tiny4_store / "data", "cpu:X")
    CheckpointStore(out / "resume", before).save("s0:layer:00000", {}, {"x": 1})
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-6}))
    after = job_fingerprint(spec, model_dir, tiny4_store / "data", "cpu:X")
    store = CheckpointStore(out / "resume", after)
    assert store.keys() == []
    assert store.info.fresh_reason == "the checkpoint is for a different job: model files changed: config.json"
