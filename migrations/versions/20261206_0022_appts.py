"""appts: reminder offsets on a message type; scheduled campaigns start on timers

Revision ID: 0022_appts
Revises: 0022_msgtrack
Create Date: 2026-12-06

``message_types.reminder_offsets``: the minutes before an appointment's start
its reminders are sent, set on the sponsor's ``appointment.reminder`` type;
null keeps the default (24 hours and 1 hour).

Scheduled campaigns start on a ``campaign.start`` timer, no longer found by the
relay's polling: each campaign scheduled when this runs gets its timer at its
``send_at``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0022_appts"
down_revision: str | Sequence[str] | None = "0022_msgtrack"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Every campaign waiting for its send_at gets its start timer (tests run this on its own).
SCHEDULED_TIMERS = (
    "INSERT INTO timers (kind, key, due_at, payload) "
    "SELECT 'campaign.start', 'campaign:' || id || '\\:start', send_at, "
    "jsonb_build_object('campaign_id', CAST(id AS text)) "
    "FROM campaigns WHERE status = 'scheduled' AND send_at IS NOT NULL "
    "ON CONFLICT (key) DO NOTHING"
)


def upgrade() -> None:
    op.add_column(
        "message_types",
        sa.Column("reminder_offsets", postgresql.ARRAY(sa.Integer), nullable=True),
    )
    op.execute(SCHEDULED_TIMERS)


def downgrade() -> None:
    op.execute("DELETE FROM timers WHERE kind = 'campaign.start'")
    op.drop_column("message_types", "reminder_offsets")
