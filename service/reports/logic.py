"""The figures of a campaign report: the stats endpoint's own body, plus who was targeted
and why messages bounced, shaped for the page and its charts."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.stats import FIGURES, RATES
from service.campaigns import ab, ab_repository
from service.campaigns.ab_repository import VariantCounts
from service.messages import events_repository as message_figures
from service.messages import stats as message_stats
from service.reports import charts, repository
from service.stats import logic as stats

_LABEL = {"hour": "%m-%d %H:00", "day": "%Y-%m-%d"}
_STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
# Quiet buckets are drawn as zeros up to this many points; a longer span keeps only the
# buckets that have figures rather than draw thousands of points.
_MAX_POINTS = 2000


async def campaign_report(
    connection: AsyncConnection,
    campaign_id: uuid.UUID,
    timeline: str,
    sponsor_id: str | None = None,
) -> dict[str, Any] | None:
    """Everything the report page shows; None when there is no such campaign (of
    ``sponsor_id`` when given). Figures come from ``stats.campaign_stats`` unchanged, so
    the page and ``GET …/stats`` can never disagree."""
    campaign = await repository.campaign_header(connection, campaign_id, sponsor_id)
    if campaign is None:
        return None
    figures = await stats.campaign_stats(connection, campaign["sponsor_id"], campaign_id, timeline)
    if figures is None:
        return None
    reasons = await repository.deliverability_reasons(connection, campaign_id)
    return {
        "campaign": campaign,
        "stats": figures,
        "timeline_unit": timeline,
        "figure_names": ("recipients", *FIGURES),
        "rate_names": RATES,
        "reasons": reasons,
        "audience_filter": json.dumps(campaign["audience_filter"], indent=2, ensure_ascii=False),
        "variants": await variant_rows(connection, campaign),
        "decision": campaign["ab_decision"],
        "charts": time_charts(figures["timeline"] or [], timeline),
        "links_chart": links_chart(figures["links"]),
    }


async def message_type_report(
    connection: AsyncConnection, type_id: uuid.UUID, timeline: str
) -> dict[str, Any] | None:
    """Everything a message type's report page shows; None when there is no such type.
    Figures come from the type's stats endpoint body unchanged (``type_stats``)."""
    header = await repository.message_type_header(connection, type_id)
    if header is None:
        return None
    figures = await message_stats.type_stats(connection, header["sponsor_id"], type_id, timeline)
    if figures is None:
        return None
    points = figures["timeline"] or []
    sends = []
    if points:
        filled = _filled(points, timeline)
        sends = [
            charts.line_chart(
                "Sent",
                [_label(p["at"], timeline) for p in filled],
                [charts.Series("sent", [int(p["sent"]) for p in filled], "#636363", area=True)],
            )
        ]
    return {
        "message_type": header,
        "stats": figures,
        "timeline_unit": timeline,
        "figure_names": message_figures.FIGURES,
        "rate_names": message_stats.RATES,
        "reasons": await message_figures.type_reasons(connection, type_id),
        "charts": sends + time_charts(points, timeline),
        "links_chart": links_chart(figures["links"]),
    }


async def variant_rows(
    connection: AsyncConnection, campaign: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """An A/B test's variants with their test-share figures (human opens and clicks, as
    ``GET …/variants``), the winner marked; none for a campaign sent as one version."""
    ab_test = campaign["ab_test"]
    if not ab_test:
        return []
    counts = {c.variant: c for c in await ab_repository.variant_counts(connection, campaign["id"])}
    rows = []
    for i, variant in enumerate(ab_test["variants"]):
        c = counts.get(i, VariantCounts(i, 0, 0, 0, 0))
        rows.append(
            {
                "name": ab.name(i),
                "subject": variant.get("subject", campaign["subject"]),
                "sent": c.sent,
                "open_rate": _percent(c.opened, c.sent),
                "click_rate": _percent(c.clicked, c.sent),
                "click_to_open_rate": _percent(c.clicked, c.opened),
                "winner": campaign["ab_winner"] == i,
            }
        )
    return rows


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "—"


def time_charts(points: Sequence[Mapping[str, Any]], unit: str) -> list[Markup]:
    """Delivered (with bounces), opens and clicks over time, human beside total."""
    if not points:
        return []
    points = _filled(points, unit)
    labels = [_label(p["at"], unit) for p in points]

    def values(name: str) -> list[int]:
        return [int(p[name]) for p in points]

    return [
        charts.line_chart(
            "Delivered and bounced",
            labels,
            [
                charts.Series("delivered", values("delivered"), "#31a354", area=True),
                charts.Series("bounced", values("bounced"), "#de2d26"),
                charts.Series("complained", values("complained"), "#756bb1"),
            ],
        ),
        charts.line_chart(
            "Opens",
            labels,
            [
                charts.Series("all opens", values("opens"), "#9ecae1", area=True),
                charts.Series("human opens", values("human_opens"), "#3182bd"),
            ],
        ),
        charts.line_chart(
            "Clicks",
            labels,
            [
                charts.Series("all clicks", values("clicks"), "#fdae6b", area=True),
                charts.Series("human clicks", values("human_clicks"), "#e6550d"),
            ],
        ),
    ]


def links_chart(links: Sequence[Mapping[str, Any]]) -> Markup | None:
    if not links:
        return None
    rows = [(str(link["url"]), int(link["clicks"]), int(link["human_clicks"])) for link in links]
    return charts.bar_chart("Clicks per link", rows)


def _filled(points: Sequence[Mapping[str, Any]], unit: str) -> Sequence[Mapping[str, Any]]:
    """The timeline with a zero point for every quiet bucket, so the x axis is time."""
    at = [_moment(p["at"]) for p in points]
    step = _STEP[unit]
    if (at[-1] - at[0]) / step >= _MAX_POINTS:
        return points
    zero = dict.fromkeys((k for k in points[0] if k != "at"), 0)
    known = dict(zip(at, points, strict=True))
    out: list[Mapping[str, Any]] = []
    moment = at[0]
    while moment <= at[-1]:
        out.append(known.get(moment, {**zero, "at": moment}))
        moment += step
    return out


def _moment(at: datetime | str) -> datetime:
    return datetime.fromisoformat(at) if isinstance(at, str) else at


def _label(at: datetime | str, unit: str) -> str:
    return _moment(at).strftime(_LABEL[unit])
