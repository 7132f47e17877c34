"""SQLAlchemy models: the whole schema, PostgreSQL being the source of truth.

Per-recipient tables (``campaign_deliveries``, ``delivery_events``) are only
touched with set-based statements in ``repository`` modules; the ORM classes
here describe them for migrations and the few single-row reads.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base for every table."""


def table_of(model: type[Base]) -> Table:
    """The Core table of a model, typed as such (for set-based statements)."""
    return cast(Table, model.__table__)


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Sponsor(Base):
    """A tenant: whose leads, whose sending identity."""

    __tablename__ = "sponsors"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    from_email: Mapped[str] = mapped_column(String(320))
    from_name: Mapped[str | None] = mapped_column(String(200))
    reply_to: Mapped[str | None] = mapped_column(String(320))
    postal_address: Mapped[str | None] = mapped_column(String(500))
    can_send_messages: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    hourly_send_cap: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class Lead(Base):
    """A person a sponsor may write to; unique per (sponsor, normalized email)."""

    __tablename__ = "leads"
    __table_args__ = (
        UniqueConstraint(
            "sponsor_id",
            "email",
            name="uq_leads_sponsor_email",
        ),
        Index("ix_leads_sponsor_intent", "sponsor_id", "intent_level"),
        Index("ix_leads_sponsor_follow_up", "sponsor_id", "follow_up_status"),
        Index("ix_leads_sponsor_id", "sponsor_id", "id"),
        Index("ix_leads_sponsor_score", "sponsor_id", "intent_score"),
        Index("ix_leads_sponsor_created", "sponsor_id", "created_at"),
        Index("ix_leads_sponsor_event", "sponsor_id", "event_id"),
        Index("ix_leads_tags", "tags", postgresql_using="gin"),
        Index(
            "ix_leads_attributes",
            "attributes",
            postgresql_using="gin",
            postgresql_ops={"attributes": "jsonb_path_ops"},
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    sponsor_id: Mapped[str] = mapped_column(ForeignKey("sponsors.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(200))
    first_name: Mapped[str | None] = mapped_column(String(100))
    last_name: Mapped[str | None] = mapped_column(String(100))
    company: Mapped[str | None] = mapped_column(String(200))
    title: Mapped[str | None] = mapped_column(String(200))
    intent_level: Mapped[str | None] = mapped_column(String(10))
    intent_score: Mapped[int | None] = mapped_column(SmallInteger)
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    follow_up_status: Mapped[str] = mapped_column(String(40), server_default=text("'new'"))
    event_id: Mapped[str | None] = mapped_column(String(64))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    # When upstream lead capture last changed this lead (``leads.v1``); lead sync keeps the newest.
    source_updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LeadTally(Base):
    """Leads with an email added (+) or removed (−) per sponsor, intent level,
    follow-up status and whether their address is suppressed, one row per
    statement (written by triggers on ``leads`` and ``suppressions``; see
    migrations 0008 and 0010). Their sum is the exact count of a preset audience."""

    __tablename__ = "lead_tallies"
    __table_args__ = (Index("ix_lead_tallies_sponsor", "sponsor_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    sponsor_id: Mapped[str] = mapped_column(String(64))
    intent_level: Mapped[str | None] = mapped_column(String(10))
    follow_up_status: Mapped[str] = mapped_column(String(40))
    suppressed: Mapped[bool] = mapped_column(Boolean, server_default=false())
    leads: Mapped[int] = mapped_column(BigInteger)


class LeadTombstone(Base):
    """A lead deleted by upstream lead capture, so an older upsert cannot bring it back."""

    __tablename__ = "lead_tombstones"

    sponsor_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    deleted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Template(Base):
    """A named, reusable message; its content lives in immutable versions."""

    __tablename__ = "templates"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    sponsor_id: Mapped[str] = mapped_column(
        ForeignKey("sponsors.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str | None] = mapped_column(String(60))
    latest_version: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class TemplateVersion(Base):
    """One immutable version of a template's subject and bodies."""

    __tablename__ = "template_versions"

    template_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("templates.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject: Mapped[str] = mapped_column(Text)
    message_body: Mapped[str | None] = mapped_column(Text)
    html_body: Mapped[str | None] = mapped_column(Text)
    text_body: Mapped[str | None] = mapped_column(Text)
    variables: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    created_at: Mapped[datetime] = _now()


class Campaign(Base):
    """What to send, to whom, and where it stands."""

    __tablename__ = "campaigns"
    __table_args__ = (
        Index("ix_campaigns_sponsor_created", "sponsor_id", "created_at", "id"),
        Index("ix_campaigns_status_send_at", "status", "send_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    sponsor_id: Mapped[str] = mapped_column(ForeignKey("sponsors.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(Text)
    message_body: Mapped[str | None] = mapped_column(Text)
    html_body: Mapped[str | None] = mapped_column(Text)
    text_body: Mapped[str | None] = mapped_column(Text)
    template_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    template_version: Mapped[int | None] = mapped_column(Integer)
    audience_type: Mapped[str] = mapped_column(String(20))
    audience_filter: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    event_id: Mapped[str | None] = mapped_column(String(64))
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, server_default=text("'{}'")
    )
    status: Mapped[str] = mapped_column(String(20))
    status_reason: Mapped[str | None] = mapped_column(Text)
    send_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    tracking_enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    total_recipients: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    batch_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    send_round: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # The highest batch number handed to Kafka in the current window (see sending_repository.py).
    enqueue_cursor: Mapped[int] = mapped_column(Integer, server_default=text("-1"))
    # How this round's messages go out: a provider template's id, '' for whole
    # bodies, NULL until the first sender decides (migration 0012).
    provider_template_id: Mapped[str | None] = mapped_column(String(100))
    last_progress_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    planned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CampaignDelivery(Base):
    """One recipient of one campaign; written by the planner, moved by sender/ingester.

    Range-partitioned by ``id`` (migration 0015, ``service/retention``); (campaign_id,
    lead_id) is unique within each partition, by an index created with the partition.
    """

    __tablename__ = "campaign_deliveries"
    __table_args__ = (
        Index(
            "ix_deliveries_pending",
            "campaign_id",
            "batch_no",
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_deliveries_campaign_status_id", "campaign_id", "status", "id"),
        Index(
            "ix_deliveries_sent_at",
            "campaign_id",
            "sent_at",
            postgresql_where=text("sent_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(
        BigInteger, primary_key=True, server_default=text("nextval('campaign_deliveries_id_seq')")
    )
    campaign_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    # No foreign key: deleting a lead keeps its delivery history.
    lead_id: Mapped[int] = mapped_column(BigInteger)
    recipient_email: Mapped[str] = mapped_column(String(320))
    batch_no: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), server_default=text("'pending'"))
    provider_message_id: Mapped[str | None] = mapped_column(String(100))
    attempts: Mapped[int] = mapped_column(SmallInteger, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_opened_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_clicked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_human_opened_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_human_clicked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    bounced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    complained_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    unsubscribed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    open_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    click_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    created_at: Mapped[datetime] = _now()


class CampaignLink(Base):
    """A tracked URL of a campaign, by its position in the content."""

    __tablename__ = "campaign_links"

    campaign_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    clicks: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    human_clicks: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class DeliveryEvent(Base):
    """Append-only log of what happened to deliveries (opens, clicks, webhooks).

    Range-partitioned by ``occurred_at``, one partition a day (migration 0015).
    """

    __tablename__ = "delivery_events"
    __table_args__ = (
        Index("ix_delivery_events_campaign_time", "campaign_id", "occurred_at"),
        Index("ix_delivery_events_delivery", "delivery_id"),
        Index(
            "ix_delivery_events_unmatched",
            "recorded_at",
            postgresql_where=text("delivery_id IS NULL"),
        ),
    )

    event_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    delivery_id: Mapped[int | None] = mapped_column(BigInteger)
    campaign_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    type: Mapped[str] = mapped_column(String(40))
    # Part of the key: the partition key, and an event's own (a replay keeps it).
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    link_position: Mapped[int | None] = mapped_column(Integer)
    is_machine: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    ip_hash: Mapped[bytes | None] = mapped_column(LargeBinary)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))
    recorded_at: Mapped[datetime] = _now()


class TablePartition(Base):
    """A partition of ``campaign_deliveries`` (an id range) or ``delivery_events`` (a day),
    and the time its newest row cannot be after (NULL while it still takes rows)."""

    __tablename__ = "table_partitions"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    parent: Mapped[str] = mapped_column(Text)
    low_id: Mapped[int | None] = mapped_column(BigInteger)
    high_id: Mapped[int | None] = mapped_column(BigInteger)
    low_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    high_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    newest_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()


class CampaignStats(Base):
    """Counters per campaign, sharded so concurrent senders do not queue on one row.

    A campaign's figure is the sum over its shards (at most ``STATS_SHARDS`` rows,
    see ``service.stats.counters``).
    """

    __tablename__ = "campaign_stats"

    campaign_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    pending: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    sent: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    failed: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    suppressed: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    cancelled: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    delivered: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    bounced: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    complained: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    unsubscribed: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    opened: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    opens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    human_opened: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    clicked: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    clicks: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    human_clicked: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class CampaignStatsHourly(Base):
    """Per-hour counters of what happened to a campaign's messages (the stats timeline)."""

    __tablename__ = "campaign_stats_hourly"

    campaign_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    bucket: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    delivered: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    bounced: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    complained: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    unsubscribed: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    opens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    human_opens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    clicks: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    human_clicks: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class Suppression(Base):
    """An address never to write to: for one sponsor, or for all (``sponsor_id`` NULL)."""

    __tablename__ = "suppressions"
    __table_args__ = (
        Index(
            "uq_suppressions_scope_email",
            text("coalesce(sponsor_id, '')"),
            "email",
            unique=True,
        ),
        Index("ix_suppressions_email", "email"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    sponsor_id: Mapped[str | None] = mapped_column(String(64))
    email: Mapped[str] = mapped_column(String(320))
    reason: Mapped[str] = mapped_column(String(20))
    source: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = _now()


class OutboxMessage(Base):
    """A Kafka message written in the same transaction as the state it announces."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    topic: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(200))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _now()


class SponsorHourlySends(Base):
    """Messages a sponsor sent per clock hour, reserved before sending (hourly cap)."""

    __tablename__ = "sponsor_hourly_sends"

    sponsor_id: Mapped[str] = mapped_column(
        ForeignKey("sponsors.id", ondelete="CASCADE"), primary_key=True
    )
    hour_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    sent: Mapped[int] = mapped_column(Integer, server_default=text("0"))


class ApiRateCounter(Base):
    """Requests per sponsor, bucket (``create``/``read``) and minute, shared by API replicas."""

    __tablename__ = "api_rate_counters"
    __table_args__ = {"prefixes": ["UNLOGGED"]}  # see migration 0009

    sponsor_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    bucket: Mapped[str] = mapped_column(String(32), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    hits: Mapped[int] = mapped_column(Integer, server_default=text("0"))
