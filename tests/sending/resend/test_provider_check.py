"""``campaignctl provider-check`` against the fake: what it reports of Resend's answers."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from service.cli import main
from service.settings import get_settings
from tests.fakes.resend_server import FakeResend
from worker.providers.resend_check import PROBE_HTML, PROBE_SHOWN

Check = Callable[..., tuple[int, str]]


@pytest.fixture
def provider_check(
    fake: FakeResend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Check]:
    monkeypatch.setenv("RESEND_API_KEY", "re_check_key")
    monkeypatch.setenv("RESEND_API_URL", fake.url)

    def run(*args: str) -> tuple[int, str]:
        get_settings.cache_clear()
        with pytest.raises(SystemExit) as exited:
            main(["provider-check", "--to", "me@example.com", *args])
        return int(exited.value.code or 0), capsys.readouterr().out

    yield run
    get_settings.cache_clear()


def test_provider_check_sends_with_a_template_and_reports_every_answer(
    fake: FakeResend, provider_check: Check
) -> None:
    code, out = provider_check("--from", "news@acme.example")
    assert code == 0
    (message,) = fake.messages_to("me@example.com")
    assert message.sender == "campaign-service check <news@acme.example>"
    assert message.html == f"<p>{PROBE_HTML}</p>"
    assert f"email id {message.id}" in out
    assert "may manage templates" in out
    assert "template variables: filled in as given" in out
    assert PROBE_SHOWN in out  # what the human looks for in the received mail
    assert fake.templates == {}  # deleted after the check


def test_provider_check_with_a_sending_only_key_says_so_and_sends_whole(
    fake: FakeResend, provider_check: Check
) -> None:
    fake.set_restricted_key(True)
    code, out = provider_check()
    assert code == 0
    assert "restricted_api_key" in out and "whole bodies" in out
    (message,) = fake.messages_to("me@example.com")
    assert message.html == f"<p>{PROBE_HTML}</p>"


def test_provider_check_reports_a_refused_send_and_fails(
    fake: FakeResend, provider_check: Check
) -> None:
    fake.set_verified_domains({"verified.example"})
    code, out = provider_check("--from", "news@unverified.example")
    assert code == 1
    assert "send: refused" in out and "not verified" in out
    assert fake.messages == []
