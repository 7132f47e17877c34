"""partition deliveries by id and raw events by time, so retention drops partitions

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06

Both tables grow with every send and every hit. Deleting old rows would cost
as much as writing them and leave bloat behind; dropping a partition costs
nothing. See docs/operations.md, "Retention and partitions".

``campaign_deliveries`` is range-partitioned by ``id``: ids come from one
sequence and so grow with time, and every lookup by id (tracking tokens and
webhook tags carry it) still reaches one partition. ``delivery_events`` is
range-partitioned by ``occurred_at`` (one partition a day): an event's time
comes with the event, so a replayed event lands in the partition of its first
copy and the primary key (event_id, occurred_at) still dedupes it.

Works on a populated database without copying a row: each existing table
becomes the first partition of its new parent (``…_legacy``, covering every
id or time up to now), the parent's indexes adopt the indexes it has, and new
rows go to new partitions. A ``…_default`` partition takes any row that falls
outside the ranges created so far (the relay's leader keeps them ahead and
moves such rows into their partition when it creates it). ``table_partitions``
records each partition's range and the time its newest row cannot be after.

A partitioned table's unique keys must contain the partition key, so the
unique (campaign_id, lead_id) of deliveries becomes a unique index on each
partition: the planner's ``ON CONFLICT DO NOTHING`` still skips a row planned
twice in a partition, and a campaign is planned once (its row locked, only
while ``queued``). Nothing references either table by foreign key.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The first range after the legacy partition; the relay then uses DELIVERY_PARTITION_SIZE.
FIRST_SIZE = 10_000_000

_DELIVERY_INDEXES = {
    "ix_deliveries_pending": "(campaign_id, batch_no) WHERE status = 'pending'",
    "ix_deliveries_campaign_status_id": "(campaign_id, status, id)",
    "ix_deliveries_sent_at": "(campaign_id, sent_at) WHERE sent_at IS NOT NULL",
}
_EVENT_INDEXES = {
    "ix_delivery_events_campaign_time": "(campaign_id, occurred_at)",
    "ix_delivery_events_delivery": "(delivery_id)",
    "ix_delivery_events_unmatched": "(recorded_at) WHERE delivery_id IS NULL",
}


def upgrade() -> None:
    op.execute("""
CREATE TABLE table_partitions (
    name text PRIMARY KEY,
    parent text NOT NULL,
    low_id bigint,
    high_id bigint,
    low_at timestamptz,
    high_at timestamptz,
    newest_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
)""")
    _deliveries()
    _events()


def _deliveries() -> None:
    op.execute("ALTER TABLE campaign_deliveries RENAME TO campaign_deliveries_legacy")
    op.execute("ALTER INDEX campaign_deliveries_pkey RENAME TO campaign_deliveries_legacy_pkey")
    op.execute(
        "ALTER TABLE campaign_deliveries_legacy "
        "RENAME CONSTRAINT uq_deliveries_campaign_lead TO uq_deliveries_campaign_lead_legacy"
    )
    for name in _DELIVERY_INDEXES:
        op.execute(f"ALTER INDEX {name} RENAME TO {name}_legacy")
    bound = op.get_bind().scalar(
        sa.text("SELECT coalesce(max(id), 0) + 1 FROM campaign_deliveries_legacy")
    )
    op.execute("ALTER TABLE campaign_deliveries_legacy ALTER COLUMN id DROP IDENTITY")
    op.execute(f"CREATE SEQUENCE campaign_deliveries_id_seq START WITH {int(bound)}")
    op.execute("""
