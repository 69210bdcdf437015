"""Previews of DICOM images: the middle image of a series as a small PNG, shown as its file says.

Every value in an instance from a PACS is untrusted. A preview is either a PNG or a
``PreviewUnavailable`` whose reason a user can read: never a traceback, and never gigabytes of
memory because a header claims a huge image. Sizes are checked before anything is decoded, and
windowing works on a thinned copy of the frame, not on the whole of it.

The display pipeline follows PS3.4 N.2 for grayscale: stored values, Modality LUT (rescale),
VOI LUT (window), then MONOCHROME1 inverted. Color images are shown in RGB.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from io import BytesIO
from typing import BinaryIO, cast

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from PIL import Image
from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import get_frame
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.processing import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    apply_windowing,
    convert_color_space,
)
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import (
    UID,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
)

from adit.core.dicom.errors import DicomError, RetriableDicomError
from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.spool import is_spooled, release
from adit.core.dicom.syntaxes import syntax_name, syntax_of

logger = logging.getLogger(__name__)

# One decoded frame may take at most this much memory; a 100 megapixel 16-bit grayscale frame
# (200 MB) still fits, a header that claims 65535 × 65535 RGB pixels does not.
MAX_DECODED_FRAME_BYTES = 256 * 2**20

_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
_PHOTOMETRIC_BY_SAMPLES = {
    1: ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR"),
    3: ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"),
}
_VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
_UNDEFINED_LENGTH = 0xFFFFFFFF

# Objects without an image, by Modality and SOP Class UID (PS3.4 B.5). Key Object Selection
# (…88.59) lies among the SR classes (…88.*), so it is asked first.
_NON_IMAGE_KINDS = (
    ("KO", ("1.2.840.10008.5.1.4.1.1.88.59",), "A key object selection (KO)"),
    ("SR", ("1.2.840.10008.5.1.4.1.1.88.",), "A structured report (SR)"),
    ("PR", ("1.2.840.10008.5.1.4.1.1.11.",), "A presentation state (PR)"),
)

CACHE_KEY_PREFIX = "dicom_explorer:preview"


class PreviewUnavailable(Exception):
    """Why an image or a series has no preview, in words for the page that would show it.

    Attributes:
        reason: The message, also ``str(error)``.
        lasting: False if the cause may pass by itself (a PACS that did not answer in time):
            such a reason is not cached.
    """

    def __init__(self, reason: str, *, lasting: bool = True):
        super().__init__(reason)
        self.reason = reason
        self.lasting = lasting


# -- what an instance is ----------------------------------------------------------------------


def non_image_reason(modality: str = "", sop_class_uid: str = "") -> str | None:
    """Why an object of this Modality or SOP class has no image to preview (SR, PR, KO), or
    None if it may have one. A series page can say so without fetching anything."""
    modality = modality.strip().upper()
    sop_class_uid = sop_class_uid.strip()
    for kind_modality, uid_prefixes, description in _NON_IMAGE_KINDS:
        by_class = any(sop_class_uid.startswith(prefix) for prefix in uid_prefixes)
        if by_class or modality == kind_modality:
            return f"{description} has no image to preview."
    return None


def _no_pixel_data_reason(dataset: Dataset) -> str:
    modality = str(_value(dataset, "Modality") or "")
    sop_class_uid = str(_value(dataset, "SOPClassUID") or "")
    if reason := non_image_reason(modality, sop_class_uid):
        return reason
    sop_class_name = UID(sop_class_uid).name if sop_class_uid else ""
    what = sop_class_name or (f"modality {modality}" if modality else "")
    if what:
        return f"This instance ({what}) holds no image to preview."
    return "This instance holds no image to preview."


# -- reading untrusted values -----------------------------------------------------------------


def _value(dataset: Dataset, keyword: str) -> object:
    """The element's value, or None if absent or unreadable (pydicom raises on access for
    some malformed values, e.g. a US value of an odd length)."""
    try:
        return dataset.get(keyword)
    except Exception:  # pydicom raises various kinds while converting a raw value
        return None


def _first(value: object) -> object:
    if isinstance(value, str | bytes):
        return value
    if isinstance(value, Iterable):
        return next(iter(value), None)
    return value


def _as_int(value: object) -> int | None:
    value = _first(value)
    if value is None or value == "":
        return None
    try:
        number = float(value)  # type: ignore[arg-type]  # anything else raises, as wanted
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or number != int(number):
        return None
    return int(number)


def _as_float(value: object) -> float | None:
    value = _first(value)
    if value is None or value == "":
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _frame_value(dataset: Dataset, index: int, macro: str, keyword: str) -> object:
    """A value of the frame: at the top level, else in the frame's functional groups of an
    enhanced multi-frame image (per frame first, then shared; PS3.3 C.7.6.16)."""
    if (value := _value(dataset, keyword)) is not None:
        return value
    for groups_keyword, group_index in (
        ("PerFrameFunctionalGroupsSequence", index),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        try:
            group = dataset[groups_keyword].value[group_index]
            value = _value(group[macro].value[0], keyword)
        except (KeyError, IndexError, TypeError, AttributeError):
            continue
        if value is not None:
            return value
    return None


# -- the pixel module -------------------------------------------------------------------------


@dataclass(frozen=True)
class _PixelModule:
    """The Image Pixel module, with every value checked."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str
    planar_configuration: int
    frames: int

    @property
    def decoded_frame_bytes(self) -> int:
        bytes_per_sample = max(1, self.bits_allocated // 8)  # 1-bit pixels decode to bytes
        return self.rows * self.columns * self.samples_per_pixel * bytes_per_sample


def _read_pixel_module(dataset: Dataset) -> _PixelModule:
    rows = _as_int(_value(dataset, "Rows"))
    columns = _as_int(_value(dataset, "Columns"))
    if rows is None or columns is None or rows < 1 or columns < 1:
        raise PreviewUnavailable(
            "No preview: the image has no valid size (Rows and Columns must be at least 1)."
        )
    samples = _as_int(_value(dataset, "SamplesPerPixel"))
    samples = 1 if samples is None else samples
    if samples not in _PHOTOMETRIC_BY_SAMPLES:
        raise PreviewUnavailable(
            f"No preview: images with {samples} samples per pixel are not shown here."
        )
    bits_allocated = _as_int(_value(dataset, "BitsAllocated"))
    if bits_allocated not in (1, 8, 16, 32):
        raise PreviewUnavailable(
            f"No preview: Bits Allocated is {bits_allocated}; only 1, 8, 16 and 32 are shown."
        )
    bits_stored = _as_int(_value(dataset, "BitsStored"))
    if bits_stored is None or not 1 <= bits_stored <= bits_allocated:
        bits_stored = bits_allocated  # a sensible guess: every allocated bit holds the value
    pixel_representation = 1 if _as_int(_value(dataset, "PixelRepresentation")) == 1 else 0
    photometric = str(_value(dataset, "PhotometricInterpretation") or "").strip().upper()
    if not photometric:
        # Missing, which the standard forbids: the usual meaning of the samples.
        photometric = "MONOCHROME2" if samples == 1 else "RGB"
    if photometric not in _PHOTOMETRIC_BY_SAMPLES[samples]:
        raise PreviewUnavailable(
            f"No preview: the photometric interpretation {photometric} with {samples} "
            "sample(s) per pixel is not shown here."
        )
    frames_value = _value(dataset, "NumberOfFrames")
    frames = _as_int(frames_value)
    if frames_value in (None, "") or frames == 0:
        frames = 1  # absent, or the non-conformant 0 that some writers use for one frame
    if frames is None or frames < 1:
        raise PreviewUnavailable(f"No preview: the image has {frames_value!r} frames.")
    return _PixelModule(
        rows=rows,
        columns=columns,
        samples_per_pixel=samples,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        pixel_representation=pixel_representation,
        photometric_interpretation=photometric,
        planar_configuration=1 if _as_int(_value(dataset, "PlanarConfiguration")) == 1 else 0,
        frames=frames,
    )


@dataclass(frozen=True)
class _PixelValue:
    """Where the pixel data's value is: bytes in memory, or the part of a spooled file that
    holds it, from which a decoder reads the one frame it needs, not gigabytes of frames."""

    source: bytes | BinaryIO
    length: int
    undefined_length: bool
    vr: str  # OB or OW: pydicom reorders 8-bit OW values of big endian files by it


class _ValueInFile(io.RawIOBase):
    """The bytes of one value in a file, read as a file of their own: a decoder that a header
    sends beyond the value reads nothing more, as it would at the end of bytes in memory."""

    def __init__(self, file: BinaryIO, start: int, length: int):
        super().__init__()
        self._file, self._start, self._length = file, start, length
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        self._position = max(0, base + offset)
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        """At most the rest of the value; a negative size, which pydicom asks for when a
        compressed image's offset table does not increase, is refused rather than read as
        "all of it"."""
        if size is None or size < 0:
            raise PreviewUnavailable(
                "No preview: the offsets of the compressed frames are inconsistent."
            )
        return super().read(min(size, max(0, self._length - self._position)))

    def readinto(self, buffer) -> int:
        wanted = min(len(buffer), self._length - self._position)
        if wanted <= 0:
            return 0
        self._file.seek(self._start + self._position)
        data = self._file.read(wanted)
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)


