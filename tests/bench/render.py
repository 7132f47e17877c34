"""Per-recipient rendering: three templates and every link token for a 20 KB message.

The campaign is compiled once (layout, CSS inlining, link numbering); each
recipient then costs one ``UrlBuilder.for_delivery`` (open, unsubscribe, view
and one click token per link, signed in one call) and one
``CompiledMessage.render``. The budget is 100 µs per recipient; the figure is
the median over many recipients (2 shared cores: compare ratios).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from service.templates.compiled import compile_message
from service.templates.content import Brand, Content
from service.templates.urls import UrlBuilder
from service.tracking.tokens import TokenSigner

RECIPIENTS = 5_000
TARGET_BYTES = 20 * 1024

# A typical 20 KB newsletter: a personal greeting, prose, ten links, a few variables.
GREETING = "Hi {{ first_name }},\n\nthanks for stopping by at **{{ event.name }}**.\n\n"
PROSE = (
    "Our team put together what we discussed, from the roadmap to pricing and the "
    "integrations you asked about. Everything below is also on our website, and we are "
    "happy to walk {{ company | default('your team') }} through any of it.\n\n"
)
LINK = "- [Read part {n}](https://example.com/guide/{n}?utm_source=email)\n"
CLOSING = "\n\nSee you soon,\n\nThe {{ sponsor.name }} team"

# The worst case measured too: every paragraph personalized and linked.
HEAVY = (
    "Hi {{ first_name }}, thanks for visiting **our booth** at the expo. Here is what we "
    "talked about and what {{ company | default('your team') }} could do next: "
    "[read the case study](https://example.com/case/{n}).\n\n"
)


def _typical() -> str:
    body = GREETING + "".join(LINK.replace("{n}", str(n)) for n in range(10)) + "\n"
    while len(body) < TARGET_BYTES * 0.7:
        body += PROSE.replace("{{ company | default('your team') }}", "you")
    return body + PROSE + CLOSING


def _heavy() -> str:
    parts: list[str] = []
    n = 0
    while sum(map(len, parts)) < TARGET_BYTES * 0.6:
        parts.append(HEAVY.replace("{n}", str(n)))
        n += 1
    return "".join(parts)


def _measure(body: str) -> dict[str, Any]:
    brand = Brand(
        sponsor={"name": "Bench Sponsor", "postal_address": "1 Bench Road, Berlin"},
        event={"name": "Expo"},
    )
    content = Content(subject="Hello {{ name }}", message_body=body)
    started = time.perf_counter()
    message = compile_message(content, brand)
    compile_ms = (time.perf_counter() - started) * 1000
    urls = UrlBuilder("https://mail.example.org", TokenSigner(b"bench-secret-0123456789"))
    leads: list[dict[str, Any]] = [
        {
            "email": f"lead{i}@bench.example",
            "name": f"Lead {i}",
            "first_name": f"L{i}",
            "company": None if i % 3 else f"Company {i}",
            "attributes": {},
        }
        for i in range(RECIPIENTS)
    ]
    n_links = len(message.links)
    sample = message.render(leads[0], urls.for_delivery(1, n_links))
    timings = []
    clock = time.perf_counter_ns
    for delivery_id, lead in enumerate(leads, start=1):
        t0 = clock()
        message.render(lead, urls.for_delivery(delivery_id, n_links))
        timings.append(clock() - t0)
    timings.sort()
    return {
        "html_bytes": len(sample.html.encode()),
        "links": n_links,
        "compile_ms": round(compile_ms, 1),
        "median_us": round(statistics.median(timings) / 1000, 1),
        "p95_us": round(timings[int(len(timings) * 0.95)] / 1000, 1),
    }


def main() -> dict[str, Any]:
    typical, heavy = _measure(_typical()), _measure(_heavy())
    figures: dict[str, Any] = {"budget_us": 100}
    figures.update({f"typical_{k}": v for k, v in typical.items()})
    figures.update({f"heavy_{k}": v for k, v in heavy.items()})
    return figures