CREATE TABLE campaign_deliveries
    (LIKE campaign_deliveries_legacy INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (id)""")
    op.execute(
        "ALTER TABLE campaign_deliveries "
        "ALTER COLUMN id SET DEFAULT nextval('campaign_deliveries_id_seq')"
    )
    op.execute("ALTER SEQUENCE campaign_deliveries_id_seq OWNED BY campaign_deliveries.id")
    op.execute("ALTER TABLE campaign_deliveries ADD PRIMARY KEY (id)")
    op.execute(
        "ALTER TABLE campaign_deliveries ADD CONSTRAINT campaign_deliveries_campaign_id_fkey "
        "FOREIGN KEY (campaign_id) REFERENCES campaigns (id) ON DELETE CASCADE"
    )
    for name, definition in _DELIVERY_INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON campaign_deliveries {definition}")
    op.execute(
        "ALTER TABLE campaign_deliveries ATTACH PARTITION campaign_deliveries_legacy "
        f"FOR VALUES FROM (MINVALUE) TO ({int(bound)})"
    )
    high = int(bound) + FIRST_SIZE
    for name, values in (
        (f"campaign_deliveries_{int(bound)}", f"FOR VALUES FROM ({int(bound)}) TO ({high})"),
        ("campaign_deliveries_default", "DEFAULT"),
    ):
        op.execute(f"CREATE TABLE {name} PARTITION OF campaign_deliveries {values}")
        op.execute(f"CREATE UNIQUE INDEX {name}_campaign_lead ON {name} (campaign_id, lead_id)")
    op.get_bind().execute(
        sa.text("""
INSERT INTO table_partitions (name, parent, low_id, high_id, newest_at) VALUES
    ('campaign_deliveries_legacy', 'campaign_deliveries', NULL, :bound, now()),
    (:first, 'campaign_deliveries', :bound, :high, NULL)"""),
        {"bound": int(bound), "first": f"campaign_deliveries_{int(bound)}", "high": high},
    )


def _events() -> None:
    op.execute("ALTER TABLE delivery_events RENAME TO delivery_events_legacy")
    # Its key becomes (event_id, occurred_at), built when it is attached.
    op.execute("ALTER TABLE delivery_events_legacy DROP CONSTRAINT delivery_events_pkey")
    for name in _EVENT_INDEXES:
        op.execute(f"ALTER INDEX {name} RENAME TO {name}_legacy")
    # Every legacy event, and all of today's, stay in the legacy partition.
    bound = op.get_bind().scalar(
        sa.text(
            "SELECT date_trunc('day', greatest(max(occurred_at), now()), 'UTC') "
            "+ interval '1 day' FROM delivery_events_legacy"
        )
    )
    op.execute("""
CREATE TABLE delivery_events
    (LIKE delivery_events_legacy INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (occurred_at)""")
    op.execute("ALTER TABLE delivery_events ADD PRIMARY KEY (event_id, occurred_at)")
    for name, definition in _EVENT_INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON delivery_events {definition}")
    literal = f"'{bound.isoformat()}'"  # DDL takes no parameters; a timestamp we read
    op.execute(
        "ALTER TABLE delivery_events ATTACH PARTITION delivery_events_legacy "
        f"FOR VALUES FROM (MINVALUE) TO ({literal})"
    )
    op.execute("CREATE TABLE delivery_events_default PARTITION OF delivery_events DEFAULT")
    op.get_bind().execute(
        sa.text("""
INSERT INTO table_partitions (name, parent, high_at, newest_at)
VALUES ('delivery_events_legacy', 'delivery_events', :bound, :bound)"""),
        {"bound": bound},
    )


def downgrade() -> None:
    """Back to plain tables: every partition's rows are copied into one table each."""
    for table in ("campaign_deliveries", "delivery_events"):
        op.execute(
            f"CREATE TABLE {table}_flat (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )
        op.execute(f"INSERT INTO {table}_flat SELECT * FROM {table}")  # noqa: S608
        # CASCADE: the flat copy's id default uses the sequence the parent owns.
        op.execute(f"DROP TABLE {table} CASCADE")
        op.execute(f"ALTER TABLE {table}_flat RENAME TO {table}")
    op.execute("DROP TABLE table_partitions")
    op.execute("ALTER TABLE delivery_events ADD PRIMARY KEY (event_id)")
    for name, definition in _EVENT_INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON delivery_events {definition}")
    op.execute(
        "ALTER TABLE campaign_deliveries ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY"
    )
    op.execute(
        "SELECT setval(pg_get_serial_sequence('campaign_deliveries', 'id'), "
        "coalesce((SELECT max(id) FROM campaign_deliveries), 0) + 1, false)"
    )
    op.execute("ALTER TABLE campaign_deliveries ADD PRIMARY KEY (id)")
    op.execute(
        "ALTER TABLE campaign_deliveries ADD CONSTRAINT uq_deliveries_campaign_lead "
        "UNIQUE (campaign_id, lead_id)"
    )
    op.execute(
        "ALTER TABLE campaign_deliveries ADD CONSTRAINT campaign_deliveries_campaign_id_fkey "
        "FOREIGN KEY (campaign_id) REFERENCES campaigns (id) ON DELETE CASCADE"
    )
    for name, definition in _DELIVERY_INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON campaign_deliveries {definition}")
