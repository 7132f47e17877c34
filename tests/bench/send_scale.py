"""The scale target: 1,000,000 recipients of a 20 KB message, two sender processes.

The same pipeline as ``send`` (see there); ``BENCH_SCALE_RECIPIENTS`` lowers
the audience for a quicker look.
"""

from __future__ import annotations

import os
from typing import Any

from tests.bench import send

RECIPIENTS = int(os.environ.get("BENCH_SCALE_RECIPIENTS", "1000000"))


def main() -> dict[str, Any]:
    return send.run(RECIPIENTS, senders=2, body_kb=20)
