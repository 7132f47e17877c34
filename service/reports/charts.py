"""Small charts as inline SVG, drawn on the server: no script, no font or file fetched.

Plain strings with every text escaped; the page prints and reads the same with
JavaScript off. Two shapes are enough for a campaign report: lines (with an
optional filled area) over time, and horizontal bars of a total with its human
part.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

_PAD_LEFT, _PAD_RIGHT, _PAD_TOP, _PAD_BOTTOM = 48, 12, 28, 36
_FONT = 'font-family="system-ui, sans-serif" font-size="11"'


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    values: Sequence[int]
    color: str
    area: bool = False  # filled under the line: the total, with its human part drawn over it


def _ceiling(value: int) -> int:
    """A round top for the y axis (1, 2 or 5 times a power of ten) at or above ``value``."""
    power = 1
    while True:
        for step in (1, 2, 5):
            if step * power >= value:
                return step * power
        power *= 10


def line_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    width: int = 640,
    height: int = 220,
) -> Markup:
    """Lines over ``labels`` (the x axis, evenly spaced), one per series, with a legend."""
    plot_w = width - _PAD_LEFT - _PAD_RIGHT
    plot_h = height - _PAD_TOP - _PAD_BOTTOM
    top = _ceiling(max((v for s in series for v in s.values), default=0))
    count = len(labels)

    def x(i: int) -> float:
        return _PAD_LEFT + (plot_w / 2 if count == 1 else plot_w * i / (count - 1))

    def y(v: int) -> float:
        return _PAD_TOP + plot_h - plot_h * v / top

    parts = [_frame(title, width, height)]
    for tick in (0, top // 2, top) if top > 1 else (0, top):
        parts.append(
            f'<line x1="{_PAD_LEFT}" x2="{width - _PAD_RIGHT}" y1="{y(tick):.1f}" '
            f'y2="{y(tick):.1f}" stroke="#ddd"/>'
            f'<text x="{_PAD_LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" {_FONT}>'
            f"{tick}</text>"
        )
    for i in sorted({0, count // 2, count - 1}) if count else ():
        # The first label starts and the last ends at its point, so neither is cut off.
        anchor = "start" if i == 0 and count > 1 else "end" if i == count - 1 else "middle"
        parts.append(
            f'<text x="{x(i):.1f}" y="{height - _PAD_BOTTOM + 16}" text-anchor="{anchor}" '
            f"{_FONT}>{escape(labels[i])}</text>"
        )
    for s in series:
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(s.values))
        if s.area and count > 1:
            base = y(0)
            parts.append(
                f'<polygon points="{x(0):.1f},{base:.1f} {points} {x(count - 1):.1f},{base:.1f}" '
                f'fill="{s.color}" fill-opacity="0.25" stroke="none"/>'
            )
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{s.color}" stroke-width="2"/>'
        )
        if count == 1:
            parts.append(f'<circle cx="{x(0):.1f}" cy="{y(s.values[0]):.1f}" r="3" '
                         f'fill="{s.color}"/>')  # fmt: skip
    parts.append(_legend([(s.label, s.color) for s in series], width))
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text above is escaped


def bar_chart(title: str, rows: Sequence[tuple[str, int, int]], width: int = 640) -> Markup:
    """One bar per (label, total, human) row: the total light, its human part dark."""
    row_h, label_w = 26, 220
    height = _PAD_TOP + row_h * max(len(rows), 1) + 24
    top = max((total for _, total, _ in rows), default=0) or 1
    bar_w = width - label_w - _PAD_RIGHT - 40
    parts = [_frame(title, width, height)]
    for i, (label, total, human) in enumerate(rows):
        y = _PAD_TOP + i * row_h
        short = label if len(label) <= 34 else label[:33] + "…"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end" {_FONT}>'
            f"<title>{escape(label)}</title>{escape(short)}</text>"
            f'<rect x="{label_w}" y="{y + 3}" width="{bar_w * total / top:.1f}" height="16" '
            f'fill="#9ecae1"/>'
            f'<rect x="{label_w}" y="{y + 3}" width="{bar_w * human / top:.1f}" height="16" '
            f'fill="#3182bd"/>'
            f'<text x="{label_w + bar_w * total / top + 6:.1f}" y="{y + 15}" {_FONT}>'
            f"{total}</text>"
        )
    parts.append(_legend([("clicks", "#9ecae1"), ("human clicks", "#3182bd")], width))
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text above is escaped


def _frame(title: str, width: int, height: int) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
        f'<text x="{_PAD_LEFT}" y="16" font-weight="bold" {_FONT}>{escape(title)}</text>'
    )


def _legend(items: Sequence[tuple[str, str]], width: int) -> str:
    out, x = [], width - _PAD_RIGHT - 110 * len(items)
    for label, color in items:
        out.append(
            f'<rect x="{x}" y="7" width="10" height="10" fill="{color}"/>'
            f'<text x="{x + 14}" y="16" {_FONT}>{escape(label)}</text>'
        )
        x += 110
    return "".join(out)
