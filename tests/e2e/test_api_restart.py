"""Restarting the API during a job loses nothing.

`compressor serve` runs as a real process on a real database; the job is the torch-free
dry-run runner (`workers.dry_run`), slowed to last across the restart. Two deployments:

- workers apart from the API (`serve --no-workers` + `compressor worker --local`): the API is
  killed with SIGKILL and started again; the job never notices (attempt 1).
- the embedded default (`compressor serve`, workers in the API process): the job process dies
  with its API. On SIGTERM the job is re-queued at shutdown; on SIGKILL its lease runs out and
  the restarted API's reaper re-queues it. Either way it finishes on attempt 2.

In every case the job, its idempotency record and its events survive, the event ids stay
strictly increasing across the restart, new events keep arriving, and the artifacts download
with matching SHA-256.
"""

from __future__ import annotations

import hashlib
import signal
from pathlib import Path

import httpx
import pytest

from tests.service_setup import fake_store_entry, pid_alive, wait_for
from tests.servers import Server, ServiceProcess, cli, service_env

SPEC = {"model": "smollm2-135m", "recipe": {"name": "dry", "eval": {"max_tokens": 1024, "kl": False}}}


class Client:
    """Follows one job over HTTP, collecting its events with `?after=` across server restarts."""

    def __init__(self, key: str):
        self.headers = {"Authorization": f"Bearer {key}"}
        self.url = ""
        self.events: list[dict] = []

    def submit(self, expect: int = 202) -> str:
        r = httpx.post(f"{self.url}/v1/jobs", json=SPEC, headers={**self.headers, "Idempotency-Key": "restart-1"})
        assert r.status_code == expect, r.text  # 200: a replay of the same key
        return r.json()["id"]

    def job(self, job_id: str) -> dict:
        r = httpx.get(f"{self.url}/v1/jobs/{job_id}", headers=self.headers, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def poll_events(self, job_id: str) -> list[dict]:
        after = self.events[-1]["id"] if self.events else 0
        page = httpx.get(f"{self.url}/v1/jobs/{job_id}/events", params={"after": after, "limit": 1000},
                         headers=self.headers, timeout=10).json()
        self.events += page["data"]
        return page["data"]

    def layer(self, job_id: str) -> int:
        self.poll_events(job_id)
        return (self.job(job_id).get("progress") or {}).get("layer") or -1


def _key(env: dict[str, str]) -> str:
    out = cli(env, "keys", "create", "--name", "restart")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _job_pid(client: Client) -> int | None:
    return next((e["data"]["pid"] for e in client.events if e["data"] and "pid" in e["data"]), None)


def _finish_and_check(client: Client, env: dict[str, str], job_id: str, seen_before: int, tmp_path: Path,
                      server: Server) -> dict:
    """After the restart: same job, same idempotency record, events still coming, artifacts intact."""
    assert client.submit(expect=200) == job_id  # the Idempotency-Key record survived: a retry finds the job
    final = wait_for(lambda: (client.poll_events(job_id) is not None and
                              (j := client.job(job_id))["status"] in ("succeeded", "failed", "cancelled") and j),
                     90, "the job to end after the restart")
    client.poll_events(job_id)
    assert final["status"] == "succeeded", (final["error"], server.output())
    ids = [e["id"] for e in client.events]
    assert ids == sorted(set(ids)), "event ids repeat or go backwards across the restart"
    later = client.events[seen_before:]
    assert any(e["kind"] == "layer" for e in later), "no progress events arrived after the restart"
    assert later[-1]["data"]["status"] == "succeeded"
    listing = httpx.get(f"{client.url}/v1/jobs", headers=client.headers).json()["data"]
    assert [j["id"] for j in listing] == [job_id]  # nothing lost, nothing duplicated
    dl = cli({**env, "COMPRESSOR_URL": client.url, "COMPRESSOR_API_KEY": client.headers["Authorization"][7:]},
             "download", job_id, "--out", str(tmp_path / "dl"))
    assert dl.returncode == 0, dl.stderr
    for art in final["artifacts"]:
        data = (tmp_path / "dl" / art["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == art["sha256"]
    return final


def _submit_until_first_layer(client: Client, server: Server) -> tuple[str, int | None, int]:
    """Submit through `server` and wait for the job's first layer: (job id, its process id, events seen so far)."""
    client.url = server.url
    job_id = client.submit()
    wait_for(lambda: client.layer(job_id) >= 0, 60, "the first layer")
    return job_id, _job_pid(client), len(client.events)


def test_restart_with_workers_apart_from_the_api(db_url: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    fake_store_entry(home)
    env = service_env(tmp_path, home, COMPRESSOR_DATABASE_URL=db_url, COMPRESSOR_JOB_RUNNER="dry-run",
                      COMPRESSOR_DRY_RUN_LAYER_S="1.5")
    client = Client(_key(env))
    worker = ServiceProcess(env, ["worker", "--local"], tmp_path / "worker.log")
    first = Server(env, tmp_path / "serve1.log", "--no-workers")
    second = None
    try:
        job_id, pid, seen = _submit_until_first_layer(client, first)
        first.kill()  # SIGKILL: no shutdown hooks run
        assert pid is not None and pid_alive(pid), "the job process died with the API"
        second = Server(env, tmp_path / "serve2.log", "--no-workers")
        client.url = second.url
        assert client.job(job_id)["status"] in ("running", "succeeded")  # succeeded only on a very slow restart
        final = _finish_and_check(client, env, job_id, seen, tmp_path, second)
        assert final["attempt"] == 1, worker.output()  # the job never noticed
    finally:
        for p in (second, first, worker):
            if p is not None:
                p.stop()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
def test_restart_of_the_embedded_api_recovers_the_job(sig: signal.Signals, tmp_path: Path) -> None:
    home = tmp_path / "home"
    fake_store_entry(home)
    env = service_env(tmp_path, home, COMPRESSOR_JOB_RUNNER="dry-run", COMPRESSOR_DRY_RUN_LAYER_S="0.7")
    client = Client(_key(env))
    first = Server(env, tmp_path / "serve1.log")
    second = None
    try:
        job_id, pid, seen = _submit_until_first_layer(client, first)
        first.proc.send_signal(sig)
        first.proc.wait(30)
        wait_for(lambda: not pid_alive(pid), 10, "the job process to end with its API")
        second = Server(env, tmp_path / "serve2.log")
        client.url = second.url
        assert client.job(job_id)["status"] in ("running", "queued") + (("succeeded",) if sig == signal.SIGTERM else ())
        final = _finish_and_check(client, env, job_id, seen, tmp_path, second)
        assert final["attempt"] == 2
        why = "stopped heartbeating" if sig == signal.SIGKILL else "the worker shut down"
        assert any(why in e["message"] and "re-queued" in e["message"] for e in client.events), \
            [e["message"] for e in client.events]
    finally:
        for p in (second, first):
            if p is not None:
                p.stop()
