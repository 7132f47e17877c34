"""Three real messages rendered to PNG by headless Chromium, checked for content."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from service.templates.compiled import compile_message
from service.templates.content import Brand, Content
from service.templates.urls import UrlBuilder
from service.tracking.tokens import TokenSigner
from tests.browser import SCREENSHOTS, assert_not_blank, command, png_pixels, sample

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
        [*command(tmp_path / "profile", 700, 900, *flags), f"--screenshot={shot}", page.as_uri()],
        check=True,
        capture_output=True,
        timeout=120,
    )
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (700, 900)
    return sample(rows)


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_messages_render_to_non_blank_screenshots(name: str, tmp_path: Path) -> None:
    background = assert_not_blank(screenshot(name, tmp_path))
    assert sum(background) > 600, "light mode shows a light background"


def test_the_layout_turns_dark_in_dark_mode(tmp_path: Path) -> None:
    dark = ("--force-dark-mode", "--blink-settings=preferredColorScheme=0")
    background = assert_not_blank(screenshot("markdown", tmp_path, *dark))
    assert sum(background) < 120, f"dark mode background is {tuple(background)}"
