"""Headless Chromium for the tests: pages and messages rendered to PNG and DOM.

Screenshots stay in ``var/screenshots/`` for review. ``make test`` installs
Chromium first when it is missing (Debian package ``chromium``).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "var" / "screenshots"


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


def command(profile: Path, width: int, height: int, *flags: str) -> list[str]:
    """Chromium headless, alone with its profile, at ``width`` x ``height``."""
    return [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--no-first-run", "--disable-component-update",
        "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
        f"--window-size={width},{height}", *flags,
    ]  # fmt: skip


def browse(url: str, shot: Path, profile: Path, width: int, height: int) -> str:
    """The page at ``url`` as Chromium's DOM after scripts ran; its screenshot in ``shot``.

    Blocking: a test's event loop calls it in a thread while the app serves the page.
    """
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot.unlink(missing_ok=True)
    run = command(profile, width, height)
    dom = subprocess.run(
        [*run, "--dump-dom", url], check=True, capture_output=True, timeout=120, text=True
    )
    subprocess.run(
        [*run, f"--screenshot={shot}", url], check=True, capture_output=True, timeout=120
    )
    return dom.stdout


def sample(rows: list[bytes]) -> list[bytes]:
    """Every third pixel of every third row: enough to judge a page's ink."""
    return [row[i : i + 3] for row in rows[::3] for i in range(0, len(row), 9)]


def assert_not_blank(pixels: list[bytes], min_inked: float = 0.05) -> bytes:
    """The background colour, once the screenshot shows colours and enough ink:
    ``min_inked`` is the least share of pixels that differ from the background."""
    background = max(set(pixels), key=pixels.count)
    inked = sum(1 for p in pixels if p != background)
    assert len(set(pixels)) > 20, "the screenshot has almost no colours"
    assert inked / len(pixels) > min_inked, "the screenshot is (nearly) blank"
    return background
