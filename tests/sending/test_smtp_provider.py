"""The SMTP provider against a real local SMTP server (aiosmtpd), and a campaign over SMTP."""

from __future__ import annotations

import asyncio
import base64
import ssl
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dkim
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from service.errors import PermanentProviderError, TransientProviderError
from service.settings import Settings
from tests import factories
from tests.conftest import own_stack, provider_ids, run_campaign
from tests.fakes.smtp_server import FakeSMTP, parse_email
from worker.providers import build_provider
from worker.providers.base import OutgoingEmail
from worker.providers.smtp import SMTPProvider
from worker.providers.smtp_message import DKIMSigner

CAMPAIGN = str(uuid.UUID(int=7))
UNSUBSCRIBE = {
    "List-Unsubscribe": "<https://t.example/u/abc>, <mailto:unsub@t.example?subject=abc>",
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
}


def outgoing(i: int, **overrides: Any) -> OutgoingEmail:
    return factories.outgoing(i, CAMPAIGN, **overrides)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("smtp-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="module")
def plain_server() -> Iterator[FakeSMTP]:
    with FakeSMTP() as server:
        yield server


@pytest.fixture
def server(plain_server: FakeSMTP) -> Iterator[FakeSMTP]:
    plain_server.reset()
    yield plain_server
    plain_server.reset()


def plain_provider(server: FakeSMTP, **kwargs: Any) -> SMTPProvider:
    return SMTPProvider(
        "127.0.0.1", server.port, tls="none", message_id_domain="mail.test", **kwargs
    )


async def test_a_batch_goes_out_as_one_multipart_message_per_recipient(server: FakeSMTP) -> None:
    provider = plain_provider(server)
    try:
        emails = [outgoing(i) for i in range(3)]
        results = await provider.send_batch(emails, "key-plain")
    finally:
        await provider.aclose()

    assert [r.delivery_id for r in results] == [e.delivery_id for e in emails]
    assert all(r.provider_message_id and r.error is None for r in results)
    assert [m.rcpt_tos for m in server.messages] == [[e.to] for e in emails]
    assert {m.mail_from for m in server.messages} == {"news@sponsor.example"}
    first = parse_email(server.messages[0].data)
    assert first["From"] == "News Desk <news@sponsor.example>"
    assert first["Subject"] == "Hello 0"
    assert first["Date"]
    assert first["Message-ID"] == f"<{results[0].provider_message_id}>"
    assert first["Message-ID"].endswith("@mail.test>")
    assert first.get_content_type() == "multipart/alternative"
    parts = {part.get_content_type(): part.get_content() for part in first.iter_parts()}
    assert parts["text/plain"].strip() == "Hello reader 0"
    assert parts["text/html"].strip() == "<p>Hello reader 0</p>"


async def test_the_message_id_is_derived_from_the_delivery(server: FakeSMTP) -> None:
    provider = plain_provider(server)
    again = plain_provider(server)  # another process, after a crash
    try:
        first = await provider.send_batch([outgoing(1)], "key-a")
        second = await again.send_batch([outgoing(1)], "key-b")
        other = await provider.send_batch([outgoing(2)], "key-c")
    finally:
        await provider.aclose()
        await again.aclose()
    ids = [parse_email(m.data)["Message-ID"] for m in server.messages]
    assert ids[0] == ids[1] != ids[2]
    assert first[0].provider_message_id == second[0].provider_message_id
    assert other[0].provider_message_id != first[0].provider_message_id


def test_the_message_id_domain_defaults_to_the_public_host() -> None:
    settings = Settings(email_provider="smtp", public_base_url="https://mail.example.net:8443/x")
    provider = build_provider(settings).inner
    assert isinstance(provider, SMTPProvider)
    assert provider.message_id_domain == "mail.example.net"
    assert (provider.host, provider.port, provider.tls) == ("localhost", 587, "starttls")
    named = build_provider(settings.model_copy(update={"message_id_domain": "ids.example"})).inner
    assert isinstance(named, SMTPProvider)
    assert named.message_id_domain == "ids.example"


async def test_headers_pass_through_and_a_text_less_message_is_html_only(
    server: FakeSMTP,
) -> None:
    provider = plain_provider(server)
    try:
        await provider.send_batch(
            [outgoing(1, headers=UNSUBSCRIBE, text="", reply_to="desk@sponsor.example")], "key-h"
        )
    finally:
        await provider.aclose()
    message = parse_email(server.messages[0].data)
    assert message["List-Unsubscribe"] == UNSUBSCRIBE["List-Unsubscribe"]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Reply-To"] == "desk@sponsor.example"
    assert message.get_content_type() == "text/html"


async def test_unicode_is_encoded_and_line_breaks_cannot_inject_headers(
    server: FakeSMTP,
) -> None:
    provider = plain_provider(server)
    try:
        await provider.send_batch(
            [
                outgoing(
                    1,
                    sender="Jürgen Müller <news@sponsor.example>",
                    subject="Grüße, Zoë\r\nBcc: victim@example.org",
                    text="Hallo Zoë,\nschöne Grüße.\n",
                    html="<p>Hallo Zoë</p>",
                    headers={"X-Note": "a\nBcc: other@example.org"},
                )
            ],
            "key-unicode",
        )
    finally:
        await provider.aclose()
    (received,) = server.messages
    assert received.rcpt_tos == ["reader1@example.org"]
    message = parse_email(received.data)
    assert message["Subject"] == "Grüße, Zoë Bcc: victim@example.org"
    assert message["From"].addresses[0].display_name == "Jürgen Müller"
    assert message["X-Note"] == "a Bcc: other@example.org"
    assert "Bcc" not in message
    parts = {part.get_content_type(): part.get_content() for part in message.iter_parts()}
    assert parts["text/plain"].replace("\r\n", "\n").rstrip() == "Hallo Zoë,\nschöne Grüße."
    assert parts["text/html"].strip() == "<p>Hallo Zoë</p>"


async def test_starttls_with_auth(server_tls: ssl.SSLContext, ca_file: str) -> None:
    with FakeSMTP(tls="starttls", tls_context=server_tls, credentials={"app": "s3cret"}) as srv:
        provider = SMTPProvider(
            "127.0.0.1",
            srv.port,
            tls="starttls",
            ca_file=ca_file,
            username="app",
            password="s3cret",
            message_id_domain="mail.test",
        )
        try:
            results = await provider.send_batch([outgoing(1), outgoing(2)], "key-tls")
        finally:
            await provider.aclose()
        assert all(r.provider_message_id for r in results)
        assert [(m.tls, m.login) for m in srv.messages] == [(True, "app"), (True, "app")]


async def test_a_wrong_password_is_a_permanent_error(
    server_tls: ssl.SSLContext, ca_file: str
) -> None:
    with FakeSMTP(tls="starttls", tls_context=server_tls, credentials={"app": "s3cret"}) as srv:
        provider = SMTPProvider(
            "127.0.0.1", srv.port, ca_file=ca_file, username="app", password="wrong"
        )
        try:
            with pytest.raises(PermanentProviderError) as raised:
                await provider.send_batch([outgoing(1)], "key-auth")
        finally:
            await provider.aclose()
        assert raised.value.code == "smtp_535"
        assert not srv.messages


async def test_starttls_is_required_never_skipped(server: FakeSMTP) -> None:
    provider = SMTPProvider("127.0.0.1", server.port, tls="starttls")  # server has no TLS
    try:
        with pytest.raises(PermanentProviderError) as raised:
            await provider.send_batch([outgoing(1)], "key-no-starttls")
    finally:
        await provider.aclose()
    assert raised.value.code == "smtp_not_supported"
    assert not server.messages


async def test_implicit_tls(server_tls: ssl.SSLContext, ca_file: str) -> None:
    with FakeSMTP(tls="tls", tls_context=server_tls, credentials={"app": "pw"}) as srv:
        provider = SMTPProvider(
            "127.0.0.1", srv.port, tls="tls", ca_file=ca_file, username="app", password="pw"
        )
        try:
            results = await provider.send_batch([outgoing(1)], "key-implicit")
        finally:
            await provider.aclose()
        assert results[0].provider_message_id
        assert [(m.tls, m.login) for m in srv.messages] == [(True, "app")]


async def test_a_certificate_outside_the_ca_file_is_refused(server_tls: ssl.SSLContext) -> None:
    with FakeSMTP(tls="tls", tls_context=server_tls) as srv:
        provider = SMTPProvider("127.0.0.1", srv.port, tls="tls")  # system CAs only
        try:
            with pytest.raises(PermanentProviderError) as raised:
                await provider.send_batch([outgoing(1)], "key-untrusted")
        finally:
            await provider.aclose()
        assert raised.value.code == "smtp_tls_untrusted"
        assert not srv.messages


def _dkim_key() -> tuple[bytes, bytes]:
    """A fresh RSA key: (private PEM, the DNS TXT record that publishes it)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


async def test_dkim_signature_covers_the_unsubscribe_headers_and_verifies(
    server: FakeSMTP,
) -> None:
    private, record = _dkim_key()
    lookups: list[bytes] = []

    def dns(name: bytes, timeout: int = 5) -> bytes:
        lookups.append(name)
        return record

    signer = DKIMSigner(selector="s2026", domain="sponsor.example", private_key=private)
    provider = plain_provider(server, dkim_signer=signer)
    try:
        await provider.send_batch([outgoing(1, headers=UNSUBSCRIBE), outgoing(2)], "key-dkim")
    finally:
        await provider.aclose()

    with_unsubscribe, without = (m.data for m in server.messages)
    assert dkim.verify(with_unsubscribe, dnsfunc=dns)
    assert dkim.verify(without, dnsfunc=dns)
    assert lookups[0] == b"s2026._domainkey.sponsor.example."
    signature = parse_email(with_unsubscribe)["DKIM-Signature"]
    signed = {h.strip().lower() for h in signature.split("h=")[1].split(";")[0].split(":")}
    assert {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
    } <= signed
    assert "list-unsubscribe" not in parse_email(without)["DKIM-Signature"].lower()
    # A relay that rewrote the unsubscribe link would break the signature.
    tampered = with_unsubscribe.replace(b"https://t.example/u/abc", b"https://evil.example/u")
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_dkim_settings_are_checked_at_start_up(tmp_path: Path) -> None:
    private, _ = _dkim_key()
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(private)
    settings = Settings(
        email_provider="smtp",
        dkim_selector="s1",
        dkim_domain="sponsor.example",
        dkim_private_key_path=str(key_file),
    )
    provider = build_provider(settings).inner
    assert isinstance(provider, SMTPProvider)
    assert provider.dkim_signer is not None
    assert provider.dkim_signer.private_key == private
    with pytest.raises(RuntimeError, match="DKIM needs"):
        build_provider(settings.model_copy(update={"dkim_private_key_path": None}))
    with pytest.raises(RuntimeError, match="not a PEM RSA key"):
        build_provider(
            settings.model_copy(
                update={"dkim_private_key_path": None, "dkim_private_key": SecretStr("not a key")}
            )
        )


async def test_a_5xx_for_one_recipient_fails_only_that_row(server: FakeSMTP) -> None:
    server.reject("reader1@example.org", "550 5.1.1 No such user here")
    provider = plain_provider(server)
    try:
        results = await provider.send_batch([outgoing(i) for i in range(3)], "key-550")
    finally:
        await provider.aclose()
    assert results[0].provider_message_id and results[2].provider_message_id
    assert results[1].provider_message_id is None
    assert results[1].error is not None and results[1].error.startswith("smtp_550")
    assert "No such user" in results[1].error
    assert [m.rcpt_tos[0] for m in server.messages] == [
        "reader0@example.org",
        "reader2@example.org",
    ]


async def test_a_5xx_to_data_fails_only_that_row(server: FakeSMTP) -> None:
    server.fail_next(1, "554 5.7.1 Message rejected as spam", stage="data")
    provider = plain_provider(server)
    try:
        results = await provider.send_batch([outgoing(0), outgoing(1)], "key-554")
    finally:
        await provider.aclose()
    assert results[0].error is not None and results[0].error.startswith("smtp_554")
    assert results[1].provider_message_id
    assert len(server.messages) == 1


async def test_a_4xx_is_transient_and_the_retry_sends_only_what_was_not_accepted(
    server: FakeSMTP,
) -> None:
    emails = [outgoing(i) for i in range(3)]
    server.reject("reader1@example.org", "451 4.3.0 Mailbox busy, try later")
    provider = plain_provider(server)
    try:
        with pytest.raises(TransientProviderError) as raised:
            await provider.send_batch(emails, "key-451")
        assert raised.value.code == "smtp_451"
        assert len(server.messages) == 1
        assert provider.connections_opened == 1

        server.accept("reader1@example.org")
        results = await provider.send_batch(emails, "key-451")
    finally:
        await provider.aclose()
    assert all(r.provider_message_id for r in results)
    assert Counter(m.rcpt_tos[0] for m in server.messages) == Counter(e.to for e in emails)
    assert provider.connections_opened == 2  # the failed connection was dropped


async def test_the_same_batch_sent_twice_at_once_goes_out_once(server: FakeSMTP) -> None:
    emails = [outgoing(i) for i in range(5)]
    provider = plain_provider(server)
    try:
        first, second = await asyncio.gather(
            provider.send_batch(emails, "key-twice"), provider.send_batch(emails, "key-twice")
        )
    finally:
        await provider.aclose()
    assert first == second
    assert server.accepted == 5


async def test_a_421_to_mail_is_transient(server: FakeSMTP) -> None:
    server.fail_next(1, "421 4.7.0 Too many connections", stage="mail")
    provider = plain_provider(server)
    try:
        with pytest.raises(TransientProviderError) as raised:
            await provider.send_batch([outgoing(1)], "key-421")
        results = await provider.send_batch([outgoing(1)], "key-421")
    finally:
        await provider.aclose()
    assert raised.value.code == "smtp_421"
    assert results[0].provider_message_id
    assert len(server.messages) == 1


async def test_a_server_that_is_down_is_transient() -> None:
    closed = FakeSMTP()  # never started: its port refuses connections
    provider = plain_provider(closed, timeout=2)
    try:
        with pytest.raises(TransientProviderError) as raised:
            await provider.send_batch([outgoing(1)], "key-down")
    finally:
        await provider.aclose()
    assert raised.value.code == "smtp_connection"


async def test_the_pool_reuses_its_connections_across_batches(server: FakeSMTP) -> None:
    provider = plain_provider(server, pool_size=3)
    try:
        for n in range(5):
            await provider.send_batch([outgoing(n * 10 + i) for i in range(4)], f"seq-{n}")
        assert provider.connections_opened == 1
        assert len(server.connections) == 1

        batches = [[outgoing(100 + n * 10 + i) for i in range(4)] for n in range(9)]
        await asyncio.gather(
            *(provider.send_batch(batch, f"par-{n}") for n, batch in enumerate(batches))
        )
    finally:
        await provider.aclose()
    assert server.accepted == 5 * 4 + 9 * 4
    assert provider.connections_opened <= 3
    assert len(server.connections) == provider.connections_opened


# -- a campaign over the real stack ---------------------------------------------------------


@pytest.fixture(scope="module")
def smtp_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, FakeSMTP]]:
    with (
        FakeSMTP() as server,
        own_stack(
            tmp_path_factory.mktemp("smtp-stack"),
            "smtp",
            email_provider="smtp",
            smtp_host="127.0.0.1",
            smtp_port=server.port,
            smtp_tls="none",
            smtp_pool_size=2,
        ) as settings,
    ):
        yield settings, server


async def test_a_campaign_is_delivered_over_smtp_exactly_once(
    smtp_stack: tuple[Settings, FakeSMTP],
) -> None:
    settings, server = smtp_stack
    stats, campaign_id = await run_campaign(settings, 450)

    assert (stats["sent"], stats["failed"], stats["pending"]) == (450, 0, 0)
    per_recipient = Counter(m.rcpt_tos[0] for m in server.messages)
    assert len(per_recipient) == 450
    assert set(per_recipient.values()) == {1}
    messages = {m.rcpt_tos[0]: parse_email(m.data) for m in server.messages}
    lead1 = next(address for address in messages if address.startswith("lead1@"))
    assert messages[lead1]["Subject"] == "Hello Lead 1"

    ids = await provider_ids(settings, campaign_id)
    assert len(ids) == 450
    for address, provider_id in ids.items():
        message_id = messages[address]["Message-ID"]
        assert message_id == f"<{provider_id}>"
        assert message_id.endswith("@campaigns.example.com>")