def _pixel_value(dataset: Dataset) -> _PixelValue:
    element = dataset.get_item("PixelData", keep_deferred=True)
    if (
        isinstance(element, RawDataElement)
        and element.value is None
        and element.length
        and is_spooled(dataset)
    ):
        file: BinaryIO = dataset.buffer  # pyright: ignore[reportAssignmentType]
        undefined_length = element.length == _UNDEFINED_LENGTH
        # An undefined length ends with its delimiter, before the file's end.
        length = file.seek(0, io.SEEK_END) - element.value_tell
        if not undefined_length:
            length = min(length, element.length)
        source = cast(BinaryIO, _ValueInFile(file, element.value_tell, length))
        return _PixelValue(source, length, undefined_length, str(element.VR or ""))
    element = dataset["PixelData"]
    value = element.value or b""
    return _PixelValue(value, len(value), element.is_undefined_length, str(element.VR or ""))


def _check_native_length(value: _PixelValue, module: _PixelModule, pixels: Dataset) -> None:
    """Refuses uncompressed pixel data shorter than its frames (cut off in transit, say)."""
    expected = get_expected_length(pixels, unit="bytes")
    if value.length < expected:
        raise PreviewUnavailable(
            f"No preview: the uncompressed pixel data cannot be decoded: it holds "
            f"{value.length} bytes, less than expected for {module.frames} frame(s) of "
            f"{module.columns} × {module.rows} pixels ({expected} bytes)."
        )


