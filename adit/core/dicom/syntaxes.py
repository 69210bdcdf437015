"""Transfer syntaxes of instances on their way through ADIT.

Instances keep the transfer syntax they come in: pseudonymization changes the header only, and
encapsulated (compressed) pixel data passes untouched. Only when a destination accepts an
instance in no syntax but an uncompressed one is it converted, and only losslessly: compressed
pixel data is decoded (never re-encoded with loss), big endian values are swapped.
"""

from __future__ import annotations

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

UNCOMPRESSED_LITTLE_ENDIAN = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
# Value representations of words whose bytes a change of endianness must swap, by word size.
_WORD_SIZES = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


class ConversionError(Exception):
    """An instance cannot be converted without loss (no decoder for its syntax, say)."""


def syntax_of(dataset: Dataset) -> UID:
    """The instance's transfer syntax (Explicit VR Little Endian if it names none)."""
    file_meta = getattr(dataset, "file_meta", None)
    syntax = getattr(file_meta, "TransferSyntaxUID", None)
    return UID(str(syntax)) if syntax else ExplicitVRLittleEndian


def syntax_name(syntax: str) -> str:
    uid = UID(syntax)
    return uid.name if uid.is_transfer_syntax else syntax


def convert_to_explicit_little_endian(dataset: Dataset) -> None:
    """Re-encodes ``dataset`` in place as Explicit VR Little Endian, showing the same image.

    Raises:
        ConversionError: If its compressed pixel data cannot be decoded here.
    """
    syntax = syntax_of(dataset)
    if syntax in UNCOMPRESSED_LITTLE_ENDIAN or syntax == DeflatedExplicitVRLittleEndian:
        pass  # pydicom holds the values decoded; only the encoding on the way out changes
    elif syntax.is_encapsulated:
        try:
            # The SOP Instance UID stays: the image is the same, and the transfer must be
            # checkable at the destination by the UIDs the source holds.
            dataset.decompress(generate_instance_uid=False)
        except Exception as err:  # pydicom raises various kinds for a missing or failed decoder
            raise ConversionError(
                f"its {syntax.name} pixel data cannot be decoded here ({err})"
            ) from err
    elif not syntax.is_little_endian:
        _swap_words(dataset)
        dataset.set_original_encoding(False, True, dataset.original_character_set)
    else:
        raise ConversionError(f"ADIT cannot convert {syntax.name} to an uncompressed syntax")
    if getattr(dataset, "file_meta", None) is None:
        dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def _swap_words(dataset: Dataset) -> None:
    """Swaps the bytes of every word-valued binary element (nested ones too) from big endian
    to little endian; numbers and text pydicom decodes itself."""
    for element in dataset:
        if element.VR == "SQ":
            for item in element.value:
                _swap_words(item)
        elif element.VR in _WORD_SIZES and isinstance(element.value, bytes | bytearray):
            size = _WORD_SIZES[element.VR]
            if element.keyword == "PixelData":
                # Pixels are words of Bits Allocated, as pydicom and viewers read them.
                size = max(size, int(dataset.get("BitsAllocated", 16) or 16) // 8)
            _swap_element(element, size)


def _swap_element(element: DataElement, size: int) -> None:
    value = bytes(element.value)
    if len(value) % size:
        raise ConversionError(f"element {element.tag} has a length that is not whole words")
    swapped = bytearray(len(value))
    for offset in range(size):
        swapped[offset::size] = value[size - 1 - offset :: size]
    element.value = bytes(swapped)
