"""Service settings, read from `COMPRESSOR_*` environment variables (pydantic-settings).

Everything has an embedded default: a SQLite file, an artifact folder and a work folder
under `COMPRESSOR_HOME`, and the local executor. Production points `COMPRESSOR_DATABASE_URL`
at PostgreSQL and sets `COMPRESSOR_EXECUTOR=celery`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from compressor.s3 import parse_s3_url


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_worker_memory(text: str) -> dict[str, int]:
    """`cuda=141GiB,cpu=64GiB` → {"cuda": 141·2³⁰, "cpu": 64·2³⁰}; ValueError naming COMPRESSOR_WORKER_MEMORY's bad entry."""
    out: dict[str, int] = {}
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        kind, sep, amount = (p.strip() for p in entry.partition("="))
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)", amount)
        if not sep or kind not in ("cpu", "cuda") or m is None or m.group(2).lower() not in _UNITS:
            raise ValueError(f"COMPRESSOR_WORKER_MEMORY entry {entry!r}: expected KIND=SIZE with KIND cpu or cuda and "
                             f"SIZE like 24GiB, 64GB or 512MiB (e.g. 'cuda=141GiB,cpu=64GiB')")
        if kind in out:
            raise ValueError(f"COMPRESSOR_WORKER_MEMORY: {kind} is given twice")
        out[kind] = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    return out


def default_home() -> Path:
    return Path("~/.cache/compressor").expanduser()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COMPRESSOR_", extra="ignore")

    home: Path = Field(default_factory=default_home, description="model store and embedded service data")
    database_url: str = Field("", description="SQLAlchemy URL; empty = SQLite file under home/service")
    artifacts_dir: Path | None = Field(None, description="artifact store root; default home/service/artifacts")
    artifacts_url: str = Field(
        "", description="artifact store by URL: s3://bucket/prefix?endpoint_url=…&region=… for an S3-compatible "
                        "service, file:///path for a folder; empty = artifacts_dir")
    work_dir: Path | None = Field(None, description="staging folders of running jobs; default home/service/work")
    checkpoints_dir: Path | None = Field(
        None, description="resume state of running jobs, kept across attempts (a re-queued job resumes from it); workers "
                          "that take over each other's jobs must share it (one host, or a shared volume); "
                          "default home/service/checkpoints")

    executor: Literal["local", "celery"] = "local"
    broker_url: str = "redis://127.0.0.1:6379/0"
    celery_queue: str = "compressor"
    embedded_workers: bool = Field(True, description="the API process also runs the local executor's workers")
    local_concurrency: int = Field(1, ge=1, le=64, description="jobs the local executor runs at once")

    lease_s: float = Field(60.0, gt=0, description="a running job whose heartbeat is older than this is re-queued")
    heartbeat_s: float = Field(5.0, gt=0, description="how often the supervisor renews the lease")
    max_attempts: int = Field(3, ge=1, le=100, description="runs of one job before a lost worker fails it")
    cancel_grace_s: float = Field(30.0, ge=0, description="wait for a cooperative cancel before killing the process group")
    job_time_limit_s: float = Field(86400.0, gt=0, description="a job running longer is killed and failed")
    poll_s: float = Field(1.0, gt=0, description="how often idle workers look for queued jobs and expired leases")
    event_flush_s: float = Field(0.5, ge=0, description="minimum seconds between the job process's event writes")

    max_body_bytes: int = Field(1 << 20, ge=1024, description="requests with a larger body get 413")
    key_cache_s: float = Field(5.0, ge=0, description="an API key checked once is trusted this long without a lookup "
                                                      "(a revoked key stops working within it); 0 = look up every request")
    job_runner: Literal["pipeline", "dry-run"] = Field(
        "pipeline", description="what the job process runs: the compression pipeline (compressor.run), or the "
                                "torch-free stand-in workers/dry_run.py that smoke-tests a deployment in seconds")
    dashboard: bool = True

    model_sources: str = Field(
        "", description="where POST /v1/models may import from, comma-separated: absolute local roots, hf://<org>, "
                        "s3://bucket[/prefix][?endpoint_url=…&region=…]; empty = REST imports refused (the CLI is not limited)")
    max_model_bytes: int = Field(200 * 10**9, ge=1, description="an import whose safetensors weights are larger is refused")

    device: str = Field(
        "auto", description="where this worker's jobs run: auto (its GPU when CUDA is present, else cpu), cpu, cuda, cuda:N; "
                            "one Celery worker per GPU, each seeing its GPU as cuda:0 through CUDA_VISIBLE_DEVICES")
    worker_memory: str = Field(
        "", description="memory of the configured workers by device kind, e.g. 'cpu=24GiB' or 'cuda=141GiB,cpu=64GiB': "
                        "POST /v1/jobs refuses (422) a job whose estimated peak fits none; empty = no check")

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        from compressor.execution.device import parse_device_setting

        return parse_device_setting(value)  # ValueError naming COMPRESSOR_DEVICE and the allowed values

    @field_validator("worker_memory")
    @classmethod
    def _check_worker_memory(cls, text: str) -> str:
        parse_worker_memory(text)  # ValueError naming the bad entry
        return text

    @property
    def worker_memory_bytes(self) -> dict[str, int]:
        """device kind (cpu, cuda) → bytes of the largest configured worker of that kind."""
        return parse_worker_memory(self.worker_memory)

    @field_validator("model_sources")
    @classmethod
    def _check_model_sources(cls, text: str) -> str:
        from compressor.models.sources.policy import SourcePolicy

        SourcePolicy.parse(text)  # ValueError naming the bad entry
        return text

    @property
    def source_policy(self):  # noqa: ANN201 - a compressor.models.sources.SourcePolicy
        from compressor.models.sources.policy import SourcePolicy

        return SourcePolicy.parse(self.model_sources)

    @field_validator("artifacts_url")
    @classmethod
    def _check_artifacts_url(cls, url: str) -> str:
        if url.startswith("s3://"):
            parse_s3_url(url)  # ValueError saying what is wrong
        elif url and not url.startswith("file:///"):
            raise ValueError(f"must start with s3:// or file:///, got {url!r}")
        return url

    @model_validator(mode="after")
    def _fill_paths(self) -> Settings:
        self.home = self.home.expanduser()
        service = self.home / "service"
        if not self.database_url:
            self.database_url = f"sqlite:///{service / 'jobs.db'}"
        if self.artifacts_dir is None:
            self.artifacts_dir = service / "artifacts"
        if self.work_dir is None:
            self.work_dir = service / "work"
        if self.checkpoints_dir is None:
            self.checkpoints_dir = service / "checkpoints"
        if self.heartbeat_s >= self.lease_s:
            raise ValueError(f"heartbeat_s ({self.heartbeat_s}) must be shorter than lease_s ({self.lease_s})")
        return self