def _extended_offsets(dataset: Dataset, syntax: UID) -> tuple[bytes, bytes] | None:
    if not syntax.is_encapsulated:
        return None
    offsets = _value(dataset, "ExtendedOffsetTable")
    lengths = _value(dataset, "ExtendedOffsetTableLengths")
    if isinstance(offsets, bytes) and isinstance(lengths, bytes):
        return offsets, lengths
    return None


def _pixel_dataset(module: _PixelModule, syntax: UID) -> Dataset:
    """A dataset of the checked pixel module, for pydicom's LUT functions: the caller's
    dataset is never changed."""
    pixels = Dataset()
    pixels.file_meta = FileMetaDataset()
    pixels.file_meta.TransferSyntaxUID = syntax
    pixels.Rows = module.rows
    pixels.Columns = module.columns
    pixels.SamplesPerPixel = module.samples_per_pixel
    pixels.BitsAllocated = module.bits_allocated
    pixels.BitsStored = module.bits_stored
    pixels.HighBit = module.bits_stored - 1
    pixels.PixelRepresentation = module.pixel_representation
    pixels.PhotometricInterpretation = module.photometric_interpretation
    if module.samples_per_pixel > 1:
        pixels.PlanarConfiguration = module.planar_configuration
    pixels.NumberOfFrames = module.frames
    return pixels


def _decoder_options(module: _PixelModule, extended_offsets: tuple[bytes, bytes] | None) -> dict:
    options = {
        "rows": module.rows,
        "columns": module.columns,
        "samples_per_pixel": module.samples_per_pixel,
        "bits_allocated": module.bits_allocated,
        "bits_stored": module.bits_stored,
        "pixel_representation": module.pixel_representation,
        "photometric_interpretation": module.photometric_interpretation,
        "number_of_frames": module.frames,
        "pixel_keyword": "PixelData",
    }
    if module.samples_per_pixel > 1:
        options["planar_configuration"] = module.planar_configuration
    if extended_offsets is not None:
        options["extended_offsets"] = extended_offsets
    return options


# -- decoding ---------------------------------------------------------------------------------


def _describe_syntax(syntax: UID) -> str:
    name = syntax_name(syntax)
    return f"{name} ({syntax})" if name != str(syntax) else str(syntax)


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else f"{text[:199]}…"


