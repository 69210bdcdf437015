"""Instances too large to hold in memory, kept on disk instead, and what an instance weighs.

A spooled instance is a DICOM file in an anonymous temporary file (it has no name, so nothing
is left behind whatever happens to the process) read back with its large values deferred:
pydicom reads them from the file only when they are used. As long as nobody changes it, it is
C-STOREd and written to a folder from that file, in pieces (``files.unchanged_file``), never
read whole into memory. The file's space is freed when the last reference to the dataset goes,
or when ``release`` closes it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from pydicom import Dataset, dcmread
from pydicom.dataelem import DataElement, RawDataElement

from adit.core.dicom.files import forget_file, keep_as_file, received_size, write_to

# Values longer than this stay on disk until used: pixel data, overlays, encapsulated documents.
DEFER_SIZE = 64 * 1024
# What an element costs beyond its value (tag, VR, length; pydicom's objects).
_ELEMENT_OVERHEAD = 100
# Names an open file, also one without a name of its own, for as long as it is open (Linux).
_OPEN_FILES = Path("/proc/self/fd")


def estimated_size(dataset: Dataset) -> int:
    """The bytes the dataset holds in memory, about its encoded size: the values as read
    (a value deferred to a file counts nothing), a little per element, and the bytes it
    arrived in if it keeps them (see ``files.read_instance``)."""
    elements = (dataset.get_item(tag, keep_deferred=True) for tag in dataset.keys())
    return _size_of_elements(elements) + received_size(dataset)


def _size_of_elements(elements: Iterable[DataElement | RawDataElement | None]) -> int:
    total = 0
    for element in elements:
        if element is None:
            continue
        total += _ELEMENT_OVERHEAD
        value = element.value
        if value is None:
            continue  # deferred: on disk, or empty
        if isinstance(value, bytes | bytearray):
            total += len(value)
        elif isinstance(element, DataElement) and element.VR == "SQ":
            total += sum(estimated_size(item) for item in value)
        else:
            total += len(str(value))
    return total


def is_spooled(dataset: Dataset) -> bool:
    return getattr(dataset, "buffer", None) is not None and getattr(dataset, "_spooled", False)


def spool_dataset(dataset: Dataset) -> Dataset:
    """The dataset written to a temporary file and read back with its large values deferred.

    Raises:
        OSError: If the temporary file cannot be written (a full disk).
    """
    file = tempfile.TemporaryFile(prefix="adit-spool-")
    try:
        write_to(dataset, file)  # as it arrived, if it is unchanged
    except BaseException:
        file.close()
        raise
    return _read_back(file)


def spooled_file(file: IO[bytes], force: bool = False) -> Dataset:
    """A DICOM file written to ``file`` (a temporary file of the caller's) read back with its
    large values deferred; the dataset then owns the file. ``force`` as pydicom's dcmread
    (which then reads a file without preamble and DICM prefix too)."""
    return _read_back(file, force)


def release(dataset: Dataset) -> None:
    """Frees the disk space of a spooled dataset at once; its deferred values are gone then."""
    buffer = getattr(dataset, "buffer", None)
    if is_spooled(dataset) and buffer is not None:
        # Its name in /proc must not outlive the file: the number may name another one next.
        forget_file(dataset)
        buffer.close()


def _read_back(file: IO[bytes], force: bool = False) -> Dataset:
    try:
        file.seek(0)
        dataset = dcmread(file, defer_size=DEFER_SIZE, force=force)
    except BaseException:
        file.close()
        raise
    # pydicom reads deferred values from the open file object, which has no name on disk.
    dataset._spooled = True  # pyright: ignore[reportAttributeAccessIssue]
    # A Part 10 file (not one read by force without its preamble) is sent and copied as it
    # is: pynetdicom reads a C-STORE's data set from a named file in pieces, where a dataset
    # would be read whole and encoded (three times the instance in memory). Only while the
    # dataset keeps the file open (pydicom keeps a file opened for reading by its name only),
    # or its number could name another file.
    keeps_open = getattr(dataset, "buffer", None) is file
    if keeps_open and getattr(dataset, "preamble", None) is not None and _OPEN_FILES.is_dir():
        keep_as_file(dataset, _OPEN_FILES / str(file.fileno()))
    return dataset
