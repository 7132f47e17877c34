"""Run the benchmarks and record their figures (see ``tests/bench/__init__.py``)."""

from __future__ import annotations

import importlib
import json
import pkgutil
import platform
import sys
import time
from pathlib import Path
from typing import Any

import tests.bench

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench-results.json"
REPORT = ROOT / "BENCHMARKS.md"


def _modules() -> list[str]:
    return sorted(
        m.name for m in pkgutil.iter_modules(tests.bench.__path__) if not m.name.startswith("_")
    )


def _section(name: str, figures: dict[str, Any]) -> str:
    lines = [f"<!-- bench:{name} -->", f"### {name}", "", "| figure | value |", "|---|---|"]
    for key, value in figures.items():
        shown = (
            ("yes" if value else "no")
            if isinstance(value, bool)
            else f"{value:,.2f}"
            if isinstance(value, float)
            else f"{value:,}"
            if isinstance(value, int)
            else str(value)
        )
        lines.append(f"| {key} | {shown} |")
    lines.append(f"<!-- /bench:{name} -->")
    return "\n".join(lines)


def _update_report(results: dict[str, dict[str, Any]]) -> None:
    text = REPORT.read_text() if REPORT.exists() else "# Benchmarks\n"
    for name, figures in results.items():
        section = _section(name, figures)
        start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
        if start in text and end in text:
            before, rest = text.split(start, 1)
            _, after = rest.split(end, 1)
            text = before + section + after
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
    REPORT.write_text(text)


def main(names: list[str]) -> None:
    for name in names or _modules():
        print(f"== bench {name}", flush=True)
        started = time.monotonic()
        module = importlib.import_module(f"tests.bench.{name}")
        figures: dict[str, Any] = module.main()
        figures["run_seconds"] = round(time.monotonic() - started, 1)
        figures["machine"] = f"{platform.machine()}, {platform.python_version()}"
        figures["date"] = time.strftime("%Y-%m-%d")
        print(json.dumps(figures, indent=2), flush=True)
        # Recorded module by module: a later failure keeps the figures already taken.
        stored: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        stored[name] = figures
        RESULTS.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")
        _update_report({name: figures})


if __name__ == "__main__":
    main(sys.argv[1:])