def _check_decodable(syntax: UID) -> None:
    def unavailable(why: str) -> PreviewUnavailable:
        return PreviewUnavailable(
            f"No preview: the transfer syntax {_describe_syntax(syntax)} cannot be decoded "
            f"here: {why}."
        )

    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise unavailable("no installed decoder handles it") from None
    if not decoder.is_available:
        raise unavailable(f"its decoders are missing ({'; '.join(decoder.missing_dependencies)})")


def _check_frame_size(module: _PixelModule) -> None:
    size = module.decoded_frame_bytes
    if size > MAX_DECODED_FRAME_BYTES:
        raise PreviewUnavailable(
            f"No preview: one frame of {module.columns} × {module.rows} pixels would take "
            f"{size / 2**20:,.0f} MB to decode, more than the "
            f"{MAX_DECODED_FRAME_BYTES // 2**20} MB a preview may use."
        )


def _encoded_frame_size(syntax: UID, frame: bytes) -> tuple[int, int] | None:
    """(columns, rows) as the frame's JPEG, JPEG-LS or JPEG 2000 header says, or None."""
    if syntax in JPEG2000TransferSyntaxes:  # HTJ2K included
        return _j2k_size(frame)
    if syntax in JPEGTransferSyntaxes or syntax in JPEGLSTransferSyntaxes:
        return _jpeg_size(frame)
    return None  # RLE and others: decoders size their output by Rows and Columns


def _jpeg_size(frame: bytes) -> tuple[int, int] | None:
    """From the SOF segment (ISO/IEC 10918-1 B.2.2; JPEG-LS uses the same layout, SOF55)."""
    start_of_frame = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD}
    start_of_frame |= {0xCE, 0xCF, 0xF7}
    if frame[:2] != b"\xff\xd8":
        return None
    offset = 2
    while offset + 9 <= len(frame):
        if frame[offset] != 0xFF:
            return None
        marker = frame[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in start_of_frame:
            rows = int.from_bytes(frame[offset + 5 : offset + 7], "big")
            columns = int.from_bytes(frame[offset + 7 : offset + 9], "big")
            return (columns, rows) if rows else None  # 0: the rows come later (DNL)
        if marker == 0xDA:  # start of scan without a frame header
            return None
        offset += 2 + int.from_bytes(frame[offset + 2 : offset + 4], "big")
    return None


def _j2k_size(frame: bytes) -> tuple[int, int] | None:
    """From the SIZ segment that follows SOC (ISO/IEC 15444-1 A.5.1), inside a JP2 file's
    codestream box if the frame is one."""
    offset = 0
    if frame[4:8] == b"jP  ":
        offset = frame.find(b"jp2c")
        if offset < 0:
            return None
        offset += 4
    if frame[offset : offset + 4] != b"\xff\x4f\xff\x51" or len(frame) < offset + 24:
        return None
    width, height, x_origin, y_origin = (
        int.from_bytes(frame[start : start + 4], "big")
        for start in range(offset + 8, offset + 24, 4)
    )
    columns, rows = width - x_origin, height - y_origin
    return (columns, rows) if columns > 0 and rows > 0 else None  # nonsense: the decoder says


def _check_encoded_frame(
    value: _PixelValue,
    syntax: UID,
    module: _PixelModule,
    index: int,
    extended_offsets: tuple[bytes, bytes] | None,
) -> None:
    """Refuses a compressed frame whose own header claims more pixels than the file says: a
    decoder allocates what the header claims."""
    try:
        frame = get_frame(
            value.source,
            index,
            number_of_frames=module.frames,
            extended_offsets=extended_offsets,
        )
    except Exception as err:  # malformed items, offsets or too few fragments
        raise PreviewUnavailable(
            f"No preview: frame {index + 1} of {module.frames} cannot be found in the "
            f"compressed pixel data ({_short(err)})."
        ) from err
    size = _encoded_frame_size(syntax, frame)
    if size is not None and size[0] * size[1] > module.columns * module.rows:
        raise PreviewUnavailable(
            f"No preview: the compressed frame holds {size[0]} × {size[1]} pixels, but the "
            f"file says {module.columns} × {module.rows}."
        )


def _decode_frame(
    value: _PixelValue, syntax: UID, index: int, options: dict
) -> tuple[np.ndarray, str]:
    """The frame's stored values and the color space they are in (``raw``: colors are
    converted after thinning, which costs less)."""
    try:
        array, meta = get_decoder(syntax).as_array(value.source, index=index, raw=True, **options)
    except Exception as err:  # decoders and their plugins raise many kinds for damaged data
        raise PreviewUnavailable(
            f"No preview: the {syntax_name(syntax)} pixel data cannot be decoded ({_short(err)})."
        ) from err
    return array, str(meta.get("photometric_interpretation", ""))


def _thin(array: np.ndarray, max_size: int) -> np.ndarray:
    """Every n-th row and column (a view, no copy), so that at most twice the preview size
    is left for windowing; the final resize smooths the rest."""
    step = max(1, math.ceil(max(array.shape[0], array.shape[1]) / (2 * max_size)))
    return array[::step, ::step]


# -- display values ---------------------------------------------------------------------------


def _to_8_bit(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if not high != low:  # also NaN
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values.astype(np.float64) - low) * (255.0 / (high - low))
    return np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)


