"""appts: reminder offsets on a message type

Revision ID: 0022_appts
Revises: 0021
Create Date: 2026-12-06

``message_types.reminder_offsets``: the minutes before an appointment's start
its reminders are sent, set on the sponsor's ``appointment.reminder`` type;
null keeps the default (24 hours and 1 hour).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0022_appts"
down_revision: str | Sequence[str] | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "message_types",
        sa.Column("reminder_offsets", postgresql.ARRAY(sa.Integer), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("message_types", "reminder_offsets")
