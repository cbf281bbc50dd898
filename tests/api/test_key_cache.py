"""A checked key is trusted for `key_cache_s`; a revoked key stops working within it, and at once with 0."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.key_cache import KeyCache
from api.main import create_app
from service.db import keys
from tests.service_setup import fake_store_entry, service_settings


@pytest.mark.parametrize("ttl_s", [0.0, 0.5])
def test_a_revoked_key_stops_working_within_the_ttl(tmp_path: Path, ttl_s: float) -> None:
    settings = service_settings(tmp_path, embedded_workers=False, key_cache_s=ttl_s)
    fake_store_entry(settings.home)
    app = create_app(settings)
    with TestClient(app) as client:
        with app.state.db.transaction() as s:
            row, plaintext = keys.create_key(s, "carol")
        headers = {"Authorization": f"Bearer {plaintext}"}
        assert client.get("/v1/jobs", headers=headers).status_code == 200
        with app.state.db.transaction() as s:
            assert keys.revoke_key(s, row.id)
        if ttl_s:
            assert client.get("/v1/jobs", headers=headers).status_code == 200  # still trusted for a moment
            time.sleep(ttl_s + 0.1)
        assert client.get("/v1/jobs", headers=headers).status_code == 401


def test_unknown_keys_are_never_remembered() -> None:
    cache = KeyCache(60)
    assert cache.get("cmp_x") is None
    cache.put("cmp_x", "key_1")
    assert cache.get("cmp_x") == "key_1" and cache.get("cmp_y") is None
    assert "cmp_x" not in repr(cache._owners)  # stored by hash, not in plaintext