def _grayscale(
    stored: np.ndarray, dataset: Dataset, pixels: Dataset, module: _PixelModule, index: int
) -> np.ndarray:
    """Modality LUT, VOI LUT and polarity (PS3.4 N.2.1) to 8-bit gray."""
    _add_modality_attributes(dataset, pixels, index)
    try:
        values = apply_modality_lut(stored, pixels)
    except Exception as err:  # a broken Modality LUT Sequence: rescale alone, if any
        logger.info("Modality LUT ignored for a preview: %s", err)
        if "ModalityLUTSequence" in pixels:
            del pixels.ModalityLUTSequence
        values = apply_modality_lut(stored, pixels)
    display = _apply_voi(values, dataset, pixels, index)
    if module.photometric_interpretation == "MONOCHROME1":
        display = 255 - display  # its lowest values are white
    return display


def _add_modality_attributes(dataset: Dataset, pixels: Dataset, index: int) -> None:
    macro = "PixelValueTransformationSequence"
    slope = _frame_value(dataset, index, macro, "RescaleSlope")
    intercept = _frame_value(dataset, index, macro, "RescaleIntercept")
    if slope is not None or intercept is not None:
        # Unreadable values are taken as the usual ones; so is a slope of 0, which would
        # erase the image.
        pixels.RescaleSlope = _as_float(slope) or 1.0
        pixels.RescaleIntercept = _as_float(intercept) or 0.0
    elif (lut := _value(dataset, "ModalityLUTSequence")) is not None:
        pixels.ModalityLUTSequence = lut


def _apply_voi(values: np.ndarray, dataset: Dataset, pixels: Dataset, index: int) -> np.ndarray:
    """The file's first window, else its first VOI LUT, else the range of the values."""
    if window := _first_window(dataset, index):
        pixels.WindowCenter, pixels.WindowWidth, pixels.VOILUTFunction = window
        try:
            windowed = apply_windowing(values, pixels)
            # The output range, to map onto 0-255: what lies below and above the window.
            with np.errstate(over="ignore", invalid="ignore"):
                low, high = apply_windowing(np.array([-np.inf, np.inf]), pixels)
            return _to_8_bit(windowed, float(low), float(high))
        except Exception as err:  # values that pydicom refuses despite the checks
            logger.info("Window ignored for a preview: %s", err)
    if (lut := _value(dataset, "VOILUTSequence")) is not None:
        pixels.VOILUTSequence = lut
        try:
            return _apply_voi_lut(values, pixels)
        except Exception as err:  # a malformed LUT descriptor or data
            logger.info("VOI LUT ignored for a preview: %s", err)
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    if finite.size == 0:
        return np.zeros(values.shape, dtype=np.uint8)
    return _to_8_bit(values, float(finite.min()), float(finite.max()))


def _first_window(dataset: Dataset, index: int) -> tuple[float, float, str] | None:
    """The first (center, width, function) if pydicom can apply it, else None."""
    center = _as_float(_frame_value(dataset, index, "FrameVOILUTSequence", "WindowCenter"))
    width = _as_float(_frame_value(dataset, index, "FrameVOILUTSequence", "WindowWidth"))
    function = str(_frame_value(dataset, index, "FrameVOILUTSequence", "VOILUTFunction") or "")
    function = function.strip().upper() or "LINEAR"
    if function not in _VOI_FUNCTIONS:
        function = "LINEAR"  # the default the standard names for an absent function
    if center is None or width is None:
        return None
    if width < 1 if function == "LINEAR" else width <= 0:  # PS3.3 C.11.2.1.2.1
        return None
    return center, width, function


