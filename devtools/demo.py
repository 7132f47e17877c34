"""``campaignctl demo`` (``make run`` / ``make demo``): everything, locally, end to end.

Starts PostgreSQL and the broker, migrates, creates topics, starts the API and
a worker as child processes, then sends a demo campaign over the real HTTP
API and reports where the messages went.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from devtools.devstack import DevStack, free_port, stop_processes
from service.auth import mint_token
from service.settings import Settings, settings_from_env

FIRST_NAMES = [
    "Ada",
    "Grace",
    "Linus",
    "Margaret",
    "Alan",
    "Barbara",
    "Ken",
    "Radia",
    "",
    "Yukihiro",
]
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", None]
LEVELS = ["hot", "warm", "cold"]


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _wait_ready(client: httpx.Client, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError("the API did not become ready")


def run_demo(root: Path, *, serve: bool, port: int, leads: int) -> int:
    root = root.resolve()
    stack = DevStack(root / "stack")
    children: list[subprocess.Popen[bytes]] = []
    print(f"starting PostgreSQL and the Kafka broker in {stack.root} …", flush=True)
    stack.start()
    try:
        port = port if _port_free(port) else free_port()
        env = {
            **os.environ,
            **stack.env(),
            "AUTH_JWT_SECRET": os.environ.get("AUTH_JWT_SECRET") or secrets.token_urlsafe(32),
            "TRACKING_SECRET": os.environ.get("TRACKING_SECRET") or secrets.token_urlsafe(32),
            "EMAIL_PROVIDER": os.environ.get("EMAIL_PROVIDER", "outbox"),
            "OUTBOX_DIR": os.environ.get("OUTBOX_DIR", str(root / "outbox")),
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "PROVIDER_RATE_PER_SECOND": os.environ.get("PROVIDER_RATE_PER_SECOND", "10"),
        }
        settings = settings_from_env(env)
        ctl = [sys.executable, "-m", "service.cli"]
        subprocess.run([*ctl, "migrate"], env=env, check=True)
        subprocess.run([*ctl, "kafka-init"], env=env, check=True)
        logs = open(root / "services.log", "ab")  # noqa: SIM115 - closed with the children
        children.append(
            subprocess.Popen([*ctl, "api", "--port", str(port)], env=env, stdout=logs, stderr=logs)
        )
        children.append(subprocess.Popen([*ctl, "worker"], env=env, stdout=logs, stderr=logs))
        base = f"http://127.0.0.1:{port}"
        admin = mint_token(settings, subject="demo-admin", scopes=["admin"], sponsor_ids=[])
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {admin}"}, timeout=30
        ) as client:
            _wait_ready(client)
            ok = _send_demo_campaign(client, leads, settings, env["OUTBOX_DIR"], base)
        if serve and ok:
            print("\nserving — press Ctrl-C to stop everything", flush=True)
            stopped = threading.Event()
            signal.signal(signal.SIGINT, lambda *_: stopped.set())
            signal.signal(signal.SIGTERM, lambda *_: stopped.set())
            stopped.wait()
        return 0 if ok else 1
    finally:
        stop_processes(children)
        stack.stop()
        print("stopped everything the demo started", flush=True)


def _send_demo_campaign(
    client: httpx.Client, leads: int, settings: Settings, outbox_dir: str, base: str
) -> bool:
    sponsor = "demo-sponsor"
    client.put(
        f"/api/v1/sponsors/{sponsor}",
        json={
            "name": "Demo Sponsor",
            "from_email": "hello@demo-sponsor.example",
            "from_name": "Demo Sponsor",
            "reply_to": "team@demo-sponsor.example",
            "postal_address": "1 Demo Street, 10115 Berlin, Germany",
        },
    ).raise_for_status()
    rows = [
        {
            "email": f"lead{i}@example.com",
            "first_name": FIRST_NAMES[i % len(FIRST_NAMES)] or None,
            "name": FIRST_NAMES[i % len(FIRST_NAMES)] or None,
            "company": COMPANIES[i % len(COMPANIES)],
            "intent_level": LEVELS[i % len(LEVELS)],
            "intent_score": (i * 37) % 101,
            "tags": ["demo"],
        }
        for i in range(leads)
    ]
    upsert = client.post(f"/api/v1/sponsors/{sponsor}/leads/bulk", json={"leads": rows})
    upsert.raise_for_status()
    print(f"leads: {upsert.json()['inserted']} inserted, {upsert.json()['updated']} updated")
    created = client.post(
        f"/api/v1/sponsors/{sponsor}/campaigns",
        json={
            "name": "Demo: welcome",
            "subject": "Welcome, {{ first_name }}!",
            "message_body": (
                "Hi {{ name }},\n\nthanks for stopping by our booth. "
                "We would love to show {{ company | default('your team') }} what we built.\n\n"
                "See you soon,\nthe Demo Sponsor team"
            ),
            "audience_type": "all",
        },
    )
    created.raise_for_status()
    campaign = created.json()
    print(
        f"campaign {campaign['id']} {campaign['status']}, {campaign['total_recipients']} recipients"
    )
    stats_url = f"/api/v1/sponsors/{sponsor}/campaigns/{campaign['id']}/stats"
    deadline = time.monotonic() + 180
    stats = client.get(stats_url).json()
    while stats["status"] not in ("sent", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.5)
        stats = client.get(stats_url).json()
        print(f"  {stats['status']}: {stats['sent']} sent, {stats['pending']} pending", flush=True)
    token = mint_token(
        settings,
        subject="demo-dashboard",
        scopes=["campaigns:read", "campaigns:write", "leads:write", "stats:read"],
        sponsor_ids=[sponsor],
        ttl_seconds=24 * 3600,
    )
    where = (
        f"{outbox_dir}/{campaign['id']}/ (one .eml file per recipient)"
        if settings.email_provider == "outbox"
        else settings.email_provider
    )
    print(
        "\n=== demo campaign ===\n"
        f"status:     {stats['status']}\n"
        f"recipients: {stats['total_recipients']}  sent: {stats['sent']}  "
        f"failed: {stats['failed']}  pending: {stats['pending']}  "
        f"suppressed: {stats['suppressed']}\n"
        f"messages:   {where}\n"
        f"API docs:   {base}/docs\n"
        f"token:      {token}\n"
        f"try:        curl -H 'Authorization: Bearer <token>' {base}{stats_url}\n",
        flush=True,
    )
    return bool(stats["status"] == "sent")
