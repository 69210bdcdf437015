"""DICOM files: an instance encoded as a Part 10 file, in memory or written to disk.

An instance read from the bytes it arrived in (``read_instance``) keeps those bytes: as long as
nobody changes it, it is written and sent as those bytes again (``unchanged_data_set``)
instead of being encoded anew, which is most of what passing an instance through costs in
pydicom and what would alter values it encodes differently (an odd length, a private element)
on the way. Its values are read on demand; large ones (pixel data) stay in the bytes until used.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import struct
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import IO

from pydicom import Dataset, dcmread
from pydicom.charset import default_encoding
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import FileMetaDataset, validate_file_meta
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import data_element_offset_to_value
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from adit.core.dicom.errors import DicomError

# Values longer than this stay in the received bytes until they are used.
LAZY_VALUE_SIZE = 64 * 1024
_PREAMBLE = b"\x00" * 128
_UNDEFINED_LENGTH = 0xFFFFFFFF


@dataclass(frozen=True, eq=False)
class _AsReceived:
    """The bytes an instance was read from, and its elements as read from them."""

    data: bytes
    start: int  # where the data set begins in ``data`` (after any preamble and file meta)
    syntax: UID
    elements: dict[BaseTag, RawDataElement | DataElement]


def decode_instance(data: bytes | bytearray, force: bool = False) -> Dataset:
    """The instance of a DICOM file's bytes, holding its values only: pydicom would keep the
    bytes it was read from too, which doubles what a waiting instance costs. ``force`` as
    pydicom's dcmread (which then reads a file without preamble and DICM prefix too)."""
    dataset = dcmread(BytesIO(data), force=force)
    dataset.buffer = None  # nothing is read later: no deferred values
    return dataset


def read_instance(data: bytes | bytearray, force: bool = False) -> Dataset:
    """The instance of a DICOM file's bytes, read lazily and keeping the bytes (see the
    module's docstring); ``force`` as in ``decode_instance``. The dataset holds the bytes once:
    its large values are read from them when used."""
    data = bytes(data)  # shared with the buffer below, not copied again
    buffer = BytesIO(data)
    dataset = dcmread(buffer, defer_size=LAZY_VALUE_SIZE, force=force)
    syntax = _syntax_read(dataset)
    if syntax is None:
        return decode_instance(data, force=force)  # deflated: its values are not in ``data``
    _keep(dataset, data, syntax)
    return dataset


def _syntax_read(dataset: Dataset) -> UID | None:
    """The transfer syntax pydicom read the data set in, if its values lie in the bytes read
    as they are (not deflated)."""
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None:
        return None
    syntax = UID(str(syntax))
    if syntax == DeflatedExplicitVRLittleEndian or not syntax.is_transfer_syntax:
        return None
    implicit, little = dataset.original_encoding
    if (implicit, little) != (syntax.is_implicit_VR, syntax.is_little_endian):
        return None
    return syntax


def _keep(dataset: Dataset, data: bytes, syntax: UID) -> None:
    elements = dict(dataset._dict)  # pyright: ignore[reportPrivateUsage]
    if not elements:
        return
    # The first element is the one whose value comes first (elements do not overlap); one
    # without a place in the bytes (-1) means they are not what the dataset holds.
    first = min(elements.values(), key=_value_tell)
    start, tag = _element_start(first, syntax), first.tag
    order = "<" if syntax.is_little_endian else ">"
    if start < 0 or data[start : start + 4] != struct.pack(f"{order}HH", tag >> 16, tag & 0xFFFF):
        return  # not where the first element begins: the bytes are not passed on
    dataset._as_received = _AsReceived(data, start, syntax, elements)  # pyright: ignore[reportAttributeAccessIssue]


def _value_tell(element: RawDataElement | DataElement) -> int:
    if isinstance(element, RawDataElement):
        return element.value_tell
    return element.file_tell if element.file_tell is not None else -1


def _element_start(element: RawDataElement | DataElement, syntax: UID) -> int:
    tell = _value_tell(element)
    if tell < 0:
        return -1
    return tell - data_element_offset_to_value(syntax.is_implicit_VR, element.VR)


def forget_received(dataset: Dataset) -> None:
    """Lets go of the bytes the instance arrived in: it is changed, or about to be."""
    dataset.__dict__.pop("_as_received", None)
    dataset.__dict__.pop("_as_file", None)


def read_instance_file(path: Path) -> Dataset:
    """The instance of a DICOM file on disk, its large values left in the file, marked as that
    file: as long as nobody changes it (see ``forget_received``), it is written and sent as
    the file's bytes, read in pieces, so that an instance of gigabytes never is in memory."""
    dataset = dcmread(path, defer_size=LAZY_VALUE_SIZE)
    keep_as_file(dataset, path)
    return dataset


def keep_as_file(dataset: Dataset, path: Path) -> None:
    """Marks the instance as the DICOM file at ``path``, which it was read from (see
    ``read_instance_file``; ``spool`` marks its files so)."""
    dataset.__dict__["_as_file"] = path


