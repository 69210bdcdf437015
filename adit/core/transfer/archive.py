"""Password-protected ZIP archives for DICOM folder destinations.

Data that leaves the hospital on a share or a removable drive should not be readable by whoever
finds it, so a folder destination can pack a transfer into an encrypted archive. It is written
with WinZip AES-256 (``pyzipper``), which 7-Zip, WinZip, The Unarchiver and pyzipper can open;
the legacy ZipCrypto scheme, which any unzip understands, is broken and therefore not offered.

A transfer task may crash or be retried, so an archive is first written to a sibling
``<name>.partial`` file and only renamed to its final name (atomically, with ``os.replace``)
when every instance was added. A user never sees a half-written archive under the final name,
and a re-run replaces the archive as a whole instead of appending duplicated entries.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import pyzipper

# DEFLATE level 1 rather than ZIP_STORED: uncompressed CT/MR pixel data contains large uniform
# regions (air, padding) and often shrinks by a third or more even at the fastest level, while
# level 1 costs little CPU next to the network transfer. Already compressed transfer syntaxes
# (JPEG, JPEG 2000) barely shrink, but DEFLATE then falls back to stored blocks cheaply.
_COMPRESSION = pyzipper.ZIP_DEFLATED
_COMPRESSLEVEL = 1
_AES_KEY_BITS = 256
_PARTIAL_SUFFIX = ".partial"
# "C:" at the start of a name would be a drive for Windows extractors.
_DRIVE = re.compile(r"^[A-Za-z]:")


class EncryptedZipWriter:
    """Writes an AES-256 encrypted ZIP archive, one file at a time, atomically.

    Use it as a context manager::

        with EncryptedZipWriter(Path("/mnt/share/study.zip"), password) as archive:
            for name, data in instances:
                archive.add(name, data)

    The archive appears under ``path`` only when the ``with`` block ends without an exception;
    otherwise the partial file is deleted and the exception propagates. Each ``add`` writes
    and encrypts its data immediately, so only the instance being added is held in memory.
    """

    def __init__(self, path: Path, password: str) -> None:
        """Checks the arguments; nothing is written before the ``with`` block is entered.

        Args:
            path: Final location of the archive. Missing parent folders are created.
            password: Password needed to read the archive; must not be empty.

        Raises:
            ValueError: If the password is empty (an archive without one would silently be
                readable by anybody who finds it).
        """
        if not password:
            raise ValueError(
                "An encrypted archive needs a non-empty password; refusing to write "
                f"{path} without one."
            )
        self.path = Path(path)
        self.partial_path = self.path.with_name(self.path.name + _PARTIAL_SUFFIX)
        self._password = password.encode("utf-8")
        self._file: IO[bytes] | None = None
        self._zip: pyzipper.AESZipFile | None = None
        self._names: set[str] = set()

    def __enter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Mode "wb" truncates a partial file left behind by a crashed earlier run.
        self._file = open(self.partial_path, "wb")  # closed in __exit__ / _discard
        try:
            self._zip = pyzipper.AESZipFile(
                self._file,
                "w",
                compression=_COMPRESSION,
                compresslevel=_COMPRESSLEVEL,
                encryption=pyzipper.WZ_AES,
            )
            self._zip.setpassword(self._password)
            self._zip.setencryption(pyzipper.WZ_AES, nbits=_AES_KEY_BITS)
        except BaseException:
            self._discard()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._discard()
            return  # the exception propagates
        try:
            self._finish()
        except BaseException:
            self._discard()
            raise
        os.replace(self.partial_path, self.path)

    def add(self, arcname: str, data: bytes) -> None:
        """Compresses, encrypts and writes one file to the archive.

        Args:
            arcname: Path of the file inside the archive, with ``/`` as separator.
            data: Content of the file (one DICOM instance).

        Raises:
            ValueError: If ``arcname`` could escape the extraction folder or was already added.
            RuntimeError: If called outside the ``with`` block.
        """
        if self._zip is None:
            raise RuntimeError("EncryptedZipWriter.add() must be called inside its with block.")
        _check_arcname(arcname)
        if arcname in self._names:
            # zipfile would store a second entry with the same name; extractors then pick one
            # of them arbitrarily.
            raise ValueError(f"{arcname!r} was already added to {self.path.name}.")
        self._zip.writestr(arcname, data)
        self._names.add(arcname)

    def _finish(self) -> None:
        """Writes the central directory and makes sure the bytes are on disk before renaming.

        Without the fsync a power loss right after the rename could leave an empty or truncated
        file under the final name, which is what the partial file is meant to prevent.
        """
        assert self._zip is not None and self._file is not None
        self._zip.close()
        self._zip = None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None

    def _discard(self) -> None:
        """Closes everything without caring about errors and deletes the partial file."""
        if self._zip is not None:
            try:
                self._zip.close()
            except Exception:  # the archive is thrown away anyway
                pass
            self._zip = None
        if self._file is not None:
            self._file.close()
            self._file = None
        self.partial_path.unlink(missing_ok=True)


def _check_arcname(arcname: str) -> None:
    """Rejects names that could place a file outside the folder the archive is extracted to.

    Extractors differ in how they treat ``..``, absolute paths, backslashes and drive letters,
    so such names are refused here rather than relying on every extractor to defuse them.
    """
    if not arcname or "\x00" in arcname:
        raise ValueError(f"Invalid file name in archive: {arcname!r}.")
    if arcname.startswith(("/", "\\")) or _DRIVE.match(arcname):
        raise ValueError(f"File names in an archive must be relative, got {arcname!r}.")
    parts = re.split(r"[/\\]", arcname)
    if ".." in parts:
        raise ValueError(f"File names in an archive must not contain '..', got {arcname!r}.")
    if "" in parts:
        raise ValueError(f"File names in an archive must not have empty parts: {arcname!r}.")
