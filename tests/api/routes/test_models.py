"""/v1/models: a sharded folder imported as a job on the local executor (sha256s in store.json),
the allow-list's 4xx, pickle refused in the job, idempotency, cancel, who may delete, and when."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from service.settings import Settings
from tests.model_folders import pickle_folder, sharded_folder
from tests.service_setup import create_api_key, fake_store_entry, service_settings, wait_for

TERMINAL = ("succeeded", "failed", "cancelled")


class ModelsApi:
    def __init__(self, client: TestClient, settings: Settings, root: Path):
        self.client, self.settings, self.root = client, settings, root
        db = client.app.state.db
        self.db = db
        self.alice = {"Authorization": f"Bearer {create_api_key(db, 'alice')}"}
        self.bob = {"Authorization": f"Bearer {create_api_key(db, 'bob')}"}

    def post(self, body: dict, headers: dict | None = None):  # noqa: ANN201
        return self.client.post("/v1/models", json=body, headers={**self.alice, **(headers or {})})

    def wait(self, job_id: str) -> dict:
        def done() -> dict | None:
            job = self.client.get(f"/v1/jobs/{job_id}", headers=self.alice).json()
            return job if job["status"] in TERMINAL else None
        return wait_for(done, 120, f"import job {job_id}")  # type: ignore[return-value]


def _app(tmp_path: Path, **overrides: object) -> Iterator[ModelsApi]:
    root = tmp_path / "models-in"
    root.mkdir()
    settings = service_settings(tmp_path, **{"model_sources": f"{root}, hf://Qwen", **overrides})
    fake_store_entry(settings.home)
    with TestClient(create_app(settings)) as client:
        yield ModelsApi(client, settings, root)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ModelsApi]:
    """Embedded local workers: import jobs run in spawned job processes, as in production."""
    yield from _app(tmp_path, embedded_workers=True)


@pytest.fixture
def queued_api(tmp_path: Path) -> Iterator[ModelsApi]:
    """No workers: jobs stay queued."""
    yield from _app(tmp_path, embedded_workers=False)


def test_sharded_folder_imported_over_rest(api: ModelsApi) -> None:
    folder = sharded_folder(api.root / "Tiny-Llama", shards=3)
    r = api.post({"source": str(folder)}, headers={"Idempotency-Key": "imp-1"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert (job["kind"], job["model"], job["status"]) == ("model-import", "tiny-llama", "queued")
    assert job["spec"]["source"] == str(folder)
    replay = api.post({"source": str(folder)}, headers={"Idempotency-Key": "imp-1"})
    assert replay.status_code == 200 and replay.json()["id"] == job["id"]
    reused = api.post({"source": str(folder), "name": "other"}, headers={"Idempotency-Key": "imp-1"})
    assert reused.status_code == 422 and reused.json()["detail"][0]["type"] == "idempotency_key_reused"

    done = api.wait(job["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["report"]["name"] == "tiny-llama" and done["progress"]["fraction"] == 1.0
    events = api.client.get(f"/v1/jobs/{job['id']}/events", headers=api.alice).json()["data"]
    assert any("fetching model-00001-of-" in e["message"] for e in events)

    info = json.loads((api.settings.home / "models" / "tiny-llama" / "store.json").read_text())
    shards = sorted(p.name for p in folder.glob("*.safetensors"))
    recorded = {f["name"]: f["sha256"] for f in info["files"]}
    assert len(shards) >= 3 and all(recorded[s] == hashlib.sha256((folder / s).read_bytes()).hexdigest() for s in shards)

    detail = api.client.get("/v1/models/tiny-llama", headers=api.alice).json()
    assert (detail["status"], detail["architecture"], detail["dtype"], detail["imported_by"]) == (
        "ready", "LlamaForCausalLM", "bfloat16", "you")
    assert {f["name"]: f["sha256"] for f in detail["files"]} == recorded
    support = detail["support"]
    assert (support["num_layers"], support["hidden_size"], support["intermediate_size"], support["head_dim"]) == (3, 48, 96, 8)
    assert support["methods"]["rtn"] == {"ok": True, "reason": None} and detail["formats"]["compressed-tensors"]["ok"]
    fp8, w4a8 = detail["recipes"]["w8a8-fp8-dynamic"], detail["recipes"]["w4a8-fp8-gptq"]
    assert fp8["applies"] and fp8["engines"]["vllm-hopper"]["serves"]
    assert not w4a8["applies"] and "group_size: 128 does not divide hidden_size" in w4a8["reason"]  # width 48
    assert w4a8["engines"]["vllm-hopper"]["serves"] and not w4a8["engines"]["vllm-ampere"]["serves"]
    as_bob = api.client.get("/v1/models/tiny-llama", headers=api.bob).json()
    assert as_bob["imported_by"] == "another key" and as_bob["import_job_id"] is None  # shared, but not bob's job
    names = [(m["name"], m["imported_by"]) for m in api.client.get("/v1/models", headers=api.bob).json()["data"]]
    assert names == [("smollm2-135m", "cli"), ("tiny-llama", "another key")]
    conflict = api.post({"source": str(folder)})
    assert conflict.status_code == 409 and "already holds a model 'tiny-llama'" in conflict.json()["detail"]


def test_pickle_checkpoint_fails_the_import_job_with_its_message(api: ModelsApi) -> None:
    job = api.post({"source": str(pickle_folder(api.root / "pkl")), "name": "pkl"}).json()
    done = api.wait(job["id"])
    assert done["status"] == "failed" and done["error"]["type"] == "UnsafeSourceError"
    assert "holds pickle weights (pytorch_model.bin) and no *.safetensors" in done["error"]["message"]
    assert api.client.get("/v1/models/pkl", headers=api.alice).status_code == 404
    again = api.post({"source": str(sharded_folder(api.root / "good")), "name": "pkl"})  # the name is free again
    assert again.status_code == 202 and api.wait(again.json()["id"])["status"] == "succeeded"


def test_sources_outside_the_allow_list_are_refused_naming_the_allowed(queued_api: ModelsApi, tmp_path: Path) -> None:
    api = queued_api
    allowed = f"allowed: local folders under {api.root}; hub organisations hf://Qwen (COMPRESSOR_MODEL_SOURCES)"
    outside = sharded_folder(tmp_path / "outside")
    (api.root / "link").symlink_to(outside)
    for source, why in [(str(outside), "outside the allowed local roots"),
                        (f"{api.root}/../outside", "may not contain '..'"),
                        (str(api.root / "link"), "a symlink leaves the root"),
                        ("hf://meta-llama/Llama-3.1-8B", "hub organisation meta-llama is not in the allow-list"),
                        ("s3://bucket/model", "bucket and prefix are not in the allow-list")]:
        r = api.post({"source": source, "name": "x"})
        assert r.status_code == 403, (source, r.text)
        assert why in r.json()["detail"] and r.json()["detail"].endswith(allowed), source
    r = api.post({"source": "gs://bucket/model", "name": "x"})
    assert r.status_code == 422
    assert r.json()["detail"] == [{"loc": ["body", "source"], "type": "unknown_scheme",
                                   "msg": "unknown source scheme gs://; allowed: a local path, file://, hf://, s3://"}]
    r = api.post({"source": str(api.root), "name": "Bad Name"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "name"]
    r = api.post({"source": str(api.root), "trust_remote_code": True})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "trust_remote_code"]
    assert api.client.get("/v1/jobs", headers=api.alice).json()["data"] == []  # no job was created


def test_a_queued_import_holds_its_name_until_cancelled(queued_api: ModelsApi) -> None:
    api = queued_api
    folder = sharded_folder(api.root / "m")
    job = api.post({"source": str(folder)}).json()
    listed = api.client.get("/v1/models", headers=api.alice).json()["data"]
    assert {"name": "m", "status": "importing", "import_job_id": job["id"]}.items() <= listed[0].items()
    busy = api.post({"source": str(folder)})
    assert busy.status_code == 409 and f"is being imported by job {job['id']}" in busy.json()["detail"]
    assert api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=api.alice).json()["status"] == "cancelled"
    assert api.post({"source": str(folder)}).status_code == 202


def test_delete_only_by_its_importer_and_not_while_jobs_use_it(api: ModelsApi) -> None:
    job = api.post({"source": str(sharded_folder(api.root / "mine"))}).json()
    assert api.wait(job["id"])["status"] == "succeeded"
    r = api.client.delete("/v1/models/smollm2-135m", headers=api.alice)
    assert r.status_code == 403 and "added with the CLI" in r.json()["detail"]
    r = api.client.delete("/v1/models/mine", headers=api.bob)
    assert r.status_code == 403 and "only that key may delete it" in r.json()["detail"]
    api.client.app.state.executor.stop()  # no worker picks up the compression job below
    per_channel = {"stages": [{"quantize": {"weights": {"bits": 4, "strategy": "channel"}}}]}  # fits the tiny widths
    using = api.client.post("/v1/jobs", headers=api.bob, json={"model": "mine", "recipe": per_channel}).json()
    r = api.client.delete("/v1/models/mine", headers=api.alice)
    assert r.status_code == 409 and using["id"] in r.json()["detail"]
    api.client.post(f"/v1/jobs/{using['id']}/cancel", headers=api.bob)
    assert api.client.delete("/v1/models/mine", headers=api.alice).status_code == 204
    assert api.client.get("/v1/models/mine", headers=api.alice).status_code == 404
    assert not (api.settings.home / "models" / "mine").exists()
    assert api.client.delete("/v1/models/mine", headers=api.alice).status_code == 404


def test_s3_import_over_rest_takes_the_endpoint_from_the_allow_list(tmp_path: Path, s3_endpoint: str) -> None:
    import boto3

    folder = sharded_folder(tmp_path / "src")
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="team")
    for p in folder.iterdir():
        client.upload_file(str(p), "team", f"llm/tiny/{p.name}")
    allowed = f"s3://team/llm?endpoint_url={s3_endpoint}&region=us-east-1"
    for api in _app(tmp_path, embedded_workers=True, model_sources=allowed):
        r = api.post({"source": f"s3://team/llm/tiny?endpoint_url={s3_endpoint}"})
        assert r.status_code == 403 and "takes no endpoint_url" in r.json()["detail"]
        job = api.post({"source": "s3://team/llm/tiny"}).json()
        done = api.wait(job["id"])
        assert done["status"] == "succeeded", done["error"]
        files = {f["name"]: f["sha256"] for f in api.client.get("/v1/models/tiny", headers=api.alice).json()["files"]}
        assert all(files[p.name] == hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.safetensors"))


def test_cancel_a_running_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A download that hangs is cancelled like a compression job (killed after the grace period); the
    name is free again, and the next import of it clears the staging folder the killed one left."""
    import threading

    from huggingface_hub import constants

    from tests.hub_server import HubServer

    folder = sharded_folder(tmp_path / "repo")
    second = sorted(p.name for p in folder.glob("model-*.safetensors"))[1]
    gate = threading.Event()
    hub = HubServer({"acme/slow": folder}, gates={second: gate})
    monkeypatch.setenv("HF_ENDPOINT", hub.url)  # the spawned job process reads it
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    try:
        for api in _app(tmp_path, embedded_workers=True, model_sources="hf://acme", cancel_grace_s=1.0):
            job = api.post({"source": "hf://acme/slow"}).json()

            def fetching() -> bool:
                events = api.client.get(f"/v1/jobs/{job['id']}/events", headers=api.alice).json()["data"]
                return any(f"fetching {second}" in e["message"] for e in events)
            wait_for(fetching, 60, f"the import to reach {second}")
            assert api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=api.alice).json()["status"] == "cancelling"
            assert api.wait(job["id"])["status"] == "cancelled"
            assert [p.name for p in (api.settings.home / "models").glob(".slow.importing-*")]  # the kill left it
            assert api.client.get("/v1/models/slow", headers=api.alice).status_code == 404
            gate.set()
            again = api.post({"source": "hf://acme/slow"}).json()
            assert api.wait(again["id"])["status"] == "succeeded"
            assert sorted(p.name for p in (api.settings.home / "models").iterdir()) == ["slow", "smollm2-135m"]
    finally:
        gate.set()
        hub.stop()
