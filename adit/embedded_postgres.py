"""The embedded PostgreSQL server that ADIT uses when no DATABASE_URL is configured.

The server comes from the PyPI package ``pgserver`` (PostgreSQL binaries inside a wheel). It is
started once, detached from the process that started it (``cleanup_mode=None``), and every other
process connects to it through its unix socket. Whoever wants it stopped calls :func:`stop`
explicitly; pgserver's own reference counting is not used because a process killed by SIGTERM
never deregisters and the server would then leak.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

# pgserver runs the server under this system account when started by root, because
# PostgreSQL refuses to run as root.
_ROOT_SYSTEM_USER = "pgserver"
SUPERUSER = "postgres"


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL server could not be started, reached or stopped."""


def bin_dir() -> Path:
    import pgserver

    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def _postmaster_lines(pgdata: Path) -> list[str] | None:
    try:
        return (pgdata / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None


def running_pid(pgdata: Path) -> int | None:
    """Returns the pid of the postmaster serving ``pgdata``, or None if it is not running."""
    lines = _postmaster_lines(pgdata)
    if not lines:
        return None
    try:
        pid = int(lines[0])
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return None
    except PermissionError:
        return pid  # alive, but owned by another account (the pgserver system user)
    return pid


def socket_dir(pgdata: Path) -> str | None:
    """The unix socket directory of a running server (line 5 of postmaster.pid).

    It is ``pgdata`` itself unless that path is too long for a unix socket; then pgserver picks a
    runtime directory elsewhere, so the file is the only reliable source.
    """
    if running_pid(pgdata) is None:
        return None
    lines = _postmaster_lines(pgdata) or []
    return lines[4] if len(lines) > 4 and lines[4] else None


def start(pgdata: Path) -> str:
    """Starts the server for ``pgdata`` unless it already runs; returns its socket directory."""
    existing = socket_dir(pgdata)
    if existing:
        return existing
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    from pgserver.postgres_server import get_server

    try:
        server = get_server(pgdata, cleanup_mode=None)
    except Exception as err:  # pgserver raises plain exceptions with the server log attached
        raise EmbeddedPostgresError(
            f"Could not start the embedded PostgreSQL server in {pgdata}: {err}. "
            f"See {pgdata / 'log'} for the server's own log, or set DATABASE_URL to use "
            "another PostgreSQL server."
        ) from err
    found = socket_dir(pgdata)
    if not found:
        raise EmbeddedPostgresError(f"The embedded PostgreSQL server in {pgdata} did not start.")
    del server
    return found


def stop(pgdata: Path, timeout: float = 30) -> bool:
    """Stops the server for ``pgdata``; returns False if it was not running."""
    if running_pid(pgdata) is None:
        return False
    command = [str(bin_dir() / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"]
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        assert runuser, "runuser (util-linux) is needed to stop a server started as root"
        command = [runuser, "-u", _ROOT_SYSTEM_USER, "--", *command]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise EmbeddedPostgresError(
            f"Could not stop the embedded PostgreSQL server in {pgdata}: "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
    # pgserver keeps a list of the processes that use the server; a stale one would make a
    # later pgserver.get_server() try to stop a server it does not own.
    (pgdata / ".handle_pids.json").unlink(missing_ok=True)
    return True


def ensure_database(host: str, name: str) -> None:
    """Creates database ``name`` on the server at socket directory ``host`` if missing."""
    with psycopg.connect(host=host, user=SUPERUSER, dbname="postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def django_database(pgdata: Path, name: str) -> dict:
    """Starts the server if needed and returns Django's DATABASES entry for it."""
    host = start(pgdata)
    ensure_database(host, name)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": SUPERUSER,
        "PASSWORD": "",
        "HOST": host,
        "PORT": "",
    }
