"""The maintenance commands of the CLI, run as a user runs them."""

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from adit import embedded_postgres
from adit.env import BASE_DIR
from adit.system_packages import MissingSystemPackage, ensure_commands

CLI = Path(sys.executable).parent / "cli"


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CLI), *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120
    )


def _environment(tmp: Path) -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")
    }
    return environment | {"ENV_FILE": str(tmp / ".env"), "ADIT_DATA_DIR": str(tmp / "data")}


def _values(env_file: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    return {name: value for name, value in pairs if not name.startswith("#")}


@pytest.mark.parametrize("value", ["0", "two"])
def test_up_refuses_a_worker_count_that_is_not_a_positive_number(short_tmp_dir, value):
    environment = _environment(short_tmp_dir) | {"DICOM_WORKER_PROCESSES": value}
    result = _cli("up", env=environment)
    assert result.returncode != 0
    assert f"DICOM_WORKER_PROCESSES must be a whole number of at least 1, not '{value}'." in (
        result.stdout + result.stderr
    )
    # Refused before anything started: no database was created.
    assert not (short_tmp_dir / "data" / "pgdata").exists()


def test_init_workspace_writes_private_env_with_fresh_secrets(short_tmp_dir):
    result = _cli("init-workspace", env=_environment(short_tmp_dir))
    assert result.returncode == 0, result.stderr
    env_file = short_tmp_dir / ".env"
    values = _values(env_file)
    for name in ("DJANGO_SECRET_KEY", "TOKEN_AUTHENTICATION_SALT", "SUPERUSER_PASSWORD"):
        assert values[name] not in ("", "change-me")
    assert len(values["DJANGO_SECRET_KEY"]) >= 50
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600

    again = _cli("init-workspace", env=_environment(short_tmp_dir))
    assert "left as it is" in again.stdout
    assert _values(env_file) == values

    forced = _cli("init-workspace", "--force", env=_environment(short_tmp_dir))
    assert forced.returncode == 0
    assert _values(env_file)["DJANGO_SECRET_KEY"] != values["DJANGO_SECRET_KEY"]


@pytest.mark.integration
def test_backup_and_restore_bring_back_deleted_data(short_tmp_dir):
    environment = _environment(short_tmp_dir)
    pgdata = short_tmp_dir / "data" / "pgdata"
    host = embedded_postgres.start(pgdata)
    try:
        embedded_postgres.ensure_database(host, "adit")
        with psycopg.connect(host=host, user="postgres", dbname="adit", autocommit=True) as conn:
            conn.execute("CREATE TABLE study (uid text)")
            conn.execute("INSERT INTO study VALUES ('1.2.3')")

        backup = short_tmp_dir / "adit.dump"
        result = _cli("db-backup", str(backup), env=environment)
        assert result.returncode == 0, result.stderr
        assert f"Backup written to {backup}" in result.stdout

        with psycopg.connect(host=host, user="postgres", dbname="adit", autocommit=True) as conn:
            conn.execute("DELETE FROM study")

        result = _cli("db-restore", str(backup), env=environment)
        assert result.returncode == 0, result.stderr
        with psycopg.connect(host=host, user="postgres", dbname="adit") as conn:
            assert conn.execute("SELECT uid FROM study").fetchall() == [("1.2.3",)]
    finally:
        embedded_postgres.stop(pgdata)


def test_restore_of_a_missing_file_says_so(short_tmp_dir):
    result = _cli("db-restore", str(short_tmp_dir / "nope.dump"), env=_environment(short_tmp_dir))
    assert result.returncode == 1
    assert "No backup file at" in result.stderr


def test_cli_help_lists_every_command():
    result = subprocess.run([str(CLI), "--help"], capture_output=True, text=True, timeout=60)
    for command in (
        "up",
        "test",
        "lint",
        "format-code",
        "init-workspace",
        "db-backup",
        "db-restore",
        "shell",
        "copy-statics",
        "compose-up",
        "compose-down",
    ):
        assert f" {command} " in result.stdout


def test_every_command_answers_to_its_underscore_spelling_and_is_listed_once():
    import typer.main
    from typer.core import TyperGroup

    from cli import app

    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    names = list(group.commands)
    dashed = [name for name in names if "-" in name]
    assert "copy-statics" in dashed
    for name in dashed:
        underscored = name.replace("-", "_")
        result = subprocess.run(
            [str(CLI), underscored, "--help"], capture_output=True, text=True, timeout=60
        )
        assert "No such command" not in result.stderr, underscored
        assert result.returncode == 0, result.stderr
        assert f"Usage: cli {name} " in result.stdout

    listing = subprocess.run([str(CLI), "--help"], capture_output=True, text=True, timeout=60)
    listed = re.findall(r"^│ ([a-z][a-z_-]*) ", listing.stdout, re.MULTILINE)
    assert sorted(listed) == sorted(names)


def test_an_unknown_command_is_still_refused():
    result = subprocess.run([str(CLI), "copy_static"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "No such command" in result.stderr


def test_missing_package_without_root_names_the_package(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(MissingSystemPackage, match="Missing Debian package.*: orthanc-nonexistent"):
        ensure_commands({"/nonexistent/orthanc": "orthanc-nonexistent"})


def test_present_commands_need_no_install():
    ensure_commands({"sh": "dash"})


@pytest.mark.parametrize("separator", [[], ["--"]], ids=["plain", "after-double-dash"])
def test_cli_test_forwards_coverage_options_to_pytest(short_tmp_dir, separator):
    # A database URL keeps the command from starting an embedded server the chosen test does not
    # need; the coverage data goes to the temporary folder, not into the repository.
    environment = _environment(short_tmp_dir) | {
        "DATABASE_URL": "postgres://unused@127.0.0.1:9/unused",
        "COVERAGE_FILE": str(short_tmp_dir / ".coverage"),
    }
    result = _cli(
        "test",
        *separator,
        "--cov=adit.system_packages",
        "--cov-report=term",
        "tests/test_cli_tools.py::test_present_commands_need_no_install",
        env=environment,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "unrecognized arguments" not in result.stderr
    assert "coverage: platform" in result.stdout
    assert "adit/system_packages.py" in result.stdout
    assert "1 passed" in result.stdout
