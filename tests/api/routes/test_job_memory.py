"""POST /v1/jobs refuses (422, with the numbers) a job whose estimated peak memory fits no configured worker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from tests.api.conftest import RTN, SPEC, Api
from tests.service_setup import fake_store_entry, service_settings

# SmolLM2-135M's config.json as the store keeps it (the estimate reads only the widths)
SMOLLM_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
                 "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
                 "head_dim": 64, "vocab_size": 49152, "tie_word_embeddings": True, "max_position_embeddings": 8192,
                 "rms_norm_eps": 1e-5, "hidden_act": "silu"}


def _api(tmp_path: Path, worker_memory: str):
    settings = service_settings(tmp_path, embedded_workers=False, worker_memory=worker_memory)
    fake_store_entry(settings.home)
    (settings.home / "models" / "smollm2-135m" / "config.json").write_text(json.dumps(SMOLLM_CONFIG))
    app = create_app(settings)
    return app, settings


@pytest.fixture
def small_worker_api(tmp_path: Path):
    app, settings = _api(tmp_path, "cpu=1GiB")
    with TestClient(app) as client:
        yield Api(client, settings, app.state.db)


def test_job_too_big_for_every_worker_is_refused_with_the_numbers(small_worker_api):
    r = small_worker_api.submit()
    assert r.status_code == 422, r.text
    [detail] = r.json()["detail"]
    assert detail["type"] == "job_exceeds_worker_memory" and detail["loc"] == ["body", "recipe"]
    msg = detail["msg"]
    assert "smollm2-135m: this job needs about " in msg
    assert "(cpu 1.00 GiB; COMPRESSOR_WORKER_MEMORY)" in msg
    assert "layers sequential" in msg  # execution.layers auto: refused only when even one layer at a time does not fit
    assert "To fit: a smaller eval.window (now 512)" in msg
    assert detail["ctx"]["worker_bytes"] == 2**30
    assert detail["ctx"]["estimate_bytes"] > detail["ctx"]["worker_bytes"]
    assert small_worker_api.client.get("/v1/jobs", headers=small_worker_api.alice).json()["data"] == []


def test_resident_job_is_told_of_the_sequential_mode(small_worker_api):
    body = {**SPEC, "recipe": {**RTN, "execution": {"layers": "resident"}}}
    r = small_worker_api.submit(body)
    assert r.status_code == 422, r.text
    msg = r.json()["detail"][0]["msg"]
    assert "layers resident" in msg and "execution.layers: sequential" in msg


def test_gptq_refusal_names_the_calibration_samples(small_worker_api):
    stages = [{"quantize": {"weights": {"bits": 4, "strategy": "channel", "method": "gptq"}}}]
    body = {**SPEC, "recipe": {**RTN, "stages": stages, "calibration": {"samples": 4096, "seqlen": 2048}}}
    r = small_worker_api.submit(body)
    assert r.status_code == 422, r.text
    assert "fewer calibration.samples (now 4096)" in r.json()["detail"][0]["msg"]


def test_job_that_fits_a_worker_is_accepted(tmp_path):
    app, settings = _api(tmp_path, "cuda=80GiB,cpu=64GiB")
    with TestClient(app) as client:
        api = Api(client, settings, app.state.db)
        r = api.submit()
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "queued"


def test_unset_worker_memory_means_no_check(tmp_path):
    app, settings = _api(tmp_path, "")
    body = {**SPEC, "recipe": {**RTN, "calibration": {"samples": 4096, "seqlen": 8192}}}
    with TestClient(app) as client:
        assert Api(client, settings, app.state.db).submit(body).status_code == 202


def test_a_recipe_that_needs_the_whole_model_is_not_offered_the_sequential_mode(small_worker_api):
    body = {**SPEC, "recipe": {**RTN, "stages": [{"ostquant": {"steps": 1}}, *RTN["stages"]]}}
    r = small_worker_api.submit(body)
    assert r.status_code == 422, r.text
    msg = r.json()["detail"][0]["msg"]
    assert "layers resident" in msg and "execution.layers: sequential" not in msg