def forget_file(dataset: Dataset) -> None:
    """The instance is no longer the file it was read from (the file is about to go)."""
    dataset.__dict__.pop("_as_file", None)


def unchanged_file(dataset: Dataset) -> Path | None:
    """The file the instance was read from by ``read_instance_file`` (or spooled to), if it is
    unchanged."""
    return dataset.__dict__.get("_as_file")


def has_received_bytes(dataset: Dataset) -> bool:
    return "_as_received" in dataset.__dict__


def received_size(dataset: Dataset) -> int:
    """How many bytes the instance holds of what it arrived in (0: none)."""
    received: _AsReceived | None = dataset.__dict__.get("_as_received")
    return len(received.data) if received is not None else 0


def unchanged_data_set(dataset: Dataset) -> memoryview | None:
    """The data set's bytes as it arrived, if it still holds exactly what they encode, in the
    transfer syntax its file meta names; None if there are none, or it changed.

    Every element is compared: one still as read is the same (pydicom's raw elements cannot
    change); one whose value was read since (or set, or is a sequence) must encode to the
    same bytes as it arrived in. Elements added or removed, or another transfer syntax, count
    as a change.
    """
    received: _AsReceived | None = dataset.__dict__.get("_as_received")
    if received is None:
        return None
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or str(syntax) != received.syntax:
        return None
    current = dataset._dict  # pyright: ignore[reportPrivateUsage]
    before = received.elements
    if current.keys() != before.keys():
        return None
    data = received.data
    character_set = None
    for tag, element in current.items():
        old = before[tag]
        if element is old and isinstance(old, RawDataElement):
            continue
        if _text_as_received(element, old, data):
            continue
        if character_set is None:
            character_set = dataset.get("SpecificCharacterSet", default_encoding)
        if not _encodes_as_received(element, old, data, received.syntax, character_set):
            if not _reads_as_received(element, old, data, dataset):
                return None
    return memoryview(data)[received.start :]


# Text whose values pydicom reads as the bytes' characters less trailing padding.
_TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UT"}
)


def _text_as_received(
    element: RawDataElement | DataElement, old: RawDataElement | DataElement, data: bytes
) -> bool:
    """Whether a text element read since it arrived (the routing values: UIDs, IDs, dates)
    still holds one ASCII value that its bytes hold; the quick check for most elements a
    transfer reads, without encoding anything."""
    if not isinstance(old, RawDataElement) or not isinstance(element, DataElement):
        return False
    value = element.value
    if (
        element.VR != old.VR
        or old.VR not in _TEXT_VRS
        or not isinstance(value, str)
        or not value.isascii()
        or old.length == _UNDEFINED_LENGTH
    ):
        return False
    received = data[old.value_tell : old.value_tell + old.length]
    return received.rstrip(b" \x00") == value.encode().rstrip(b" \x00") and (
        b"\\" not in received or old.VR in ("LT", "ST", "UT")
    )


def _encodes_as_received(
    element: RawDataElement | DataElement,
    old: RawDataElement | DataElement,
    data: bytes,
    syntax: UID,
    character_set: object,
) -> bool:
    start = _element_start(old, syntax)
    if start < 0:
        return False
    file = DicomBytesIO()
    file.is_implicit_VR = syntax.is_implicit_VR
    file.is_little_endian = syntax.is_little_endian
    try:
        write_data_element(file, element, character_set)  # pyright: ignore[reportArgumentType]
    except Exception:  # a value pydicom cannot encode is certainly not the one received
        return False
    encoded = file.getvalue()
    length = old.length if isinstance(old, RawDataElement) else _UNDEFINED_LENGTH
    if length != _UNDEFINED_LENGTH:
        end = _value_tell(old) + length
        return data[start:end] == encoded
    # An undefined length ends with its delimiter: the same bytes up to it are the element.
    return data[start : start + len(encoded)] == encoded


def _reads_as_received(
    element: RawDataElement | DataElement,
    old: RawDataElement | DataElement,
    data: bytes,
    dataset: Dataset,
) -> bool:
    """Whether the element holds the value its bytes as received decode to: read, not
    changed, though pydicom would encode it otherwise (a value of odd length, say)."""
    if not isinstance(old, RawDataElement) or not isinstance(element, DataElement):
        return False
    if old.value is None and old.length:  # deferred: its value is still in the bytes
        if old.length == _UNDEFINED_LENGTH:
            return False
        old = old._replace(value=data[old.value_tell : old.value_tell + old.length])
    if old.tag == 0x00080005:
        character_set = default_encoding
    else:
        character_set = dataset.original_character_set or dataset._character_set  # pyright: ignore[reportPrivateUsage]
    try:
        as_received = convert_raw_data_element(old, encoding=character_set, ds=dataset)
    except Exception:  # what cannot be read as it came cannot be told from a change
        return False
    return as_received.VR == element.VR and as_received.value == element.value


