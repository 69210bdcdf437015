#!/usr/bin/env python3
"""Django's command-line utility for ADIT: ``./manage.py <command>``.

From a plain shell ``python3`` is the system's interpreter, which lacks ADIT's packages; the
script then starts itself again with the project's own one (``.venv``, made by ``uv sync``),
so ``./manage.py`` works there as well as ``uv run ./manage.py`` does.
"""

import importlib
import os
import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent
VENV_DIR = PROJECT_DIR / ".venv"
# Set for the restarted process: if it still lacks the packages, it says so instead of looping.
RESTARTED_MARK = "ADIT_MANAGE_RESTARTED"
# Packages every command needs before Django can even read the settings.
REQUIRED_MODULES = ("django", "environs")


def _has_project_packages() -> bool:
    try:
        for module in REQUIRED_MODULES:
            importlib.import_module(module)
    except ImportError:
        return False
    return True


def _use_project_interpreter() -> None:
    """Re-executes this script with .venv's Python if the running one lacks the packages."""
    if _has_project_packages():
        # Commands that start ./manage.py in turn get the same help if they need it.
        os.environ.pop(RESTARTED_MARK, None)
        return
    venv_python = VENV_DIR / "bin" / "python"
    already_in_venv = Path(sys.prefix).resolve() == VENV_DIR.resolve()
    if not venv_python.exists():
        sys.exit(
            f"ADIT's Python packages are not installed for {sys.executable}, and there is no "
            f"project environment in {VENV_DIR}.\nRun 'uv sync' in {PROJECT_DIR} once, then "
            "'./manage.py ...' again (or run it as 'uv run ./manage.py ...')."
        )
    if already_in_venv or os.environ.get(RESTARTED_MARK):
        sys.exit(
            f"ADIT's Python packages ({', '.join(REQUIRED_MODULES)}) are missing from the "
            f"project environment {VENV_DIR}.\nRun 'uv sync' in {PROJECT_DIR} to install them."
        )
    os.environ[RESTARTED_MARK] = "1"
    os.execv(venv_python, [str(venv_python), *sys.argv])


def main():
    _use_project_interpreter()
    from adit.env import load_env

    load_env()
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
