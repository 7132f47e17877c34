"""Three real messages rendered to PNG by headless Chromium, checked for content.

The screenshots stay in ``var/screenshots/`` for review. ``make test`` installs
Chromium first when it is missing (Debian package ``chromium``).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from service.templates.compiled import compile_message
from service.templates.content import Brand, Content
from service.templates.urls import UrlBuilder
from service.tracking.tokens import TokenSigner

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "var" / "screenshots"
# A closed local port: the pixel and links never leave the machine.
URLS = UrlBuilder("http://127.0.0.1:9", TokenSigner(b"screenshot-secret-0123456789"))
BRAND = Brand(
    sponsor={"name": "ACME Events", "postal_address": "1 Main St, 10115 Berlin, Germany"},
    event={"name": "Expo 2026"},
)

MESSAGES = {
    "markdown": (
        Content(
            subject="Your Expo recap, {{ first_name }}",
            message_body=(
                "# Thanks for visiting, {{ first_name }}!\n\n"
                "It was great to meet the **{{ company }}** team at booth B12.\n\n"
                "- [Download the slides](https://example.com/slides)\n"
                "- [Book a follow-up call](https://example.com/call)\n"
                "- Read the [case study](https://example.com/case)\n\n"
                "Best,\n\nThe ACME team"
            ),
        ),
        {"email": "ada@example.com", "first_name": "Ada", "company": "Analytical Engines"},
    ),
    "html_body": (
        Content(
            subject="Welcome {{ name }}",
            message_body="unused",
            html_body=(
                "<h2>Welcome aboard, {{ name }}</h2>"
                '<p>Here is <a href="https://example.com/start">your getting-started guide</a>.</p>'
                "<table role='presentation' width='100%'><tr>"
                "<td style='background:#0b5cad;padding:12px;text-align:center'>"
                "<a href='https://example.com/go' style='color:#fff'>Get started</a>"
                "</td></tr></table>"
            ),
        ),
        {"email": "grace@example.com", "name": "Grace Hopper"},
    ),
    "rtl_emoji": (
        Content(
            subject="🎉 {{ name }}",
            message_body="مرحبا {{ name }} 👋\n\nشكرا لزيارتكم جناحنا في المعرض.\n\n"
            "[المزيد](https://example.com/ar)",
        ),
        {"email": "sara@example.com", "name": "سارة"},
    ),
}


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("Chromium is missing: `make test` installs it (apt-get install -y chromium)")
    return found


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB rows of an 8-bit RGB/RGBA PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, chunk = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and color in (2, 6), (depth, color)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        row_filter, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if row_filter == 1:
                line[i] = (line[i] + left) & 0xFF
            elif row_filter == 2:
                line[i] = (line[i] + up) & 0xFF
            elif row_filter == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif row_filter == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                predictor = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + predictor) & 0xFF
        rows.append(bytes(line))
        previous = line
    rgb = [b"".join(r[i : i + 3] for i in range(0, stride, channels)) for r in rows]
    return width, height, rgb


def screenshot(name: str, tmp_path: Path, *flags: str) -> list[bytes]:
    """Render MESSAGES[name] to ``var/screenshots/<name><suffix>.png``; a sample of its pixels."""
    content, lead = MESSAGES[name]
    message = compile_message(content, BRAND)
    rendered = message.render(lead, URLS.for_delivery(1, len(message.links)))
    page = tmp_path / f"{name}.html"
    page.write_text(rendered.html)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    suffix = "-dark" if flags else ""
    shot = SCREENSHOTS / f"{name}{suffix}.png"
    shot.unlink(missing_ok=True)
    subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=700,900",
            *flags,
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (700, 900)
    return [row[i : i + 3] for row in rows[::3] for i in range(0, len(row), 9)]


def assert_not_blank(pixels: list[bytes], min_inked: float = 0.05) -> bytes:
    """The background colour, once the screenshot shows colours and enough ink:
    ``min_inked`` is the least share of pixels that differ from the background."""
    background = max(set(pixels), key=pixels.count)
    inked = sum(1 for p in pixels if p != background)
    assert len(set(pixels)) > 20, "the screenshot has almost no colours"
    assert inked / len(pixels) > min_inked, "the screenshot is (nearly) blank"
    return background


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_messages_render_to_non_blank_screenshots(name: str, tmp_path: Path) -> None:
    background = assert_not_blank(screenshot(name, tmp_path))
    assert sum(background) > 600, "light mode shows a light background"


def test_the_layout_turns_dark_in_dark_mode(tmp_path: Path) -> None:
    dark = ("--force-dark-mode", "--blink-settings=preferredColorScheme=0")
    background = assert_not_blank(screenshot("markdown", tmp_path, *dark))
    assert sum(background) < 120, f"dark mode background is {tuple(background)}"
