"""send_lanes: the heartbeat of each send lane, for the messages' reserved share

Revision ID: 0022_fastlane
Revises: 0022_audiences
Create Date: 2026-12-06

Senders and message-senders are separate processes; each refreshes its lane's
row at most once a second while it has work and reads the other's, so a
campaign paces at ``1 - MESSAGES_RATE_SHARE`` of the provider's rate only
while messages are being sent. Unlogged: a lost heartbeat reads as "idle".
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022_fastlane"
down_revision: str | Sequence[str] | None = "0022_audiences"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "send_lanes",
        sa.Column("lane", sa.String(32), primary_key=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        prefixes=["UNLOGGED"],
    )


def downgrade() -> None:
    op.drop_table("send_lanes")