def _apply_voi_lut(values: np.ndarray, pixels: Dataset) -> np.ndarray:
    if values.dtype.kind == "f":
        values = np.rint(values).astype(np.int64)  # a LUT is indexed by whole numbers
    entries, first_mapped = (int(number) for number in pixels.VOILUTSequence[0].LUTDescriptor[:2])
    entries = entries or 2**16  # PS3.3 C.11.2.1.1: 0 stands for 65536
    # The LUT's own lowest and highest output: it need not span its nominal bit depth.
    table = apply_voi(np.arange(first_mapped, first_mapped + entries, dtype=np.int64), pixels)
    return _to_8_bit(apply_voi(values, pixels), float(table.min()), float(table.max()))


def _color(
    stored: np.ndarray, color_space: str, dataset: Dataset, module: _PixelModule
) -> np.ndarray:
    """8-bit RGB from RGB, YBR or palette color values."""
    if module.photometric_interpretation == "PALETTE COLOR":
        try:
            rgb = apply_color_lut(stored, dataset)
        except Exception as err:  # missing or malformed palette
            raise PreviewUnavailable(
                f"No preview: the palette color lookup table cannot be applied ({_short(err)})."
            ) from err
        bits = 8 * rgb.dtype.itemsize
    else:
        rgb = stored
        if color_space.startswith("YBR_FULL"):
            rgb = convert_color_space(stored, "YBR_FULL", "RGB")
        bits = module.bits_stored
    if rgb.dtype == np.uint8:
        return rgb
    return _to_8_bit(rgb, 0, 2**bits - 1)


# -- rendering --------------------------------------------------------------------------------


def preview_size(columns: int, rows: int, max_size: int) -> tuple[int, int]:
    """(width, height) of a preview: the longer side at most ``max_size``, aspect kept, never
    larger than the image."""
    scale = min(1.0, max_size / max(columns, rows))
    return max(1, round(columns * scale)), max(1, round(rows * scale))


def render_png(dataset: Dataset, max_size: int = 512) -> bytes:
    """A PNG of the image as its file says to show it.

    The middle frame of a multi-frame image; for grayscale the Modality LUT, then the file's
    first window (or VOI LUT, or else the range of the values), MONOCHROME1 inverted; color in
    RGB. Scaled down, aspect kept, so the longer side is at most ``max_size`` pixels; 8-bit
    gray or RGB.

    Raises:
        PreviewUnavailable: If the instance has no image (SR, PR, KO …), its transfer syntax
            cannot be decoded here, its pixel data is damaged, or its header is implausible
            (a frame larger than ``MAX_DECODED_FRAME_BYTES``, say).
    """
    if max_size < 1:
        raise ValueError(f"max_size must be at least 1, not {max_size}")
    try:
        return _render_png(dataset, max_size)
    except PreviewUnavailable:
        raise
    except Exception as err:
        # The steps above check what they know to go wrong; this is for what pydicom or numpy
        # still find in a hostile file: a page shows a reason instead of failing.
        logger.exception("A preview failed unexpectedly")
        raise PreviewUnavailable(
            f"No preview: the image could not be rendered ({_short(err)})."
        ) from err


def _render_png(dataset: Dataset, max_size: int) -> bytes:
    if "PixelData" not in dataset:
        raise PreviewUnavailable(_no_pixel_data_reason(dataset))
    if reason := non_image_reason(sop_class_uid=str(_value(dataset, "SOPClassUID") or "")):
        raise PreviewUnavailable(reason)  # pixel data where none belongs is not an image
    syntax = syntax_of(dataset)
    value = _pixel_value(dataset)
    if not getattr(dataset, "file_meta", None) and value.undefined_length:
        raise PreviewUnavailable(
            "No preview: the pixel data is compressed, but the file does not say how."
        )
    _check_decodable(syntax)
    module = _read_pixel_module(dataset)
    _check_frame_size(module)
    index = module.frames // 2
    extended_offsets = _extended_offsets(dataset, syntax)
    pixels = _pixel_dataset(module, syntax)
    if syntax.is_encapsulated:
        _check_encoded_frame(value, syntax, module, index, extended_offsets)
    else:
        _check_native_length(value, module, pixels)
    options = _decoder_options(module, extended_offsets)
    if value.vr in ("OB", "OW"):
        options["pixel_vr"] = value.vr
    stored, color_space = _decode_frame(value, syntax, index, options)
    stored = _thin(stored, max_size)
    if module.photometric_interpretation in _MONOCHROME:
        display = _grayscale(stored, dataset, pixels, module, index)
    else:
        display = _color(stored, color_space, dataset, module)
    image = Image.fromarray(np.ascontiguousarray(display))
    size = preview_size(module.columns, module.rows, max_size)
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# -- series -----------------------------------------------------------------------------------


