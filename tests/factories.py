"""Test data: leads and campaign bodies."""

from __future__ import annotations

from typing import Any

import httpx


def leads(count: int, *, domain: str = "example.com", **fields: Any) -> list[dict[str, Any]]:
    """``count`` distinct leads; every third one has no name (to exercise fallbacks)."""
    return [
        {
            "email": f"lead{i}@{domain}",
            "name": None if i % 3 == 0 else f"Lead {i}",
            "company": f"Company {i % 7}",
            "intent_level": ("hot", "warm", "cold")[i % 3],
            "intent_score": i % 101,
            "tags": ["test"],
            **fields,
        }
        for i in range(count)
    ]


def campaign(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Launch",
        "subject": "Hello {{ name }}",
        "message_body": "Hi {{ name }},\n\nwelcome from {{ company | default('us') }}.",
        "audience_type": "all",
    }
    body.update(overrides)
    return body


async def add_leads(
    client: httpx.AsyncClient, sponsor: str, headers: dict[str, str], rows: list[dict[str, Any]]
) -> dict[str, Any]:
    for start in range(0, len(rows), 10_000):
        response = await client.post(
            f"/api/v1/sponsors/{sponsor}/leads/bulk",
            headers=headers,
            json={"leads": rows[start : start + 10_000]},
        )
        assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result
