"""messages: copies, send_at, one-off templates; message types: platform-wide, from templates

Revision ID: 0022_msgapi
Revises: 0022_ab
Create Date: 2026-12-06

``cc`` and ``bcc`` hold a message's copies (normalized addresses, apart from
``to_email`` and each other); empty for every message sent before.
``send_at`` is when a message sent later is due (its status ``scheduled``
until a ``message.send`` timer queues it). ``template`` is a one-off message's
own template; such a message has no type (``type_id``, ``type_key`` null).
A message type without a sponsor is platform-wide (an admin's); its key is
unique among platform-wide types. A type may be made from a template of the
library (``template_id``, and ``template_version`` pinned or null for the latest);
its subject and bodies keep a copy of the version it was saved with, which is
what it sends if the template is deleted.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0022_msgapi"
down_revision: str | Sequence[str] | None = "0022_ab"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for name in ("cc", "bcc"):
        op.add_column(
            "messages",
            sa.Column(
                name, postgresql.ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'")
            ),
        )
    op.add_column("messages", sa.Column("send_at", sa.DateTime(timezone=True)))
    op.add_column("messages", sa.Column("template", postgresql.JSONB))
    op.alter_column("messages", "type_id", nullable=True)
    op.alter_column("messages", "type_key", nullable=True)
    op.alter_column("message_types", "sponsor_id", nullable=True)
    op.add_column(
        "message_types",
        sa.Column(
            "template_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("templates.id", ondelete="SET NULL"),
        ),
    )
    op.add_column("message_types", sa.Column("template_version", sa.Integer))
    op.create_index(
        "uq_message_types_platform_key",
        "message_types",
        ["key"],
        unique=True,
        postgresql_where=sa.text("sponsor_id IS NULL"),
    )


def downgrade() -> None:
    op.drop_column("message_types", "template_version")
    op.drop_column("message_types", "template_id")
    op.execute("DELETE FROM message_types WHERE sponsor_id IS NULL")
    op.drop_index("uq_message_types_platform_key", table_name="message_types")
    op.alter_column("message_types", "sponsor_id", nullable=False)
    op.execute("DELETE FROM messages WHERE type_id IS NULL")
    op.alter_column("messages", "type_key", nullable=False)
    op.alter_column("messages", "type_id", nullable=False)
    op.drop_column("messages", "template")
    op.drop_column("messages", "send_at")
    for name in ("bcc", "cc"):
        op.drop_column("messages", name)
