"""What a service test sets up: settings, a model-store entry, an API key; and waiting for a job.

Plain functions (the fixtures are in tests/conftest.py), imported as `tests.service_setup`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from service.db.database import Database
from service.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def service_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings for a test: everything under tmp_path, short leases, the dry-run runner."""
    values: dict[str, object] = {
        "home": tmp_path / "home", "lease_s": 3.0, "heartbeat_s": 0.5, "poll_s": 0.2, "cancel_grace_s": 2.0,
        "event_flush_s": 0.2, "job_runner": "dry-run", "max_attempts": 2,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def fake_store_entry(home: Path, name: str = "smollm2-135m") -> None:
    """A model-store entry (only its store.json) for API tests that never run the model."""
    folder = home / "models" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "store.json").write_text(json.dumps(
        {"name": name, "architecture": "LlamaForCausalLM", "params": 134515008, "num_layers": 30, "hidden_size": 576}))


def create_api_key(db: Database, name: str = "alice") -> str:
    from service.db import keys

    with db.transaction() as s:
        return keys.create_key(s, name)[1]


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not running
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
