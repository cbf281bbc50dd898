"""A small HTTP client of the API (httpx), used by `compressor submit/status/wait/download`."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from service.records import TERMINAL_STATUSES, JobProgress


class ApiError(Exception):
    def __init__(self, status: int, detail: Any):
        self.status, self.detail = status, detail
        super().__init__(f"HTTP {status}: {format_detail(detail)}")


def format_detail(detail: Any) -> str:
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg')}" for e in detail)
    return str(detail)


class ServiceClient:
    def __init__(self, url: str, api_key: str, timeout: float = 30.0):
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout,
                                 headers={"Authorization": f"Bearer {api_key}"})

    def close(self) -> None:
        self.http.close()

    def _json(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(response.status_code, detail)
        return response.json()

    def submit(self, spec: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._json(self.http.post("/v1/jobs", json=spec, headers=headers))

    def import_model(self, source: str, name: str | None = None, revision: str | None = None,
                     idempotency_key: str | None = None) -> dict[str, Any]:
        """POST /v1/models: the import job (follow it with `wait`)."""
        body = {k: v for k, v in {"source": source, "name": name, "revision": revision}.items() if v is not None}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._json(self.http.post("/v1/models", json=body, headers=headers))

    def models(self) -> list[dict[str, Any]]:
        return self._json(self.http.get("/v1/models"))["data"]

    def model(self, name: str) -> dict[str, Any]:
        return self._json(self.http.get(f"/v1/models/{name}"))

    def delete_model(self, name: str) -> None:
        response = self.http.delete(f"/v1/models/{name}")
        if response.status_code != 204:
            self._json(response)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json(self.http.get(f"/v1/jobs/{job_id}"))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json(self.http.post(f"/v1/jobs/{job_id}/cancel"))

    def events(self, job_id: str, after: int = 0) -> dict[str, Any]:
        return self._json(self.http.get(f"/v1/jobs/{job_id}/events", params={"after": after}))

    def wait(self, job_id: str, timeout: float = 3600.0, interval: float = 1.0,
             on_change: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last = None
        while True:
            job = self.job(job_id)
            progress = JobProgress.model_validate(job.get("progress") or {})
            state = (job["status"], job["phase"], progress.fraction)
            if on_change is not None and state != last:
                on_change(job)
            last = state
            if job["status"] in TERMINAL_STATUSES:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:g}s")
            time.sleep(interval)

    def download(self, job_id: str, out_dir: Path, names: list[str] | None = None) -> list[Path]:
        """Stream the artifacts into out_dir (temp file, then rename), checking each SHA-256."""
        listing = self._json(self.http.get(f"/v1/jobs/{job_id}/artifacts"))["data"]
        wanted = [a for a in listing if names is None or a["name"] in names]
        missing = set(names or []) - {a["name"] for a in wanted}
        if missing:
            raise ApiError(404, f"no artifacts {sorted(missing)}; artifacts: {[a['name'] for a in listing]}")
        paths = []
        for art in wanted:
            dest = out_dir / art["name"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".part")
            h = hashlib.sha256()
            with self.http.stream("GET", art["url"]) as r:
                if r.status_code >= 400:
                    r.read()
                    self._json(r)
                with tmp.open("wb") as f:
                    for chunk in r.iter_bytes(1 << 20):
                        h.update(chunk)
                        f.write(chunk)
            if h.hexdigest() != art["sha256"]:
                tmp.unlink()
                raise ApiError(502, f"{art['name']}: SHA-256 mismatch (got {h.hexdigest()}, expected {art['sha256']})")
            os.replace(tmp, dest)
            paths.append(dest)
        return paths
