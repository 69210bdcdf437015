"""``./manage.py`` run from a plain shell, whose python3 lacks ADIT's packages."""

import shutil
import subprocess
from pathlib import Path

from adit.env import BASE_DIR

MANAGE_PY = BASE_DIR / "manage.py"
# What a login shell offers, without the project's environment on PATH.
PLAIN_PATH = "/usr/local/bin:/usr/bin:/bin"
PRINT_PREFIX = "import sys; print('prefix=' + sys.prefix)"


def _system_python() -> str:
    python = shutil.which("python3", path=PLAIN_PATH)
    assert python is not None, f"no python3 on {PLAIN_PATH}"
    return python


def _run_plain(command: list[str], cwd: Path, **environment: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command,
        cwd=cwd,
        env={"PATH": PLAIN_PATH, **environment},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _prefix_printed(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if line.startswith("prefix=")]
    assert len(lines) == 1, stdout
    return lines[0].removeprefix("prefix=")


def test_manage_py_runs_from_a_plain_shell():
    result = _run_plain(["./manage.py", "help"], BASE_DIR, ENV_FILE="/nonexistent/.env")
    assert result.returncode == 0, result.stderr
    assert "populate_orthancs" in result.stdout


def test_an_interpreter_without_the_packages_hands_over_to_the_project_environment(
    short_tmp_dir,
):
    # -S keeps the system interpreter from its site-packages, so it lacks Django even where a
    # system-wide Django is installed; the script is then run again by .venv's interpreter.
    result = _run_plain(
        [_system_python(), "-S", "manage.py", "shell", "-c", PRINT_PREFIX],
        BASE_DIR,
        DJANGO_SETTINGS_MODULE="adit.settings.test",
        ENV_FILE=str(short_tmp_dir / ".env"),
    )
    assert result.returncode == 0, result.stderr
    assert Path(_prefix_printed(result.stdout)) == BASE_DIR / ".venv"


def test_without_a_project_environment_it_says_to_run_uv_sync(short_tmp_dir):
    shutil.copy(MANAGE_PY, short_tmp_dir / "manage.py")

    result = _run_plain([_system_python(), "-S", "manage.py", "help"], short_tmp_dir)

    assert result.returncode == 1
    assert f"no project environment in {short_tmp_dir / '.venv'}" in result.stderr
    assert "uv sync" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_environment_that_lacks_the_packages_too_ends_with_a_message_not_a_loop(
    short_tmp_dir,
):
    shutil.copy(MANAGE_PY, short_tmp_dir / "manage.py")
    # A broken project environment: its interpreter has no site-packages either.
    venv_python = short_tmp_dir / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text(f'#!/bin/sh\nexec {_system_python()} -S "$@"\n')
    venv_python.chmod(0o755)

    result = _run_plain([_system_python(), "-S", "manage.py", "help"], short_tmp_dir)

    assert result.returncode == 1
    assert f"missing from the project environment {short_tmp_dir / '.venv'}" in result.stderr
    assert "Traceback" not in result.stderr
