"""End to end over HTTP: `compressor serve` (uvicorn) + executors + the CLI client.

The real-model cases compress SmolLM2-135M with W4A16 RTN (eval on 1024 tokens, no KL);
the lost-worker cases use the dry-run runner, which needs no model.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path

import httpx
import pytest

from tests.service_setup import fake_store_entry, pid_alive, wait_for
from tests.servers import Server, ServiceProcess, cli, service_env

FAST_EVAL = ["--set", "eval.max_tokens=1024", "--set", "eval.kl=false", "--set", "eval.datasets=[wiki]"]


def _key(env: dict[str, str]) -> str:
    out = cli(env, "keys", "create", "--name", "e2e")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _compress_and_check(env: dict[str, str], server: Server, tmp_path: Path) -> None:
    key = _key(env)
    client_env = {**env, "COMPRESSOR_URL": server.url, "COMPRESSOR_API_KEY": key}
    out = cli(client_env, "submit", "--model", "smollm2-135m", "--recipe", "w4a16-rtn", *FAST_EVAL, "--json")
    assert out.returncode == 0, out.stderr + server.output()
    job_id = json.loads(out.stdout)["id"]
    waited = cli(client_env, "wait", job_id, "--timeout", "400", "--interval", "0.5", timeout=420)
    assert waited.returncode == 0, f"{waited.stdout}\n{waited.stderr}\n{server.output()}"
    assert "succeeded" in waited.stdout.splitlines()[-1]

    headers = {"Authorization": f"Bearer {key}"}
    job = httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=headers).json()
    ppl = job["report"]["perplexity"]
    assert 1 < ppl["original"]["wiki"] < ppl["compressed"]["wiki"] < 10 * ppl["original"]["wiki"]
    events = httpx.get(f"{server.url}/v1/jobs/{job_id}/events", params={"limit": 1000}, headers=headers).json()["data"]
    assert any(e["kind"] == "layer" for e in events)

    dl = cli(client_env, "download", job_id, "--out", str(tmp_path / "dl"))
    assert dl.returncode == 0, dl.stderr
    names = {a["name"]: a for a in job["artifacts"]}
    assert "report.json" in names and any(n.endswith(".safetensors") for n in names)
    for name, art in names.items():
        data = (tmp_path / "dl" / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == art["sha256"] and len(data) == art["size"]
    assert json.loads((tmp_path / "dl" / "report.json").read_text())["perplexity"] == ppl


@pytest.mark.model
def test_local_executor_compresses_the_real_model(model_store: Path, tmp_path: Path) -> None:
    env = service_env(tmp_path, model_store)
    server = Server(env, tmp_path / "serve.log")
    try:
        _compress_and_check(env, server, tmp_path)
    finally:
        server.stop()


@pytest.mark.model
@pytest.mark.heavy
def test_celery_executor_compresses_the_real_model(model_store: Path, tmp_path: Path, redis_url: str) -> None:
    env = service_env(tmp_path, model_store, COMPRESSOR_EXECUTOR="celery", COMPRESSOR_BROKER_URL=redis_url,
                      COMPRESSOR_CELERY_QUEUE=f"compressor-test-{secrets.token_hex(4)}")
    server = Server(env, tmp_path / "serve.log")
    worker = ServiceProcess(env, ["worker", "--log-level", "warning"], tmp_path / "worker.log")
    try:
        _compress_and_check(env, server, tmp_path)
    finally:
        worker.stop()
        server.stop()


def test_celery_lost_worker_job_is_requeued_and_finishes(tmp_path: Path, redis_url: str) -> None:
    """kill -9 of the Celery worker running a job: its job process dies with it, the lease runs
    out, the API's reaper re-queues and re-sends the job, and another worker finishes it."""
    home = tmp_path / "home"
    fake_store_entry(home)
    env = service_env(tmp_path, home, COMPRESSOR_EXECUTOR="celery", COMPRESSOR_BROKER_URL=redis_url,
                      COMPRESSOR_CELERY_QUEUE=f"compressor-test-{secrets.token_hex(4)}",
                      COMPRESSOR_JOB_RUNNER="dry-run", COMPRESSOR_DRY_RUN_LAYER_S="0.5")
    server = Server(env, tmp_path / "serve.log")
    first = ServiceProcess(env, ["worker", "--hostname", "first@%h"], tmp_path / "worker1.log")
    second = None
    try:
        headers = {"Authorization": f"Bearer {_key(env)}"}
        spec = {"model": "smollm2-135m", "recipe": {"name": "dry"}}
        job_id = httpx.post(f"{server.url}/v1/jobs", json=spec, headers=headers).json()["id"]

        def job() -> dict:
            return httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=headers).json()

        def pid() -> int | None:
            events = httpx.get(f"{server.url}/v1/jobs/{job_id}/events", headers=headers).json()["data"]
            return next((e["data"]["pid"] for e in events if e["data"] and "pid" in e["data"]), None)

        child = wait_for(pid, 60, "the job process")
        wait_for(lambda: job()["phase"] == "quantize", 30, "the quantize stage")
        first.kill()
        wait_for(lambda: not pid_alive(child), 5, "the orphaned job process to kill itself")
        second = ServiceProcess(env, ["worker", "--hostname", "second@%h"], tmp_path / "worker2.log")
        final = wait_for(lambda: (j := job())["status"] in ("succeeded", "failed") and j, 60, "the job to end")
        assert final["status"] == "succeeded" and final["attempt"] == 2, server.output() + second.output()
    finally:
        for p in (first, second, server):
            if p is not None:
                p.stop()
