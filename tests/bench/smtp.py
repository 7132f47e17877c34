"""SMTP provider throughput against a local ``aiosmtpd`` server, with and without DKIM.

The server runs in its own process (``python -m tests.fakes.smtp_server``,
contents dropped). The provider sends ``BENCH_SMTP_MESSAGES`` messages in
batches of 100, ``BENCH_SMTP_IN_FLIGHT`` batches at once over a pool of
``BENCH_SMTP_POOL`` connections, as the sender would. Also timed on their own:
building one MIME message and DKIM-signing it (rsa-sha256, 2048-bit key).
The local server is Python too and shares the 2 cores, so the figures are a
floor for what the provider can do against a real MTA.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from worker.providers.base import OutgoingEmail
from worker.providers.smtp import SMTPProvider
from worker.providers.smtp_message import DKIMSigner

MESSAGES = int(os.environ.get("BENCH_SMTP_MESSAGES", "5000"))
POOL = int(os.environ.get("BENCH_SMTP_POOL", "4"))
IN_FLIGHT = int(os.environ.get("BENCH_SMTP_IN_FLIGHT", "8"))
BATCH = 100
CAMPAIGN = str(uuid.uuid4())
HEADERS = {
    "List-Unsubscribe": "<https://campaigns.example.com/u/abcdef0123456789>",
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
}


def _email(i: int) -> OutgoingEmail:
    body = "Hi reader, here is what we talked about at the expo. " * 40  # ~2 KB
    return OutgoingEmail(
        delivery_id=i,
        campaign_id=CAMPAIGN,
        sender="Bench <bench@sponsor.example>",
        to=f"reader{i}@example.org",
        subject=f"Hello {i}",
        html=f"<p>{body}</p>",
        text=body,
        headers=HEADERS,
    )


def _signer() -> DKIMSigner:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return DKIMSigner(selector="bench", domain="sponsor.example", private_key=pem)


async def _send_all(port: int, signer: DKIMSigner | None, count: int) -> float:
    provider = SMTPProvider(
        "127.0.0.1", port, tls="none", pool_size=POOL, dkim_signer=signer, timeout=60
    )
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def batch(start: int) -> int:
        async with slots:
            emails = [_email(i) for i in range(start, min(start + BATCH, count))]
            results = await provider.send_batch(emails, f"bench-{signer is not None}-{start}")
            return sum(1 for r in results if r.provider_message_id)

    try:
        started = time.perf_counter()
        sent = sum(await asyncio.gather(*(batch(s) for s in range(0, count, BATCH))))
        elapsed = time.perf_counter() - started
    finally:
        await provider.aclose()
    assert sent == count, f"{sent} of {count} accepted"
    return count / elapsed


def _per_message_ms(provider: SMTPProvider, n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        provider.build(_email(i))
    return (time.perf_counter() - started) / n * 1000


def main() -> dict[str, Any]:
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.smtp_server"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # "listening on 127.0.0.1:PORT"
        port = int(line.rsplit(":", 1)[1])
        signer = _signer()
        plain = asyncio.run(_send_all(port, None, MESSAGES))
        signed = asyncio.run(_send_all(port, signer, max(MESSAGES // 5, BATCH)))
    finally:
        server.terminate()
        server.wait()
    build_ms = _per_message_ms(SMTPProvider("h", 1, tls="none"), 500)
    signed_build_ms = _per_message_ms(SMTPProvider("h", 1, tls="none", dkim_signer=signer), 100)
    return {
        "messages_per_second_plain": round(plain, 1),
        "messages_per_second_dkim": round(signed, 1),
        "build_ms_per_message": round(build_ms, 3),
        "dkim_sign_ms_per_message": round(signed_build_ms - build_ms, 3),
        "pool_connections": POOL,
        "batches_in_flight": IN_FLIGHT,
        "messages_plain": MESSAGES,
        "messages_dkim": max(MESSAGES // 5, BATCH),
    }
