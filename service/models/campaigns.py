"""Campaigns, their deliveries (one per recipient), tracked links and counters."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from service.models.base import Base, _now


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
    # A/B tests (migration 0022, ``service.campaigns.ab``): the variants and settings,
    # the winner's index, the decision and why, and when the timer decides.
    ab_test: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    ab_winner: Mapped[int | None] = mapped_column(SmallInteger)
    ab_decision: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    ab_decide_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


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
    # The A/B variant of a test-share row; NULL for the rest (sent the winner).
    variant: Mapped[int | None] = mapped_column(SmallInteger)
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
