"""WADO-RS frames (PS3.18 10.4.1.1.3, ``…/instances/{uid}/frames/{list}``): the pixel data of
some frames of one instance, a part per frame in the order asked for, as viewers fetch images
(OHIF, for one, shows instances frame by frame from this resource).

The instance is fetched as a retrieval of it is (any source, the same permissions and query
parameters); only its pixel data leaves ADIT. A frame goes as stored when the client takes
that: uncompressed as ``application/octet-stream``, compressed in the media type of its
transfer syntax (``image/jp2``, ``image/jls``, …). A client that takes only uncompressed
frames gets compressed ones decoded, where pydicom has a decoder for them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from drf_spectacular.utils import extend_schema_view
from pydicom import Dataset
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.encaps import generate_frames
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from rest_framework.exceptions import APIException, ParseError
from rest_framework.request import Request
from rest_framework.response import Response

from adit.core import validators
from adit.core.dicom import spool
from adit.core.dicom.syntaxes import ConversionError, convert_to_explicit_little_endian, syntax_of
from adit.core.models import DicomServer

from . import wado
from .api import NotAcceptable
from .schema import CHANGES, dicomweb_operation

OCTET_STREAM = "application/octet-stream"
# What a compressed frame is sent as (PS3.18 table 8.7.3-2, "Rendered Media Types" aside).
_MEDIA_OF_SYNTAX = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
_MEDIA_ALIASES = {"image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}
_ANY = "*"
_PIXEL_KEYWORDS = (
    ("PixelData", None),
    ("FloatPixelData", 32),
    ("DoubleFloatPixelData", 64),
)
# Frames one request may name: a viewer asks for one or a few.
MAX_FRAMES_LISTED = 10_000


class FrameNotFound(APIException):
    status_code = 404
    default_detail = "The instance has no such frame."


def frame_numbers(text: str) -> tuple[int, ...]:
    """The frame numbers of the path's ``{frames}`` (``1`` or ``1,3,5``).

    Raises:
        ParseError: Anything but a comma-separated list of positive integers.
    """
    items = text.split(",")
    if len(items) > MAX_FRAMES_LISTED or not all(
        item.isascii() and item.isdigit() and int(item) > 0 for item in items
    ):
        raise ParseError(
            f"The frame list {validators.shown(text)} is not a comma-separated list of frame "
            "numbers counted from 1 (as 1 or 1,2,5)."
        )
    return tuple(int(item) for item in items)


def accepted_frame_media(header: str) -> frozenset[tuple[str, str]]:
    """(media type, transfer syntax) pairs the client takes for frames; ``*`` for any (as
    stored). No Accept header, or octet-stream without a syntax: uncompressed, as PS3.18
    8.7.3.5.2 defaults.

    Raises:
        NotAcceptable: The client takes no multipart body of frames.
    """
    if not header.strip():
        return frozenset({(OCTET_STREAM, ExplicitVRLittleEndian)})
    accepted: set[tuple[str, str]] = set()
    for media in wado.media_ranges(header):
        if media.media_type in {"*/*", "multipart/*"}:
            accepted.add((_ANY, _ANY))
            continue
        if media.media_type != "multipart/related":
            continue
        part_type = media.parameters.get("type", OCTET_STREAM).lower()
        part_type = _MEDIA_ALIASES.get(part_type, part_type)
        syntax = media.parameters.get("transfer-syntax", "")
        if part_type in {"*/*", "image/*"}:
            accepted.add((_ANY, syntax or _ANY))
        elif part_type == OCTET_STREAM:
            accepted.add((OCTET_STREAM, syntax or ExplicitVRLittleEndian))
        else:
            accepted.add((part_type, syntax or _ANY))
    if not accepted:
        raise NotAcceptable(
            "Frames are sent as multipart/related (application/octet-stream, or the media "
            f"type of their compression), which the request does not accept (Accept: "
            f"{validators.shown(header)})."
        )
    return frozenset(accepted)


class MultipartFrames(wado.MultipartBody):
    """A part per frame asked for, of the one instance the stream fetches."""

    def __init__(self, stream, modify, what: str, numbers: tuple[int, ...], accepted):
        super().__init__(stream, modify, what, OCTET_STREAM)
        self.numbers = numbers
        self.accepted: frozenset[tuple[str, str]] = accepted
        self._open = contextlib.ExitStack()  # the instance and its file, until the last frame
        self._parts: Iterator[bytes] = iter(())

    def piece(self, dataset: Dataset, *, first: bool) -> bytes:
        """The first frame's part; the others follow one by one (``rest_of_first``), each read
        when its turn comes, so that many frames or large ones never wait in memory together."""
        self._open.callback(spool.release, dataset)
        media, syntax = self._media_of(dataset)
        frames = _frames(dataset, self.numbers, self._open)
        # The response starts with this (only) instance: the type of its parts is known now.
        self.set_part_type(media)
        self._parts = (
            self._part(number, data, media, syntax)
            for number, data in zip(self.numbers, frames, strict=True)
        )
        return next(self._parts)

    def rest_of_first(self) -> Iterator[bytes]:
        yield from self._parts

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._open.close()

    def _part(self, number: int, data: bytes, media: str, syntax: UID) -> bytes:
        head = (
            f"--{self.boundary}\r\n"
            f"Content-Type: {media}; transfer-syntax={syntax}\r\n"
            f"Content-Length: {len(data)}\r\n"
            f"Content-Location: frames/{number}\r\n\r\n"
        ).encode("ascii")
        return b"".join((head, data, b"\r\n"))

    def _media_of(self, dataset: Dataset) -> tuple[str, UID]:
        """The media type and syntax its frames go in; the instance decoded first if the
        client takes only uncompressed frames.

        Raises:
            ConversionError: Only decoded frames are taken, and these cannot be decoded.
            NotAcceptable: The client takes neither these frames nor decoded ones.
        """
        accepted = self.accepted
        syntax = syntax_of(dataset)
        if not syntax.is_encapsulated:
            if syntax not in _LITTLE_ENDIAN:
                convert_to_explicit_little_endian(dataset)  # big endian, deflated
            # Implicit VR's pixel bytes are those of explicit VR little endian.
            if any(m in (_ANY, OCTET_STREAM) and s in _UNCOMPRESSED_NAMES for m, s in accepted):
                return OCTET_STREAM, ExplicitVRLittleEndian
            raise self._not_acceptable(syntax, OCTET_STREAM)
        stored_media = _MEDIA_OF_SYNTAX.get(syntax, "")
        for media, accepted_syntax in accepted:
            # Octet-stream "in any syntax" takes them as stored too (as Orthanc reads it).
            if accepted_syntax in (_ANY, syntax) and media in (_ANY, OCTET_STREAM, stored_media):
                return stored_media or OCTET_STREAM, syntax
        if any(m in (_ANY, OCTET_STREAM) and s == ExplicitVRLittleEndian for m, s in accepted):
            convert_to_explicit_little_endian(dataset)
            return OCTET_STREAM, ExplicitVRLittleEndian
        raise self._not_acceptable(syntax, stored_media)

    def _not_acceptable(self, syntax: UID, media: str) -> NotAcceptable:
        taken = ", ".join(sorted(f"{m} (transfer syntax {s})" for m, s in self.accepted))
        return NotAcceptable(
            f"The frames are {syntax.name} ({media or 'no media type'}); ADIT decodes "
            f"compressed frames but never encodes them, and the request takes only {taken}. "
            f'Accept multipart/related; type="{OCTET_STREAM}" for uncompressed frames, or '
            'type="*/*" for them as stored.'
        )


_LITTLE_ENDIAN = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
_UNCOMPRESSED_NAMES = {_ANY, ExplicitVRLittleEndian, ImplicitVRLittleEndian}


def _frames(
    dataset: Dataset, numbers: tuple[int, ...], stack: contextlib.ExitStack
) -> Iterator[bytes]:
    """The bytes of the frames numbered, in that order, each read when it is asked for from
    where the pixel data waits: a large value stays on disk (or in the received bytes), and
    only the frames asked for are read, whatever the instance weighs. What can be checked
    before the first frame is checked here; ``stack`` keeps a file opened for the frames.

    Raises:
        FrameNotFound: The instance has no pixel data, or fewer frames (also while iterating,
            for compressed pixel data that ends early).
    """
    pixels = next((item for item in _PIXEL_KEYWORDS if item[0] in dataset), None)
    if pixels is None:
        raise FrameNotFound("The instance holds no pixel data, so it has no frames.")
    keyword, float_bits = pixels
    count = _number_of_frames(dataset)
    missing = [number for number in numbers if number > count]
    if missing:
        raise FrameNotFound(
            f"The instance has {count} frame(s); frame {missing[0]} does not exist."
        )
    value = _PixelValue.of(dataset, keyword, stack)
    if syntax_of(dataset).is_encapsulated:
        return _encapsulated_frames(dataset, value, numbers, count)
    bits = float_bits or int(dataset.get("BitsAllocated", 0) or 0)
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    frame_bits = int(dataset.get("Rows", 0) or 0) * int(dataset.get("Columns", 0) or 0)
    frame_bits *= samples * bits
    if frame_bits <= 0 or value.length * 8 < frame_bits * count:
        raise FrameNotFound("The instance's pixel data is shorter than its frames need.")
    return (_native_frame(value, frame_bits, number) for number in numbers)


@dataclass
class _PixelValue:
    """The pixel data's value: in memory, or still in the file (or bytes) the instance was
    read from, at ``start``."""

    data: bytes | None
    source: IO[bytes] | None = None
    start: int = 0
    length: int = 0

    @classmethod
    def of(cls, dataset: Dataset, keyword: str, stack: contextlib.ExitStack) -> _PixelValue:
        element = dataset._dict[tag_for_keyword(keyword)]  # pyright: ignore[reportPrivateUsage, reportArgumentType]
        deferred = isinstance(element, RawDataElement) and element.value is None and element.length
        source = _deferred_source(dataset, stack) if deferred else None
        if source is None:  # in memory (or pydicom reads it, as it would anyway)
            data = dataset[keyword].value
            return cls(data, length=len(data))
        assert isinstance(element, RawDataElement)
        return cls(None, source, element.value_tell, element.length)

    def read(self, offset: int, length: int) -> bytes:
        if self.data is not None:
            return bytes(memoryview(self.data)[offset : offset + length])
        assert self.source is not None
        self.source.seek(self.start + offset)
        return self.source.read(length)

    def reader(self) -> bytes | IO[bytes]:
        """For pydicom's generate_frames: the value, or its file at the value's start."""
        if self.data is not None:
            return self.data
        assert self.source is not None
        self.source.seek(self.start)
        return self.source


def _deferred_source(dataset: Dataset, stack: contextlib.ExitStack) -> IO[bytes] | None:
    """Where pydicom would read a deferred value from: the dataset's open file or bytes (a
    spooled instance, one read from the bytes it arrived in), or its file by name."""
    buffer = getattr(dataset, "buffer", None)
    if buffer is not None and not getattr(buffer, "closed", False):
        return buffer
    filename = getattr(dataset, "filename", None)
    if isinstance(filename, str) and filename:
        return stack.enter_context(open(filename, "rb"))
    return None


def _encapsulated_frames(
    dataset: Dataset, value: _PixelValue, numbers: tuple[int, ...], count: int
) -> Iterator[bytes]:
    """The frames in the order asked for, read by passes over the fragments: on from the last
    frame while the numbers rise, from the start again when one falls back."""
    extended = None
    if "ExtendedOffsetTable" in dataset and "ExtendedOffsetTableLengths" in dataset:
        extended = (dataset.ExtendedOffsetTable, dataset.ExtendedOffsetTableLengths)
    frames: Iterator[bytes] = iter(())
    position, frame = 0, b""
    for number in numbers:
        if number < position or position == 0:
            frames = generate_frames(
                value.reader(), number_of_frames=count, extended_offsets=extended
            )
            position = 0
        try:
            while position < number:
                frame = next(frames)
                position += 1
        except StopIteration:
            raise FrameNotFound(
                f"The instance's pixel data holds fewer frames than the {count} it names."
            ) from None
        except (ValueError, EOFError, OSError) as err:
            raise FrameNotFound(
                f"The instance's compressed pixel data cannot be read: {err}"
            ) from err
        yield frame


def _native_frame(value: _PixelValue, frame_bits: int, number: int) -> bytes:
    start = (number - 1) * frame_bits
    first_byte, end_byte = start // 8, -(-(start + frame_bits) // 8)
    data = value.read(first_byte, end_byte - first_byte)
    if len(data) < end_byte - first_byte:
        raise FrameNotFound("The instance's pixel data is shorter than its frames need.")
    if start % 8 == 0 and frame_bits % 8 == 0:
        return data
    # 1-bit pixels (a segmentation) whose frames do not begin on a byte: the frame's bits,
    # packed from bit 0 as PS3.5 8.1.1 packs them (least significant first).
    bits = (int.from_bytes(data, "little") >> (start % 8)) & ((1 << frame_bits) - 1)
    return bits.to_bytes((frame_bits + 7) // 8, "little")


def _number_of_frames(dataset: Dataset) -> int:
    try:
        return max(int(dataset.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


@extend_schema_view(
    get=dicomweb_operation("WADO-RS frames", f'multipart/related; type="{OCTET_STREAM}"', CHANGES)
)
class FramesRetrieval(wado.Retrieval):
    """The frames of one instance (``sop_uid``), numbered in ``frames``."""

    def get(self, request: Request, ae_title: str, frames: str, **uids: str):  # pyright: ignore[reportIncompatibleMethodOverride]
        self.numbers = frame_numbers(frames)
        return super().get(request, ae_title, **uids)

    def negotiate(self, accept: str):  # pyright: ignore[reportIncompatibleMethodOverride]
        return accepted_frame_media(accept)

    def body(self, stream, modify, what, negotiated) -> wado.StreamedBody:
        return MultipartFrames(stream, modify, what, self.numbers, negotiated)

    def failed_before_start(
        self, request: Request, server: DicomServer, what: str, error: Exception
    ) -> Response:
        if isinstance(error, APIException):
            return Response({"detail": error.detail}, status=error.status_code)
        if isinstance(error, ConversionError):
            return Response(
                {
                    "detail": f"The frames cannot be decoded: {error}. Accept "
                    'multipart/related; type="*/*" to get them as stored.'
                },
                status=406,
            )
        return super().failed_before_start(request, server, what, error)
