"""API keys: stored only as their SHA-256, found by the plaintext, revoked once."""

from __future__ import annotations

from sqlalchemy import select

from service.db import keys
from service.db.database import Database
from service.db.models import ApiKey


def test_keys_are_stored_hashed(db: Database) -> None:
    with db.transaction() as s:
        row, plaintext = keys.create_key(s, "alice")
    assert plaintext.startswith("cmp_") and len(plaintext) > 40
    with db.transaction() as s:
        stored = s.scalars(select(ApiKey)).one()
        assert plaintext not in (stored.key_hash, stored.name, stored.id)
        assert keys.find_key(s, plaintext).id == row.id
        assert keys.find_key(s, plaintext + "x") is None
        assert keys.find_key(s, "not-a-key") is None
        assert keys.revoke_key(s, row.id) and not keys.revoke_key(s, row.id)
    with db.transaction() as s:
        assert keys.find_key(s, plaintext) is None
