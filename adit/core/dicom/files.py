"""DICOM files: an instance encoded as a Part 10 file, in memory or written to disk."""

from __future__ import annotations

import contextlib
import errno
import os
from io import BytesIO
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from adit.core.dicom.errors import DicomError


def decode_instance(data: bytes | bytearray, force: bool = False) -> Dataset:
    """The instance of a DICOM file's bytes, holding its values only: pydicom would keep the
    bytes it was read from too, which doubles what a waiting instance costs. ``force`` as
    pydicom's dcmread (which then reads a file without preamble and DICM prefix too)."""
    dataset = dcmread(BytesIO(data), force=force)
    dataset.buffer = None  # nothing is read later: no deferred values
    return dataset


def encode_instance(dataset: Dataset) -> bytes:
    """The instance as the bytes of a DICOM file (preamble, file meta, data set)."""
    ensure_file_meta(dataset)
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_instance(dataset: Dataset, path: Path) -> None:
    """Writes a DICOM file completely or not at all (a temporary name, then a rename), so a
    task run again after a crash replaces a file instead of finding half of one.

    Raises:
        DicomError: If the file cannot be written (the message names it; out of disk space
            is said as such).
    """
    ensure_file_meta(dataset)
    partial = path.with_name(f".{path.name}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        dataset.save_as(partial, enforce_file_format=True)
        os.replace(partial, path)
    except OSError as err:
        # A file where a folder should be fails the unlink too; what counts is the first error.
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        if err.errno == errno.ENOSPC:
            raise DicomError(f"Out of disk space while trying to save '{path}'.") from err
        raise DicomError(f"Could not save '{path}': {err.strerror or err}.") from err


def ensure_file_meta(dataset: Dataset) -> None:
    """Gives a data set without file meta information (as a C-STORE delivers it) the file meta
    a file needs; its transfer syntax defaults to Explicit VR Little Endian."""
    file_meta = getattr(dataset, "file_meta", None)
    if file_meta is None:
        file_meta = dataset.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" not in file_meta:
        file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
