"""JWT access and refresh tokens (HS256 with a shared secret, or RS256 with a key pair).

Access tokens live 15 minutes, refresh tokens 7 days (seed 004). Claims: `sub` (the user id),
`roles` (e.g. ["admin"]), `typ` ("access" | "refresh"), `iat`, `exp`, `jti`. The gateway checks
an access token on every REST call and on WebSocket auth; `POST /auth/refresh` trades a refresh
token for a new pair.

An SSE ticket (`typ` "sse") is what a browser's EventSource, which cannot send an Authorization
header, puts in its URL instead of the access token: minted for one session by an authenticated
`POST /api/sessions/{id}/events/ticket`, it opens that session's SSE stream only (claim `sid`),
and only for `SSE_TICKET_TTL_S` seconds; the stream it opens lives until the access token that
minted it would have expired (claim `until`). A URL ends up in logs and browser history: what
leaks from one is a minute's read access to one session, not a 15-minute access token.
"""

from __future__ import annotations

import time
import uuid

import jwt
import msgspec

from gateway.config import GatewayConfig
from gateway.errors import ApiError

__all__ = ["SSE_TICKET_TTL_S", "Claims", "TokenService", "bearer"]

#: How long an SSE ticket may be used to open a stream.
SSE_TICKET_TTL_S = 60


class Claims(msgspec.Struct, frozen=True):
    user_id: str
    roles: tuple[str, ...] = ()
    expires_at: int = 0

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


class TokenService:
    """Mints and verifies tokens for one configuration. Pure CPU, no I/O."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.algorithm = config.jwt_algorithm
        if self.algorithm == "RS256":
            self._verify_keys = {"access": config.jwt_public_key, "refresh": config.jwt_public_key}
            self._sign_keys = {
                "access": config.jwt_private_key,
                "refresh": config.jwt_private_key,
            }
        else:
            self._verify_keys = {"access": config.jwt_secret, "refresh": config.jwt_refresh_secret}
            self._sign_keys = dict(self._verify_keys)
        self._ttl = {"access": config.access_ttl_s, "refresh": config.refresh_ttl_s}

    @property
    def can_mint(self) -> bool:
        return bool(self._sign_keys["access"])

    def issue(
        self,
        user_id: str,
        roles: tuple[str, ...] | list[str] = (),
        kind: str = "access",
        *,
        ttl_s: int | None = None,
        now: float | None = None,
    ) -> str:
        if not self.can_mint:
            raise ApiError(501, "TOKEN_MINTING_DISABLED", "this gateway has no signing key")
        now = time.time() if now is None else now
        payload = {
            "sub": user_id,
            "roles": list(roles),
            "typ": kind,
            "iat": int(now),
            "exp": int(now + (self._ttl[kind] if ttl_s is None else ttl_s)),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(payload, self._sign_keys[kind], algorithm=self.algorithm)

    def issue_pair(self, user_id: str, roles: tuple[str, ...] | list[str] = ()) -> dict:
        return {
            "access_token": self.issue(user_id, roles, "access"),
            "refresh_token": self.issue(user_id, roles, "refresh"),
            "token_type": "Bearer",
            "expires_in": self._ttl["access"],
        }

    def issue_ticket(
        self,
        claims: Claims,
        session_id: str,
        *,
        ttl_s: int = SSE_TICKET_TTL_S,
        now: float | None = None,
    ) -> str:
        """An SSE ticket for `session_id`, for the caller whose access token gave `claims`."""
        if not self.can_mint:
            raise ApiError(501, "TOKEN_MINTING_DISABLED", "this gateway has no signing key")
        now = time.time() if now is None else now
        payload = {
            "sub": claims.user_id,
            "roles": list(claims.roles),
            "typ": "sse",
            "sid": session_id,
            "until": claims.expires_at,
            "iat": int(now),
            "exp": int(now + ttl_s),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(payload, self._sign_keys["access"], algorithm=self.algorithm)

    def verify_ticket(self, ticket: str | None, session_id: str) -> Claims:
        """The claims of an SSE ticket for `session_id` (expiring when the access token that
        minted it does), or a 401: missing, expired, not a ticket, or another session's."""
        payload = self._decode(ticket, "access")
        if payload.get("typ") != "sse":
            raise ApiError(401, "TOKEN_INVALID", "expected an SSE ticket")
        if payload.get("sid") != session_id:
            raise ApiError(401, "TOKEN_INVALID", "this SSE ticket is for another session")
        claims = self._claims(payload)
        until = payload.get("until")
        return msgspec.structs.replace(
            claims, expires_at=until if isinstance(until, int) and until > 0 else 0
        )

    def verify(self, token: str | None, kind: str = "access") -> Claims:
        """The token's claims, or an `ApiError` 401 with a code saying what is wrong."""
        payload = self._decode(token, kind)
        typ = payload.get("typ", "access")
        if typ != kind:
            raise ApiError(401, "TOKEN_INVALID", f"expected an {kind} token, got {typ!r}")
        return self._claims(payload)

    def _decode(self, token: str | None, key: str) -> dict:
        if not token:
            raise ApiError(401, "TOKEN_MISSING", "a bearer token is required")
        try:
            return jwt.decode(
                token,
                self._verify_keys[key],
                algorithms=[self.algorithm],
                options={"require": ["exp", "sub"]},
                leeway=self.config.token_grace_s,  # clock skew; open connections get the same
            )
        except jwt.ExpiredSignatureError:
            raise ApiError(401, "TOKEN_EXPIRED", "the token has expired") from None
        except jwt.InvalidSignatureError:
            raise ApiError(401, "TOKEN_INVALID", "the token signature is invalid") from None
        except jwt.PyJWTError as exc:
            raise ApiError(401, "TOKEN_INVALID", f"the token is invalid: {exc}") from None

    @staticmethod
    def _claims(payload: dict) -> Claims:
        sub = payload.get("sub")
        roles = payload.get("roles") or []
        if not isinstance(sub, str) or not sub or not isinstance(roles, list):
            raise ApiError(401, "TOKEN_INVALID", "the token's subject or roles are malformed")
        return Claims(user_id=sub, roles=tuple(str(r) for r in roles), expires_at=payload["exp"])


def bearer(headers_authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not headers_authorization:
        return None
    scheme, _, token = headers_authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
