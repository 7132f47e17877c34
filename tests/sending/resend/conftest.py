"""The Resend adapter's own tests: each gets a fake Resend of its own.

Tests here switch the fake's modes (a restricted key, unverified domains, errors
on demand), so they do not share the session's fake that the workers send to.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.fakes.resend_server import FakeResend
from worker.providers.resend import ResendProvider

API_KEY = "re_test_key"


@pytest.fixture
def fake() -> Iterator[FakeResend]:
    server = FakeResend().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def provider(fake: FakeResend) -> AsyncIterator[ResendProvider]:
    adapter = ResendProvider(api_key=API_KEY, api_url=fake.url, timeout=5.0)
    try:
        yield adapter
    finally:
        await adapter.aclose()
