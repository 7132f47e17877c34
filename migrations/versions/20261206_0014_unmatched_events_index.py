"""index the provider events that matched no delivery, for the admin view

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06

Events that match no delivery are kept in ``delivery_events`` with no
``delivery_id`` (the reason in the payload). They are few, so a partial index
on them costs the matched events nothing and lets ``GET
/api/v1/stats/unmatched-events`` count and list them without a scan.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_delivery_events_unmatched",
        "delivery_events",
        ["recorded_at"],
        postgresql_where=sa.text("delivery_id IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_delivery_events_unmatched", table_name="delivery_events")
