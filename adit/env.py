"""Where ADIT's configuration comes from: the process environment, then the ``.env`` file."""

from __future__ import annotations

import os
from pathlib import Path

from dotenv import load_dotenv
from environs import Env

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_SETTINGS_MODULE = "adit.settings.development"


def env_file() -> Path:
    """The ``.env`` file in use: ``ENV_FILE`` if set, else ``.env`` in the project folder."""
    return Path(os.environ.get("ENV_FILE") or BASE_DIR / ".env")


def load_env() -> Env:
    """Reads the ``.env`` file into ``os.environ`` without overriding variables already set."""
    path = env_file()
    if path.exists():
        load_dotenv(path, override=False)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", DEFAULT_SETTINGS_MODULE)
    return Env()
