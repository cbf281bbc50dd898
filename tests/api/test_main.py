"""The REST API in-process (no workers): auth, validation, idempotency, paging, artifacts."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.db import jobs as jobs_db
from service.records import JobStatus
from service.storage import LocalArtifactStore
from tests.api.conftest import RTN, SPEC, Api
from tests.service_setup import REPO

def _errors(response) -> list[dict]:  # noqa: ANN001
    return response.json()["detail"]


def test_auth_required_and_keys_see_only_their_jobs(api: Api) -> None:
    assert api.client.get("/v1/jobs").status_code == 401
    assert api.client.get("/v1/jobs", headers={"Authorization": "Bearer cmp_nope"}).status_code == 401
    r = api.submit()
    assert r.status_code == 202, r.text
    job = r.json()
    assert (job["status"], job["model"], job["attempt"], job["object"]) == ("queued", "smollm2-135m", 0, "compression.job")
    assert job["spec"]["recipe"]["eval"]["max_tokens"] == 1024
    for path in ("", "/events", "/artifacts"):
        assert api.client.get(f"/v1/jobs/{job['id']}{path}", headers=api.bob).status_code == 404
        assert api.client.get(f"/v1/jobs/{job['id']}{path}", headers=api.alice).status_code == 200
    assert api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=api.bob).status_code == 404
    assert api.client.get("/v1/jobs", headers=api.bob).json()["data"] == []
    assert [j["id"] for j in api.client.get("/v1/jobs", headers=api.alice).json()["data"]] == [job["id"]]


def test_idempotency_key(api: Api) -> None:
    first = api.submit(headers={"Idempotency-Key": "abc-1"})
    again = api.submit(headers={"Idempotency-Key": "abc-1"})
    assert first.status_code == 202 and again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true" and again.json()["id"] == first.json()["id"]
    other = api.submit({**SPEC, "recipe": {**RTN, "seed": 7}}, headers={"Idempotency-Key": "abc-1"})
    assert other.status_code == 422
    assert _errors(other)[0]["loc"] == ["header", "Idempotency-Key"] and "different request body" in _errors(other)[0]["msg"]
    # the same key is a different key for another owner
    assert api.client.post("/v1/jobs", json=SPEC, headers={**api.bob, "Idempotency-Key": "abc-1"}).status_code == 202
    assert api.submit(headers={"Idempotency-Key": "has space"}).status_code == 422


@pytest.mark.parametrize(("body", "loc", "needle"), [
    ({**SPEC, "gpu": 1}, ["body", "gpu"], "Extra inputs are not permitted"),
    ({**SPEC, "model": "../../etc/passwd"}, ["body", "model"], "should match pattern"),
    ({**SPEC, "model": "/abs/path"}, ["body", "model"], "should match pattern"),
    ({**SPEC, "model": "llama-9000"}, ["body", "model"], "models in the store: smollm2-135m"),
    ({"recipe": RTN}, ["body", "model"], "Field required"),
    ({**SPEC, "recipe": {**RTN, "stages": [{"quantize": {"weights": {"bits": 9}}}]}},
     ["body", "recipe", "stages", 0, "quantize", "quantize", "weights", "bits"], "less than or equal to 8"),
    ({**SPEC, "recipe": {**RTN, "stages": [{"quantize": {"weights": {"bits": -4}}}]}},
     ["body", "recipe", "stages", 0, "quantize", "quantize", "weights", "bits"], "greater than or equal to 2"),
    ({**SPEC, "recipe": {**RTN, "stages": [{"quantize": {"weights": {"method": "awq"}}}]}},
     ["body", "recipe", "stages", 0, "quantize", "quantize", "weights", "method"], "'rtn' or 'gptq'"),
    ({**SPEC, "recipe": {**RTN, "stages": [{"prune": {}}]}}, ["body", "recipe", "stages", 0], "one of: hadamard, quantize"),
    ({**SPEC, "recipe": {**RTN, "calibration": {"dataset": "/etc/shadow"}}},
     ["body", "recipe", "calibration", "dataset"], "no paths"),
    ([1, 2], ["body"], "valid dictionary"),
])
def test_bad_input_is_422_naming_the_field(api: Api, body: object, loc: list, needle: str) -> None:
    r = api.submit(body)
    assert r.status_code == 422, r.text
    errors = _errors(r)
    assert any(e["loc"][: len(loc)] == loc and needle in e["msg"] for e in errors), errors


def test_malformed_and_oversized_bodies(api: Api) -> None:
    r = api.client.post("/v1/jobs", content=b"{not json", headers={**api.alice, "Content-Type": "application/json"})
    assert r.status_code == 422 and _errors(r)[0]["type"] == "json_invalid"
    big = b'{"model": "' + b"a" * (10 * 1024 * 1024) + b'"}'
    r = api.client.post("/v1/jobs", content=big, headers={**api.alice, "Content-Type": "application/json"})
    assert r.status_code == 413 and "larger than" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while streaming
        yield b'{"model": "'
        for _ in range(20):
            yield b"a" * (1 << 20)

    r = api.client.post("/v1/jobs", content=chunks(), headers={**api.alice, "Content-Type": "application/json"})
    assert r.status_code == 413


def test_paging_filter_events_and_cancel(api: Api) -> None:
    ids = [api.submit().json()["id"] for _ in range(5)]
    seen, cursor = [], None
    while True:
        page = api.client.get("/v1/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})}, headers=api.alice).json()
        seen += [j["id"] for j in page["data"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert seen == ids[::-1]
    r = api.client.post(f"/v1/jobs/{ids[0]}/cancel", headers=api.alice)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    again = api.client.post(f"/v1/jobs/{ids[0]}/cancel", headers=api.alice)
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]
    only = api.client.get("/v1/jobs", params=[("status", "cancelled"), ("status", "failed")], headers=api.alice).json()
    assert [j["id"] for j in only["data"]] == [ids[0]]
    assert api.client.get("/v1/jobs", params={"status": "done"}, headers=api.alice).status_code == 422
    assert api.client.get("/v1/jobs", params={"cursor": "x"}, headers=api.alice).status_code == 422
    events = api.client.get(f"/v1/jobs/{ids[0]}/events", headers=api.alice).json()
    assert [e["data"]["status"] for e in events["data"]] == ["queued", "cancelled"]
    later = api.client.get(f"/v1/jobs/{ids[0]}/events", params={"after": events["data"][0]["id"]}, headers=api.alice).json()
    assert [e["message"] for e in later["data"]] == [events["data"][1]["message"]] and later["last_id"] == events["last_id"]
    assert api.client.get("/v1/jobs/job_000000000000000000000000", headers=api.alice).status_code == 404
    assert api.client.get("/v1/jobs/not-an-id", headers=api.alice).status_code == 422


def test_artifacts_download_with_sha256_and_range(api: Api, tmp_path: Path) -> None:
    job_id = api.submit().json()["id"]
    staging = tmp_path / "staging"
    (staging / "sub").mkdir(parents=True)
    payload = bytes(range(256)) * 40
    (staging / "model.safetensors").write_bytes(payload)
    (staging / "sub" / "config.json").write_text("{}")
    with api.db.transaction() as s:
        lease = jobs_db.claim(s, job_id, "test", 30)
        listing = LocalArtifactStore(api.settings.artifacts_dir).publish(job_id, staging)
        jobs_db.finish(s, lease, JobStatus.succeeded, message="ok", artifacts=listing, report={"perplexity": {}})
    arts = api.client.get(f"/v1/jobs/{job_id}/artifacts", headers=api.alice).json()["data"]
    assert [a["name"] for a in arts] == ["model.safetensors", "sub/config.json"]
    r = api.client.get(arts[0]["url"], headers=api.alice)
    assert r.status_code == 200 and r.content == payload
    assert r.headers["X-Checksum-SHA256"] == hashlib.sha256(payload).hexdigest() == arts[0]["sha256"]
    assert r.headers["Repr-Digest"].startswith("sha-256=:")
    part = api.client.get(arts[0]["url"], headers={**api.alice, "Range": "bytes=256-511"})
    assert part.status_code == 206 and part.content == payload[256:512]
    assert api.client.get(arts[1]["url"], headers=api.alice).json() == {}
    for bad in ("nope.bin", "../" + job_id + "/model.safetensors", "%2e%2e/%2e%2e/jobs.db"):
        r = api.client.get(f"/v1/jobs/{job_id}/artifacts/{bad}", headers=api.alice)
        assert r.status_code == 404, (bad, r.status_code)
    assert api.client.get(arts[0]["url"], headers=api.bob).status_code == 404


def test_catalog_health_metrics_openapi(api: Api) -> None:
    models = api.client.get("/v1/models", headers=api.alice).json()["data"]
    assert [{k: m[k] for k in ("name", "status", "architecture", "params", "num_layers", "hidden_size", "imported_by")}
            for m in models] == [{"name": "smollm2-135m", "status": "ready", "architecture": "LlamaForCausalLM",
                                  "params": 134515008, "num_layers": 30, "hidden_size": 576, "imported_by": "cli"}]
    recipes = {r["name"]: r["recipe"] for r in api.client.get("/v1/recipes", headers=api.alice).json()["data"]}
    assert {"w4a16-rtn", "w4a16-gptq", "w8a8-rtn"} <= set(recipes)
    assert api.submit({"model": "smollm2-135m", "recipe": recipes["w4a16-rtn"]}).status_code == 202
    assert api.client.get("/healthz").json() == {"status": "ok", "database": "ok", "executor": "local", "version": "1"}
    text = api.client.get("/metrics").text
    assert 'compressor_jobs{status="queued"} 1.0' in text and "compressor_queue_depth 1.0" in text
    assert "compressor_job_duration_seconds_count" not in text  # no job has finished yet
    finished = api.submit().json()["id"]
    with api.db.transaction() as s:
        lease = jobs_db.claim(s, finished, "test", 30)
        assert jobs_db.finish(s, lease, JobStatus.succeeded, message="ok", report={})
    text = api.client.get("/metrics").text
    assert 'compressor_jobs{status="succeeded"} 1.0' in text and "compressor_expired_leases 0.0" in text
    assert 'compressor_job_duration_seconds_count{status="succeeded"} 1.0' in text
    assert 'compressor_job_duration_seconds_bucket{le="10.0",status="succeeded"} 1.0' in text
    spec = api.client.get("/openapi.json").json()
    assert {"/v1/jobs", "/v1/jobs/{job_id}/events", "/v1/jobs/{job_id}/artifacts/{name}"} <= set(spec["paths"])


def test_api_process_never_imports_torch(tmp_path: Path) -> None:
    code = (
        "import sys; from fastapi.testclient import TestClient; from api.main import create_app; "
        "from service.settings import Settings; "
        f"app = create_app(Settings(home={str(tmp_path)!r}, embedded_workers=False)); "
        "c = TestClient(app).__enter__(); c.get('/v1/recipes'); c.get('/openapi.json'); "
        "import workers.celery_config, workers.supervisor, compressor.models.store, compressor.cli, api.cli; "
        "assert 'torch' not in sys.modules, 'torch was imported'; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
