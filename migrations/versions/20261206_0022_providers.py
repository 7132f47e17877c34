"""sponsors.provider: a sponsor's own email provider account

Revision ID: 0022_providers
Revises: 0022_msgapi
Create Date: 2026-12-06

The provider and the *names* of the environment variables that hold its
secrets (``schemas.providers.ProviderChoice``); null sends through
``EMAIL_PROVIDER`` with the deployment's credentials, as before.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0022_providers"
down_revision: str | Sequence[str] | None = "0022_msgapi"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sponsors", sa.Column("provider", postgresql.JSONB))


def downgrade() -> None:
    op.drop_column("sponsors", "provider")
