"""The trigger condition language evaluated on its own (no stack needed)."""

from __future__ import annotations

from typing import Any

import orjson

from schemas.events import TOPIC_ORDERS
from service.triggers import condition
from worker.trigger import domain_decoder


def test_changed_to_holds_only_when_the_previous_value_differs() -> None:
    tree = {"field": "data.status", "op": "changed_to", "value": "paid"}
    decode = domain_decoder(TOPIC_ORDERS)

    def event(previous: dict[str, Any] | None) -> Any:
        body = {"event_id": "e", "sponsor_id": "s", "type": "t", "data": {"status": "paid"}}
        return decode(orjson.dumps({**body, "previous": previous})).view

    assert condition.matches(tree, event({"status": "pending"}))
    assert not condition.matches(tree, event({"status": "paid"}))
    assert condition.matches(tree, event(None))


def test_missing_fields_match_ne_and_not_exists_only() -> None:
    view = {"a": {"b": 1}}
    assert condition.matches({"field": "a.c", "op": "ne", "value": 1}, view)
    assert condition.matches({"field": "a.c", "op": "exists", "value": False}, view)
    assert not condition.matches({"field": "a.c", "op": "gte", "value": 0}, view)
    assert not condition.matches({"field": "a.b.c", "op": "eq", "value": 1}, view)
    assert condition.matches({"any": [{"field": "a.b", "op": "in", "value": [2, 1]}]}, view)
    assert condition.matches({"all": []}, view) and not condition.matches({"any": []}, view)
