"""campaigns.provider_template_id: the provider-side template a campaign's round sends with

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02

The first sender to handle a round decides how the round's messages go out and
writes it here: a provider template's id (each message then carries only its
variables), or '' (each message carries its whole body). NULL: not decided yet.
A round keeps one decision, so a batch retried by another sender sends the same
request body under the same idempotency key.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("campaigns", sa.Column("provider_template_id", sa.String(100)))


def downgrade() -> None:
    op.drop_column("campaigns", "provider_template_id")
