"""Where ADIT's configuration comes from: the process environment, then the ``.env`` file."""

from __future__ import annotations

import os
from pathlib import Path

from dotenv import load_dotenv
from environs import Env

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_SETTINGS_MODULE = "adit.settings.development"
# The most dicom worker processes started by default (DICOM_WORKER_PROCESSES overrides).
MAX_DEFAULT_DICOM_WORKERS = 8


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


def dicom_worker_processes() -> int:
    """How many dicom workers ``cli up`` starts: DICOM_WORKER_PROCESSES, by default one per core.

    A transfer keeps about one core busy (pynetdicom and pydicom hold Python's GIL), so a single
    worker process would run two transfers at the speed of one; a process per core lets
    concurrent transfers use the machine. Beyond MAX_DEFAULT_DICOM_WORKERS the PACS, not the
    cores, set the pace, and each process costs memory and database connections.

    Raises:
        ValueError: If DICOM_WORKER_PROCESSES is set to anything but a whole number >= 1.
    """
    value = os.environ.get("DICOM_WORKER_PROCESSES", "").strip()
    if not value:
        return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_DICOM_WORKERS))
    try:
        processes = int(value)
    except ValueError:
        processes = 0
    if processes < 1:
        raise ValueError(
            f"DICOM_WORKER_PROCESSES must be a whole number of at least 1, not {value!r}."
        )
    return processes
