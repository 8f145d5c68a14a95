"""Device API keys: generated with ``secrets``, stored only as a SHA-256 digest."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def generate_api_key(length: int = 32) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def digests_match(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
