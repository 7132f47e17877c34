"""Rules for leads coming in: validation, email normalization, duplicates."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from email_validator import EmailNotValidError, validate_email
from pydantic import ValidationError

from schemas.http import LeadIn, RejectedRow


def normalize_email(address: str) -> str:
    """Syntax-check (no DNS on the hot path) and lower-case an address.

    Raises ``ValueError`` with a human message when the address is not valid.
    """
    try:
        result = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return result.normalized.lower()


def validate_leads(
    rows: Iterable[Mapping[str, Any]],
) -> tuple[list[dict[str, Any]], list[RejectedRow]]:
    """Split raw rows into valid leads (with the keys the caller sent) and rejections.

    A valid lead keeps only the fields present in its row, so an upsert
    changes what was sent and leaves the rest as stored. The second row with
    an address already seen in the same upload is rejected, not merged.
    """
    valid: list[dict[str, Any]] = []
    rejected: list[RejectedRow] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(rows):
        if not isinstance(raw, Mapping):
            rejected.append(RejectedRow(index=index, code="invalid_row", message="not an object"))
            continue
        try:
            lead = LeadIn.model_validate(raw)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(p) for p in error["loc"]) or None
            rejected.append(
                RejectedRow(index=index, code="invalid_field", message=error["msg"], field=field)
            )
            continue
        try:
            email = normalize_email(lead.email)
        except ValueError as exc:
            rejected.append(
                RejectedRow(index=index, code="invalid_email", message=str(exc), field="email")
            )
            continue
        if email in seen:
            rejected.append(
                RejectedRow(
                    index=index,
                    code="duplicate_in_upload",
                    message=f"same address as row {seen[email]}",
                    field="email",
                )
            )
            continue
        seen[email] = index
        values = lead.model_dump(include=set(raw.keys()) | {"email"})
        values["email"] = email
        valid.append(values)
    return valid, rejected
