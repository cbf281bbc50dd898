"""The API in-process (TestClient, no workers) with two keys, alice and bob."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from service.db.database import Database
from service.settings import Settings
from tests.service_setup import create_api_key, fake_store_entry, service_settings

RTN = {"stages": [{"quantize": {"weights": {"bits": 4, "strategy": "group", "group_size": 64, "method": "rtn"}}}],
       "eval": {"max_tokens": 1024, "kl": False}, "name": "w4a16-rtn"}
SPEC = {"model": "smollm2-135m", "recipe": RTN}


class Api:
    def __init__(self, client: TestClient, settings: Settings, db: Database):
        self.client, self.settings, self.db = client, settings, db
        self.alice = {"Authorization": f"Bearer {create_api_key(db, 'alice')}"}
        self.bob = {"X-API-Key": create_api_key(db, "bob")}

    def submit(self, body: object = SPEC, headers: dict | None = None, **kw: object):  # noqa: ANN201
        return self.client.post("/v1/jobs", json=body, headers={**self.alice, **(headers or {})}, **kw)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    settings = service_settings(tmp_path, embedded_workers=False)
    fake_store_entry(settings.home)
    app = create_app(settings)
    with TestClient(app) as client:
        yield Api(client, settings, app.state.db)
