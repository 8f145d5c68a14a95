"""Signed access tokens (JWT, HS256) with expiry and revocation by ``jti``."""

from __future__ import annotations

import secrets
import time
from typing import NamedTuple

import jwt

from iotflow.errors import Unauthorized

ALGORITHM = "HS256"


class TokenClaims(NamedTuple):
    user_pk: int
    jti: str
    expires_at: int  # epoch seconds


class TokenCodec:
    def __init__(self, secret: str, ttl_seconds: int) -> None:
        self._secret = secret
        self.ttl = ttl_seconds

    def issue(self, user_pk: int) -> tuple[str, TokenClaims]:
        now = int(time.time())
        claims = TokenClaims(user_pk, secrets.token_hex(16), now + self.ttl)
        payload = {
            "sub": str(user_pk),
            "jti": claims.jti,
            "iat": now,
            "exp": claims.expires_at,
            "typ": "access",
        }
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM), claims

    def decode(self, token: str) -> TokenClaims:
        try:
            payload = jwt.decode(
                token, self._secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub", "jti"]}
            )
            return TokenClaims(int(payload["sub"]), str(payload["jti"]), int(payload["exp"]))
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The token has expired; log in again", title="Invalid token") from None
        except (jwt.InvalidTokenError, ValueError, KeyError):
            raise Unauthorized("The token is not valid", title="Invalid token") from None
