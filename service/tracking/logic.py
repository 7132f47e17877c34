"""Rules for unsubscribes (synchronous) — ingestion of events lives in ``ingest``."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from service.tracking import repository


async def unsubscribe(session: AsyncSession, delivery_id: int, source: str) -> bool:
    """Suppress the delivery's address for its sponsor; False if the delivery is unknown.

    Idempotent: a second unsubscribe finds the suppression and the timestamp set
    and counts nothing.
    """
    row = await repository.delivery_for_unsubscribe(session, delivery_id)
    if row is None:
        return False
    await repository.add_suppressions(
        session,
        [(row.sponsor_id, row.recipient_email, "unsubscribed", f"{source}:{row.campaign_id}")],
    )
    await repository.mark_unsubscribed(session, row)
    return True
