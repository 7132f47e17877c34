"""Bearer JWTs (HS256) → a ``Principal``; sponsor and scope checks for routes.

Claims: ``sub``; ``scope`` (space-separated); ``sponsor_ids`` (list). The
``admin`` scope grants every scope for every sponsor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request

from service.errors import Forbidden, Unauthorized
from service.settings import Settings

# NumericDate claims (RFC 7519 section 2): a JSON number, seconds since the epoch.
_TIME_CLAIMS = ("exp", "nbf", "iat")
SCOPES = ("campaigns:read", "campaigns:write", "leads:write", "stats:read", "admin")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling and what they may do."""

    subject: str
    scopes: frozenset[str]
    sponsor_ids: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    def may_act_for(self, sponsor_id: str) -> bool:
        return self.is_admin or sponsor_id in self.sponsor_ids

    def has_scope(self, scope: str) -> bool:
        return self.is_admin or scope in self.scopes


def decode_token(token: str, settings: Settings) -> Principal:
    """Verify signature, expiry, issuer and audience; raise ``Unauthorized`` otherwise."""
    if settings.auth_jwt_secret is None:
        raise Unauthorized("auth_not_configured", "AUTH_JWT_SECRET is not set on this server")
    options = {"require": ["exp", "sub"], "verify_aud": settings.auth_jwt_audience is not None}
    try:
        claims = jwt.decode(
            token,
            settings.auth_jwt_secret.get_secret_value(),
            algorithms=["HS256"],
            issuer=settings.auth_jwt_issuer,
            audience=settings.auth_jwt_audience,
            options=options,  # type: ignore[arg-type]
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token_expired", "the bearer token has expired") from None
    except jwt.InvalidTokenError as exc:
        raise Unauthorized("invalid_token", f"the bearer token is invalid: {exc}") from None
    except (TypeError, ValueError, OverflowError):
        # Older PyJWT releases let a list or an infinite ``exp`` escape as these.
        raise Unauthorized("invalid_token", "a time claim is not a number") from None
    for name in _TIME_CLAIMS:
        value = claims.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Unauthorized("invalid_token", f"the '{name}' claim must be a number")
    scope = claims.get("scope", "")
    sponsor_ids = claims.get("sponsor_ids", [])
    if not isinstance(scope, str) or not isinstance(sponsor_ids, list):
        raise Unauthorized("invalid_token", "scope must be a string and sponsor_ids a list")
    return Principal(
        subject=str(claims["sub"]),
        scopes=frozenset(scope.split()),
        sponsor_ids=frozenset(str(s) for s in sponsor_ids),
    )


def mint_token(
    settings: Settings,
    *,
    subject: str,
    scopes: list[str],
    sponsor_ids: list[str],
    ttl_seconds: int = 3600,
) -> str:
    """Sign a token for local use (``campaignctl token``) and tests."""
    if settings.auth_jwt_secret is None:
        raise RuntimeError("AUTH_JWT_SECRET is not set")
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": subject,
        "scope": " ".join(scopes),
        "sponsor_ids": sponsor_ids,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    if settings.auth_jwt_issuer:
        claims["iss"] = settings.auth_jwt_issuer
    if settings.auth_jwt_audience:
        claims["aud"] = settings.auth_jwt_audience
    return jwt.encode(claims, settings.auth_jwt_secret.get_secret_value(), algorithm="HS256")


async def current_principal(request: Request) -> Principal:
    # async although nothing awaits: a plain def would run in a worker thread per request.
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing_token", "send 'Authorization: Bearer <JWT>'")
    settings: Settings = request.app.state.settings
    return decode_token(token.strip(), settings)


def require(scope: str) -> Any:
    """A dependency: the caller must hold ``scope`` for the path's ``sponsor_id``."""

    async def check(
        request: Request, principal: Annotated[Principal, Depends(current_principal)]
    ) -> Principal:
        sponsor_id = request.path_params.get("sponsor_id")
        if sponsor_id is not None and not principal.may_act_for(str(sponsor_id)):
            raise Forbidden("sponsor_forbidden", "this token may not act for this sponsor")
        if not principal.has_scope(scope):
            raise Forbidden("insufficient_scope", f"this route needs the '{scope}' scope")
        return principal

    return Depends(check)
