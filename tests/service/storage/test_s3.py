"""The S3-compatible artifact store against a real HTTP S3 endpoint (moto's server, an emulator).

The store on its own (publish, layout, range reads, a half-written upload staying invisible,
re-publish), the download route serving from it (SHA-256 headers, Range, 416, 503),
and a dry-run job whose supervisor publishes to the bucket.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from service.settings import Settings
from service.storage import ArtifactStoreError, open_store
from service.storage.s3 import S3ArtifactStore
from compressor.s3 import parse_s3_url

from tests.service_setup import create_api_key, fake_store_entry, service_settings, wait_for

PAYLOAD = bytes(range(256)) * 40


def _staging(root: Path) -> Path:
    staging = root / "staging"
    (staging / "sub").mkdir(parents=True)
    (staging / "model.safetensors").write_bytes(PAYLOAD)
    (staging / "sub" / "config.json").write_text('{"a": 1}')
    return staging


def _keys(url: str) -> list[str]:
    loc = parse_s3_url(url)
    client = boto3.client("s3", endpoint_url=loc.endpoint_url, region_name="us-east-1")
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=loc.bucket).get("Contents", []))


def _read(store: S3ArtifactStore, job_id: str, name: str, start: int = 0, end: int | None = None) -> bytes:
    f = store.open(job_id, name)
    assert f is not None
    return b"".join(f.read(start, f.size - 1 if end is None else end))


def test_url_and_settings_are_checked() -> None:
    loc = parse_s3_url("s3://bucket/a/b/?endpoint_url=http://minio:9000&region=eu-west-1")
    assert (loc.bucket, loc.prefix, loc.endpoint_url, loc.region) == ("bucket", "a/b", "http://minio:9000", "eu-west-1")
    for bad, says in [("s3:///x", "needs a bucket"), ("s3://k:s@b/x", "no credentials"),
                      ("s3://b?endpoint=x", "unknown S3 URL option"), ("s3://b?endpoint_url=ftp://x", "http(s) URL"),
                      ("gs://b/x", "must start with s3:// or file:///")]:
        with pytest.raises(ValueError, match="artifacts_url") as err:
            Settings(artifacts_url=bad)
        assert says in str(err.value)


def test_publish_open_range(s3_url: str, tmp_path: Path) -> None:
    store = open_store(s3_url, tmp_path)
    assert isinstance(store, S3ArtifactStore)
    listing = store.publish("job_1", _staging(tmp_path))
    assert listing == [
        {"name": "model.safetensors", "size": len(PAYLOAD), "sha256": hashlib.sha256(PAYLOAD).hexdigest()},
        {"name": "sub/config.json", "size": 8, "sha256": hashlib.sha256(b'{"a": 1}').hexdigest()},
    ]
    keys = _keys(s3_url)
    upload = next(k for k in keys if "/u-" in k).split("/")[2]
    assert set(keys) == {"artifacts/job_1/published.json", f"artifacts/job_1/{upload}/model.safetensors",
                         f"artifacts/job_1/{upload}/sub/config.json"}
    assert _read(store, "job_1", "model.safetensors") == PAYLOAD
    assert _read(store, "job_1", "model.safetensors", 256, 511) == PAYLOAD[256:512]
    assert store.open("job_1", "nope") is None and store.open("job_2", "model.safetensors") is None


def test_half_written_upload_is_invisible_and_a_republish_cleans_it(
    s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = S3ArtifactStore.from_url(s3_url)
    real_put = store.client.put_object

    def crash_before_pointer(**kw: object) -> object:
        if str(kw["Key"]).endswith("/published.json"):
            raise ConnectionError("worker died before writing the pointer")
        return real_put(**kw)

    monkeypatch.setattr(store.client, "put_object", crash_before_pointer)
    with pytest.raises(ConnectionError):
        store.publish("job_1", _staging(tmp_path / "a"))
    assert len(_keys(s3_url)) == 2  # the files are there …
    assert store.open("job_1", "model.safetensors") is None  # … but nobody sees them
    monkeypatch.setattr(store.client, "put_object", real_put)
    store.publish("job_1", _staging(tmp_path / "b"))
    keys = _keys(s3_url)
    assert len(keys) == 3 and "artifacts/job_1/published.json" in keys  # the orphaned upload is gone
    assert _read(store, "job_1", "model.safetensors") == PAYLOAD


def test_missing_bucket_is_an_artifact_store_error(s3_endpoint: str, tmp_path: Path) -> None:
    store = S3ArtifactStore.from_url(f"s3://no-such-bucket-here/x?endpoint_url={s3_endpoint}")
    with pytest.raises(ArtifactStoreError, match="no-such-bucket-here"):
        store.publish("job_1", _staging(tmp_path))


@pytest.fixture
def s3_api(s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, dict, dict]]:
    """The app with embedded local workers (dry-run runner) and artifacts in the bucket."""
    monkeypatch.setenv("COMPRESSOR_DRY_RUN_LAYER_S", "0.05")
    settings = service_settings(tmp_path, artifacts_url=s3_url)
    fake_store_entry(settings.home)
    app = create_app(settings)
    with TestClient(app) as client:
        yield client, {"Authorization": f"Bearer {create_api_key(app.state.db, 'alice')}"}, \
            {"Authorization": f"Bearer {create_api_key(app.state.db, 'bob')}"}


def test_job_artifacts_go_to_s3_and_download_with_sha256_and_range(s3_api: tuple, s3_url: str) -> None:
    client, alice, bob = s3_api
    spec = {"model": "smollm2-135m", "recipe": {"name": "dry", "eval": {"max_tokens": 1024, "kl": False}}}
    job_id = client.post("/v1/jobs", json=spec, headers=alice).json()["id"]
    job = wait_for(lambda: (j := client.get(f"/v1/jobs/{job_id}", headers=alice).json())["status"]
                   in ("succeeded", "failed") and j, 60, "the job to end")
    assert job["status"] == "succeeded", job["error"]
    assert f"artifacts/{job_id}/published.json" in _keys(s3_url)
    arts = {a["name"]: a for a in client.get(f"/v1/jobs/{job_id}/artifacts", headers=alice).json()["data"]}
    assert set(arts) == {"checkpoint/model.safetensors", "checkpoint/config.json", "checkpoint/manifest.json", "report.json"}
    for art in arts.values():
        r = client.get(art["url"], headers=alice)
        assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == art["sha256"] == r.headers["X-Checksum-SHA256"]
        assert int(r.headers["Content-Length"]) == art["size"] and r.headers["Repr-Digest"].startswith("sha-256=:")
    url = arts["checkpoint/model.safetensors"]["url"]
    whole = client.get(url, headers=alice).content
    part = client.get(url, headers={**alice, "Range": "bytes=100-1123"})
    assert part.status_code == 206 and part.content == whole[100:1124]
    assert part.headers["Content-Range"] == f"bytes 100-1123/{len(whole)}"
    tail = client.get(url, headers={**alice, "Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == whole[-10:]
    outside = client.get(url, headers={**alice, "Range": f"bytes={len(whole)}-"})
    assert outside.status_code == 416 and outside.headers["Content-Range"] == f"bytes */{len(whole)}"
    assert json.loads(client.get(arts["report.json"]["url"], headers=alice).content)["job"]["dry_run"] is True
    assert client.get(url, headers=bob).status_code == 404
    assert client.get(f"/v1/jobs/{job_id}/artifacts/nope.bin", headers=alice).status_code == 404


def test_unreachable_store_is_503_not_500(s3_api: tuple, s3_url: str) -> None:
    client, alice, _ = s3_api
    app_store = client.app.state.artifact_store
    job_id = client.post("/v1/jobs", json={"model": "smollm2-135m", "recipe": {"name": "dry"}}, headers=alice).json()["id"]
    wait_for(lambda: client.get(f"/v1/jobs/{job_id}", headers=alice).json()["status"] == "succeeded", 60, "success")
    app_store.bucket = "gone-bucket"  # as if the bucket vanished under a running API
    r = client.get(f"/v1/jobs/{job_id}/artifacts/report.json", headers=alice)
    assert r.status_code == 503 and "artifact store is unavailable" in r.json()["detail"]
