"""Debian packages that ADIT's tools and tests run (Chromium, Orthanc, dcmtk)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


class MissingSystemPackage(RuntimeError):
    """A needed Debian package is missing and cannot be installed by this process."""


def _present(command: str) -> bool:
    if os.path.isabs(command):
        return Path(command).exists()
    return shutil.which(command) is not None


def ensure_commands(commands: dict[str, str]) -> None:
    """Makes sure every command exists; installs the missing ones' packages when run as root.

    ``commands`` maps a command (a name on PATH or an absolute path) to its Debian package.
    """
    missing = sorted({package for command, package in commands.items() if not _present(command)})
    if not missing:
        return
    names = " ".join(missing)
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise MissingSystemPackage(
            f"Missing Debian package(s): {names}. Install them with "
            f"'sudo apt-get install -y {names}' and run the command again."
        )
    print(f"Installing missing Debian package(s) with apt-get: {names}", flush=True)
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # A fresh machine has no package lists yet; an update first makes the install find them.
    subprocess.run(["apt-get", "update", "-q"], env=environment, check=False)
    result = subprocess.run(["apt-get", "install", "-y", "-q", *missing], env=environment)
    still_missing = [command for command in commands if not _present(command)]
    if result.returncode != 0 or still_missing:
        raise MissingSystemPackage(
            f"apt-get could not install {names} (exit code {result.returncode}); "
            "see its output above."
        )