def _middle_instance(instances: list[Dataset]) -> Dataset:
    """The middle one by Instance Number; in the order received where numbers are missing."""

    def order(position_and_instance: tuple[int, Dataset]) -> tuple[bool, int, int]:
        position, instance = position_and_instance
        number = _as_int(_value(instance, "InstanceNumber"))
        return number is None, number or 0, position

    ordered = sorted(enumerate(instances), key=order)
    return ordered[len(ordered) // 2][1]


def series_preview(
    operator: DicomOperator,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    max_size: int = 512,
) -> bytes:
    """A PNG of the middle image of the series, fetched through ``operator``.

    Raises:
        PreviewUnavailable: If the series holds no instance or no image, the server could not
            list or fetch it (``lasting`` False if that may pass), or ``render_png`` refuses.
    """
    filters = {"PatientID": patient_id} if patient_id else {}
    try:
        instances = list(operator.find_images(study_uid, series_uid, **filters))
        if not instances:
            raise PreviewUnavailable("No preview: the series holds no instances.")
        middle = _middle_instance(instances)
        if reason := non_image_reason(sop_class_uid=str(_value(middle, "SOPClassUID") or "")):
            raise PreviewUnavailable(reason)
        sop_uid = str(_value(middle, "SOPInstanceUID") or "")
        if not sop_uid:
            raise PreviewUnavailable("No preview: the server did not name the middle image.")
        fetched: list[Dataset] = []
        operator.fetch_image(
            patient_id,
            study_uid,
            series_uid,
            sop_uid,
            fetched.append,
            # A multi-frame image of gigabytes waits on disk; one frame of it is read.
            spool_above=settings.TRANSFER_PIPELINE_BYTES // 16,
        )
    except DicomError as err:
        raise PreviewUnavailable(
            f"No preview: the image could not be fetched. {err}",
            lasting=not isinstance(err, RetriableDicomError),
        ) from err
    except ValidationError as err:  # a value of the PACS's answers no query can carry
        raise PreviewUnavailable(
            f"No preview: the server's answers name the image with values ADIT cannot ask "
            f"for ({' '.join(err.messages)})."
        ) from err
    if not fetched:
        raise PreviewUnavailable("No preview: the server sent no image.", lasting=False)
    try:
        return render_png(fetched[0], max_size)
    finally:
        for dataset in fetched:
            release(dataset)


def _cache_key(server_pk: object, study_uid: str, series_uid: str, max_size: int) -> str:
    # UIDs come from a URL: hashed, the key is safe for any cache backend whatever they hold.
    uids = hashlib.sha256(f"{study_uid}\\{series_uid}".encode()).hexdigest()
    return f"{CACHE_KEY_PREFIX}:{server_pk}:{max_size}:{uids}"


def cached_series_preview(
    operator: DicomOperator,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    max_size: int = 512,
) -> bytes:
    """``series_preview``, kept in Django's cache for DICOM_EXPLORER_PREVIEW_CACHE_SECONDS:
    the PNG and a lasting reason alike, so that a series without a preview is not fetched
    again on every view of its page.

    Raises:
        PreviewUnavailable: As ``series_preview``, or as it raised the last time.
    """
    key = _cache_key(operator.server.pk, study_uid, series_uid, max_size)
    cached = cache.get(key)
    if cached is not None:
        kind, value = cached
        if kind == "png":
            return value
        raise PreviewUnavailable(value)
    timeout = settings.DICOM_EXPLORER_PREVIEW_CACHE_SECONDS
    try:
        png = series_preview(operator, patient_id, study_uid, series_uid, max_size)
    except PreviewUnavailable as unavailable:
        if unavailable.lasting:
            cache.set(key, ("unavailable", unavailable.reason), timeout)
        raise
    cache.set(key, ("png", png), timeout)
    return png
