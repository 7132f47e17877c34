"""Every SQL statement of the webhooks: the tokens of signed webhooks already seen."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

_CLAIM = text("""
INSERT INTO webhook_tokens (provider, token) VALUES (:provider, :token)
ON CONFLICT DO NOTHING
RETURNING true
""")
_RELEASE = text("DELETE FROM webhook_tokens WHERE provider = :provider AND token = :token")
_EXPIRE = text("DELETE FROM webhook_tokens WHERE seen_at < :before")


async def claim_token(connection: AsyncConnection, provider: str, token: str) -> bool:
    """Record a token; False when it was seen before (a replay)."""
    found = await connection.execute(_CLAIM, {"provider": provider, "token": token})
    return found.first() is not None


async def release_token(connection: AsyncConnection, provider: str, token: str) -> None:
    """Forget a token whose event could not be stored, so the provider's retry is accepted."""
    await connection.execute(_RELEASE, {"provider": provider, "token": token})


async def expire_tokens(connection: AsyncConnection, before: datetime) -> None:
    """Forget tokens seen before ``before``: their timestamps are refused by now anyway."""
    await connection.execute(_EXPIRE, {"before": before})
