"""A queue that refuses a new job: the job fails at once with the reason, 503 to the client, nothing left queued."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from api.main import create_app
from service.db import model_imports
from tests.model_folders import sharded_folder
from tests.service_setup import create_api_key, fake_store_entry, service_settings

DEAD_BROKER = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def test_a_job_the_queue_cannot_take_fails_with_503_and_frees_its_model_name(tmp_path: Path) -> None:
    root = tmp_path / "models-in"
    folder = sharded_folder(root / "Tiny-Llama")
    settings = service_settings(tmp_path, embedded_workers=False, executor="celery", broker_url=DEAD_BROKER,
                                model_sources=str(root))
    fake_store_entry(settings.home)
    app = create_app(settings)
    with TestClient(app) as client:
        auth = {"Authorization": f"Bearer {create_api_key(app.state.db, 'alice')}"}
        r = client.post("/v1/jobs", json={"model": "smollm2-135m", "recipe": "w4a16-rtn"}, headers=auth)
        assert r.status_code == 503 and "job queue is unavailable" in r.json()["detail"]
        jobs = client.get("/v1/jobs", headers=auth).json()["data"]
        assert [j["status"] for j in jobs] == ["failed"]
        assert client.get(f"/v1/jobs/{jobs[0]['id']}", headers=auth).json()["error"]["type"] == "QueueUnavailable"

        r = client.post("/v1/models", json={"source": str(folder)}, headers=auth)
        assert r.status_code == 503
        # the name reserved for the import is released with the failed job: a later import may take it
        with app.state.db.transaction() as s:
            assert model_imports.find(s, "tiny-llama") is None
        assert [j["status"] for j in client.get("/v1/jobs", headers=auth).json()["data"]] == ["failed", "failed"]
