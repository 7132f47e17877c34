"""The provider fakes for tests that drive a provider adapter directly: each follows its
provider's published spec (Resend's OpenAPI, Mailgun's, SendGrid's) or speaks SMTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.fakes.mailgun_server import FakeMailgun
from tests.fakes.resend_server import FakeResend
from tests.fakes.sendgrid_server import FakeSendGrid
from tests.fakes.smtp_server import FakeSMTP
from worker.providers.mailgun import MailgunProvider
from worker.providers.resend import ResendProvider
from worker.providers.sendgrid import SendGridProvider


@pytest.fixture
def resend_fake() -> Iterator[FakeResend]:
    with FakeResend() as fake:  # validates every body against resend.yaml
        yield fake


@pytest.fixture
async def resend(resend_fake: FakeResend) -> AsyncIterator[ResendProvider]:
    provider = ResendProvider("re_test", resend_fake.url, timeout=5.0)
    yield provider
    await provider.aclose()


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[FakeSMTP]:
    with FakeSMTP() as server:
        yield server


@pytest.fixture(scope="module")
def mailgun_fake() -> Iterator[FakeMailgun]:
    with FakeMailgun("key-test") as fake:  # validates every form against openapi.yaml
        yield fake


@pytest.fixture
async def mailgun(mailgun_fake: FakeMailgun) -> AsyncIterator[MailgunProvider]:
    mailgun_fake.reset()
    provider = MailgunProvider("key-test", "mg.acme.example", api_url=mailgun_fake.url)
    yield provider
    await provider.aclose()


@pytest.fixture(scope="module")
def sendgrid_fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid("SG.test") as fake:  # validates every body against tsg_mail_v3.yaml
        yield fake


@pytest.fixture
async def sendgrid(sendgrid_fake: FakeSendGrid) -> AsyncIterator[SendGridProvider]:
    sendgrid_fake.reset()
    provider = SendGridProvider("SG.test", sendgrid_fake.url)
    yield provider
    await provider.aclose()