def file_head(dataset: Dataset) -> bytes:
    """Preamble, DICM prefix and file meta information of the instance as a file, as pydicom
    would write them (its SOP UIDs in the file meta)."""
    preamble = getattr(dataset, "preamble", None) or _PREAMBLE
    file_meta = getattr(dataset, "file_meta", None) or FileMetaDataset()
    quick = _quick_file_meta(
        file_meta, str(dataset.get("SOPClassUID", "")), str(dataset.get("SOPInstanceUID", ""))
    )
    if quick is not None:
        return b"".join((preamble, b"DICM", quick))
    return pydicom_file_head(dataset)


# Explicit VR: the value representations whose length takes four bytes (PS3.5 7.1.2).
_LONG_LENGTH_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
# What pydicom's validate_file_meta would add if missing; with all of them there it adds nothing.
_REQUIRED_META = (0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012)


def _quick_file_meta(file_meta: Dataset, sop_class: str, sop_instance: str) -> bytes | None:
    """The file meta group as pydicom writes it (explicit VR little endian, group length
    first, the data set's SOP UIDs), encoded here for the usual group of text and byte values
    in a fraction of pydicom's time; None for any other (pydicom encodes that)."""
    values: dict[int, tuple[str, bytes]] = {}
    for tag in file_meta.keys():
        if tag == 0x00020000:
            continue
        element = file_meta.get_item(tag, keep_deferred=True)
        if element is None or element.VR is None:
            return None
        value = element.value
        if isinstance(element, RawDataElement):
            raw = value if isinstance(value, bytes) else None
        elif isinstance(value, bytes):
            raw = value + b"\x00" * (len(value) % 2)
        elif isinstance(value, str) and value.isascii() and element.VR != "SQ":
            padding = b"\x00" if element.VR == "UI" else b" "
            raw = value.encode() + padding * (len(value) % 2)
        else:
            raw = None
        if raw is None or len(raw) % 2:
            return None
        values[int(tag)] = (str(element.VR), raw)
    for tag, uid in ((0x00020002, sop_class), (0x00020003, sop_instance)):
        if uid:
            values[tag] = ("UI", uid.encode() + b"\x00" * (len(uid) % 2))
    if not all(tag in values for tag in _REQUIRED_META):
        return None
    pieces = []
    for tag in sorted(values):
        vr, raw = values[tag]
        header = struct.pack("<HH2s", tag >> 16, tag & 0xFFFF, vr.encode())
        if vr in _LONG_LENGTH_VRS:
            header += struct.pack("<HI", 0, len(raw))
        elif len(raw) <= 0xFFFF:
            header += struct.pack("<H", len(raw))
        else:
            return None
        pieces += (header, raw)
    group = b"".join(pieces)
    return struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(group)) + group


def pydicom_file_head(dataset: Dataset) -> bytes:
    """``file_head`` by pydicom, for any file meta information."""
    # A copy holding the same elements: what is set below replaces elements, changing none.
    file_meta = FileMetaDataset()
    for element in getattr(dataset, "file_meta", None) or ():
        file_meta.add(element)
    if "TransferSyntaxUID" not in file_meta:
        file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for meta, own in (
        ("MediaStorageSOPClassUID", "SOPClassUID"),
        ("MediaStorageSOPInstanceUID", "SOPInstanceUID"),
    ):
        value = dataset.get(own)
        if meta not in file_meta or (value and value != file_meta.get(meta)):
            setattr(file_meta, meta, value)
    validate_file_meta(file_meta, enforce_standard=True)
    file = DicomBytesIO()
    preamble = getattr(dataset, "preamble", None) or _PREAMBLE
    file.write(preamble + b"DICM")
    write_file_meta_info(file, file_meta, enforce_standard=True)
    return file.getvalue()


def encode_instance(dataset: Dataset) -> bytes:
    """The instance as the bytes of a DICOM file (preamble, file meta, data set); an unchanged
    instance with the data set's bytes as it arrived."""
    return b"".join(encoded_pieces(dataset))


def encoded_pieces(dataset: Dataset) -> tuple[bytes | memoryview, ...]:
    """``encode_instance`` in pieces, to be joined with others without another copy."""
    ensure_file_meta(dataset)
    data_set = unchanged_data_set(dataset)
    if data_set is not None:
        return file_head(dataset), data_set
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return (buffer.getvalue(),)


def write_to(dataset: Dataset, file: IO[bytes]) -> None:
    """Writes the instance as a DICOM file into ``file``: an unchanged instance as it arrived,
    else encoded by pydicom (its file meta as it is)."""
    data_set = unchanged_data_set(dataset)
    if data_set is not None:
        file.write(file_head(dataset))
        file.write(data_set)
        return
    dataset.save_as(file, enforce_file_format=True)


def write_instance(dataset: Dataset, path: Path) -> None:
    """Writes a DICOM file completely or not at all (a temporary name, then a rename), so a
    task run again after a crash replaces a file instead of finding half of one.

    Raises:
        DicomError: If the file cannot be written (the message names it; out of disk space
            is said as such).
    """
    source = unchanged_file(dataset)
    if source is None:
        ensure_file_meta(dataset)
    partial = path.with_name(f".{path.name}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if source is not None:
            shutil.copyfile(source, partial)
        else:
            with open(partial, "wb") as file:
                write_to(dataset, file)
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
