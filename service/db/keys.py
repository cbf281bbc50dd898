"""API keys: random bearer tokens, stored only as their SHA-256.

The keys carry 256 bits of randomness, so a plain SHA-256 cannot be brute-forced and lets a
request be matched with one indexed lookup.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.db.models import ApiKey

KEY_PREFIX = "cmp_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, name: str) -> tuple[ApiKey, str]:
    """A new key row and the plaintext key (shown once, never stored)."""
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(id="key_" + secrets.token_hex(8), name=name, key_hash=hash_key(plaintext), created_at=time.time())
    session.add(row)
    session.flush()
    return row, plaintext


def find_key(session: Session, plaintext: str) -> ApiKey | None:
    if not plaintext.startswith(KEY_PREFIX) or len(plaintext) > 128:
        return None
    row = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(plaintext))).first()
    return row if row is not None and row.revoked_at is None else None


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def revoke_key(session: Session, key_id: str) -> bool:
    stmt = update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)).values(revoked_at=time.time())
    return session.execute(stmt).rowcount == 1
