"""one history again: audiences (0002), tracking (0004) and operations (0005) were
written side by side on top of sending (0006)

Revision ID: 0007
Revises: 0002, 0004, 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

revision: str = "0007"
down_revision: str | Sequence[str] | None = ("0002", "0004", "0005")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
