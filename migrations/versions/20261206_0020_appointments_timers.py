"""appointments and durable timers

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06

An appointment row keeps the invite's revision (``sequence``) and state, so an
update carries the same UID with a higher SEQUENCE and a replayed event sends
nothing. A timer row is something due at a time (a reminder); the timers loop
claims due rows with ``FOR UPDATE SKIP LOCKED`` and deletes each in the
transaction that does its work, so it fires once.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0020"
down_revision: str | Sequence[str] | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.create_table(
        "appointments",
        sa.Column(
            "sponsor_id",
            sa.String(64),
            sa.ForeignKey("sponsors.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("appointment_id", sa.String(200), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("lead_email", sa.String(320), nullable=False),
        sa.Column("details", postgresql.JSONB(), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("sponsor_id", "appointment_id"),
    )
    op.create_table(
        "timers",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("kind", sa.String(100), nullable=False),
        sa.Column("key", sa.Text(), nullable=False, unique=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'")),
        _timestamp("created_at"),
    )
    op.create_index("ix_timers_due_at", "timers", ["due_at"])


def downgrade() -> None:
    op.drop_index("ix_timers_due_at", table_name="timers")
    op.drop_table("timers")
    op.drop_table("appointments")
