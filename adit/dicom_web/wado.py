"""WADO-RS (PS3.18 10.4): a study, a series or an instance retrieved from any source ADIT
knows (by WADO-RS, C-GET, or C-MOVE through ADIT's receiver, as the server offers), sent as
DICOM instances (``multipart/related; type="application/dicom"``) or as their metadata
(``application/dicom+json``).

Everything streams: the fetch runs on a thread of its own into a buffer bounded in instances
and bytes (InstanceStream), and each instance becomes a piece of the response as it is taken
from there. The fetch never runs ahead of the response by more than that buffer, and the
response never runs ahead of the client by more than the network's buffers: ADIT's web server
(adit.web_server) lets a send wait while they are full, where plain daphne would hold all that
a slow client has not read yet. Failures come in two phases:

* Until the first instance is there nothing is sent: an unknown study is a 404, a PACS that
  cannot be reached a 503, a refusal a 502, each with a JSON body (see adit.core.api.errors).
* Afterwards the status line has gone out. A multipart body then ends with a last part
  (``text/plain``) saying "Error: …" before its closing boundary; a metadata array is left
  unclosed and followed by that line, so that no JSON parser takes it for complete. Either
  way the failure is logged.

Query parameters change what leaves ADIT: ``pseudonym`` pseudonymizes every instance with the
core's pseudonymizer (series of the modalities in settings.EXCLUDE_MODALITIES are left out),
keyed by the secret of ``project`` if given (the same UIDs in every request of the project),
else by a fresh secret per request; ``trial_protocol_id`` and ``trial_protocol_name`` are
written into every instance. Without a pseudonym only a user with
``dicom_web.can_retrieve_unpseudonymized`` gets data.

Metadata leaves bulk data (pixel data and other binary values over 1 KiB) out: no BulkDataURI,
as ADIT serves no bulk data resource (and a pseudonymized instance exists nowhere to point
to).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from django.http.response import HttpResponseBase
from drf_spectacular.utils import extend_schema_view
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from rest_framework.exceptions import APIException, NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from adit.core import validators
from adit.core.api.errors import dicom_error_response
from adit.core.dicom import spool
from adit.core.dicom.errors import DicomError
from adit.core.dicom.files import encoded_pieces
from adit.core.dicom.instance_stream import InstanceStream, async_chunks
from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.read_ahead import StreamStopped
from adit.core.dicom.selection import StudySelection
from adit.core.dicom.syntaxes import ConversionError, convert_to_explicit_little_endian, syntax_of
from adit.core.jobs.processing import readable_error
from adit.core.models import DicomServer, PseudonymConflict
from adit.core.transfer.modify import InstanceModifier
from adit.core.transfer.study import (
    StudyNotFoundError,
    StudyToTransfer,
    excluded_modalities,
    find_study,
)

from .api import (
    RETRIEVE,
    RETRIEVE_UNPSEUDONYMIZED,
    DicomWebView,
    NotAcceptable,
)
from .changes import InstanceChanges, check_parameter
from .dicom_json import DICOM_JSON, to_json
from .schema import CHANGES, dicomweb_operation

logger = logging.getLogger(__name__)

# Instances fetched ahead of the client: a retrieval holds at most these many, and at most
# these bytes (a larger instance waits on disk); a web process serves many retrievals.
QUEUE_SIZE = 8
QUEUE_BYTES = 32 * 2**20
ANY_SYNTAX = "*"
# What an Accept header may name for instances besides multipart/related.
_ANY_MEDIA = {"*/*", "multipart/*"}
_DICOM_PART_TYPES = {"application/dicom", "application/*", "*/*"}
_JSON_MEDIA = {"*/*", "application/*", DICOM_JSON, "application/json"}
_LEVEL_NAMES = {"STUDY": "study", "SERIES": "series", "IMAGE": "instance"}
_PATH_KEYWORDS = {
    "study_uid": "StudyInstanceUID",
    "series_uid": "SeriesInstanceUID",
    "sop_uid": "SOPInstanceUID",
}


# -- content negotiation --------------------------------------------------------------------


@dataclass(frozen=True)
class MediaRange:
    media_type: str
    parameters: dict[str, str]


def media_ranges(header: str) -> list[MediaRange]:
    """The media ranges of an Accept header that the client takes at all (q above 0)."""
    ranges = []
    for item in header.split(","):
        media_type, *parameter_texts = item.split(";")
        media_type = media_type.strip().lower()
        if not media_type:
            continue
        parameters: dict[str, str] = {}
        for text in parameter_texts:
            name, _, value = text.partition("=")
            parameters[name.strip().lower()] = value.strip().strip('"')
        try:
            quality = float(parameters.get("q", "1"))
        except ValueError:
            quality = 1.0
        if quality > 0:
            ranges.append(MediaRange(media_type, parameters))
    return ranges


def accepted_syntaxes(header: str) -> frozenset[str]:
    """The transfer syntaxes of instances the client accepts (``*``: any, as stored).

    Without an Accept header, or a range without ``transfer-syntax``, that is Explicit VR
    Little Endian, the default of PS3.18 8.7.3.5.2.

    Raises:
        NotAcceptable: The client accepts no multipart DICOM, or only syntaxes ADIT cannot
            convert to (it decodes, but never encodes compressed pixel data).
    """
    if not header.strip():
        return frozenset({ExplicitVRLittleEndian})
    syntaxes: set[str] = set()
    for media in media_ranges(header):
        if media.media_type in _ANY_MEDIA:
            syntaxes.add(ExplicitVRLittleEndian)
        elif (
            media.media_type == "multipart/related"
            and media.parameters.get("type", "application/dicom").lower() in _DICOM_PART_TYPES
        ):
            syntaxes.add(media.parameters.get("transfer-syntax") or ExplicitVRLittleEndian)
    if not syntaxes:
        raise NotAcceptable(
            'Instances are sent as multipart/related; type="application/dicom", which the '
            f"request does not accept (Accept: {validators.shown(header)})."
        )
    if not syntaxes & {ANY_SYNTAX, ExplicitVRLittleEndian}:
        named = ", ".join(sorted(syntaxes))
        raise NotAcceptable(
            f"ADIT cannot convert instances to the transfer syntax asked for ({named}): it "
            "sends them as stored (transfer-syntax=*) or in Explicit VR Little Endian "
            f"(transfer-syntax={ExplicitVRLittleEndian})."
        )
    return frozenset(syntaxes)


def check_json_accepted(header: str) -> None:
    """Raises NotAcceptable unless the client accepts the JSON of metadata."""
    if not header.strip():
        return
    if not any(media.media_type in _JSON_MEDIA for media in media_ranges(header)):
        raise NotAcceptable(
            f"Metadata is sent as {DICOM_JSON}, which the request does not accept "
            f"(Accept: {validators.shown(header)})."
        )


# -- response bodies ------------------------------------------------------------------------


class StreamedBody:
    """A response body made instance by instance from the stream: one chunk per instance
    (the async iteration waits for the next instance before it asks for the next chunk)."""

    content_type: str

    def __init__(self, stream: InstanceStream, modify: InstanceModifier, what: str):
        self.stream = stream
        self.modify = modify
        self.what = what  # for the log: "study 1.2.3 from PACS"

    def first(self) -> bytes | None:
        """Waits for the first instance and makes its chunk; None if there is no instance.

        Raises:
            Exception: What made the fetch fail, or what the instance could not be made into.
        """
        dataset = self._next_instance()
        return None if dataset is None else self.opening() + self.piece(dataset, first=True)

    def chunks(self, first: bytes) -> Iterator[bytes]:
        """The body's bytes, beginning with ``first``; the fetch stops when it ends."""
        sent = 1
        try:
            yield first
            try:
                yield from self.rest_of_first()
                while (dataset := self._next_instance()) is not None:
                    chunk = self.piece(dataset, first=False)
                    sent += 1
                    yield chunk
            except StreamStopped:
                return  # the client went away
            except Exception as err:
                # The status line went out with the first instance: the body itself must say
                # that it is incomplete.
                logger.warning(
                    "WADO-RS of %s failed after %d instance(s): %s",
                    self.what,
                    sent,
                    readable_error(err),
                    exc_info=not isinstance(err, DicomError),
                )
                yield self.error_ending(f"Error: {readable_error(err)}")
                return
            logger.info("WADO-RS of %s complete: %d instance(s).", self.what, sent)
            yield self.ending()
        finally:
            self.close()

    def close(self) -> None:
        """Ends the fetch (and lets go of what the body holds); safe more than once."""
        self.stream.stop()

    def nothing_sent(self, server: DicomServer) -> APIException:
        """What the client is told when ``first`` found nothing to send."""
        return NotFound(f"No instance of the {self.what} arrived.")

    def _next_instance(self) -> Dataset | None:
        while (dataset := self.stream.next_instance()) is not None:
            if self.modify(dataset):
                return dataset
        return None

    def opening(self) -> bytes:
        return b""

    def rest_of_first(self) -> Iterator[bytes]:
        """More chunks of the first instance, made one by one after ``first`` (a body whose
        instance gives several large parts); none by default."""
        return iter(())

    def piece(self, dataset: Dataset, *, first: bool) -> bytes:
        raise NotImplementedError

    def ending(self) -> bytes:
        raise NotImplementedError

    def error_ending(self, message: str) -> bytes:
        raise NotImplementedError


class MultipartBody(StreamedBody):
    """A ``multipart/related`` body: its boundary, its closing, and the error part that ends
    it when the fetch fails after the first part."""

    def __init__(self, stream, modify, what: str, part_type: str):
        super().__init__(stream, modify, what)
        # Random: no instance holds it by chance, so no part needs to be searched for it.
        self.boundary = f"adit-{secrets.token_hex(16)}"
        self.set_part_type(part_type)

    def set_part_type(self, part_type: str) -> None:
        self.content_type = f'multipart/related; type="{part_type}"; boundary={self.boundary}'

    def ending(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode("ascii")

    def error_ending(self, message: str) -> bytes:
        part = f"--{self.boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{message}\r\n"
        return part.encode() + self.ending()


class MultipartInstances(MultipartBody):
    """``multipart/related; type="application/dicom"``: a part per instance, in the transfer
    syntax the client accepts (as stored where it can, else converted losslessly)."""

    def __init__(self, stream, modify, what: str, accepted: frozenset[str]):
        super().__init__(stream, modify, what, "application/dicom")
        self.accepted = accepted

    def piece(self, dataset: Dataset, *, first: bool) -> bytes:
        syntax = syntax_of(dataset)
        if ANY_SYNTAX not in self.accepted and syntax not in self.accepted:
            convert_to_explicit_little_endian(dataset)
            syntax = ExplicitVRLittleEndian
        # An unchanged instance as it arrived from the source (see files.read_instance).
        pieces = encoded_pieces(dataset)
        spool.release(dataset)  # its file's space now, not when the dataset is collected
        head = (
            f"--{self.boundary}\r\n"
            f"Content-Type: application/dicom; transfer-syntax={syntax}\r\n"
            f"Content-Length: {sum(len(piece) for piece in pieces)}\r\n\r\n"
        ).encode("ascii")
        return b"".join((head, *pieces, b"\r\n"))


class MetadataArray(StreamedBody):
    """``application/dicom+json``: the array of the instances' JSON, without bulk data."""

    content_type = DICOM_JSON

    def opening(self) -> bytes:
        return b"["

    def piece(self, dataset: Dataset, *, first: bool) -> bytes:
        text = json.dumps(to_json(dataset), ensure_ascii=False)
        spool.release(dataset)
        return (text if first else f",{text}").encode()

    def ending(self) -> bytes:
        return b"]"

    def error_ending(self, message: str) -> bytes:
        # No closing bracket: the array must not parse as a complete answer.
        return f"\n{message}\n".encode()


# -- views ----------------------------------------------------------------------------------


class Retrieval(DicomWebView):
    """Retrieval of a study, a series (``series_uid``) or an instance (and ``sop_uid``)."""

    permissions = {"GET": RETRIEVE}
    nothing_to_send = (
        "Nothing to retrieve: only series of modalities left out when pseudonymizing "
        f"({', '.join(sorted(excluded_modalities(True)))})."
    )

    def get(self, request: Request, ae_title: str, **uids: str) -> HttpResponseBase:
        for name, uid in uids.items():
            check_parameter(validators.validate_uid, _PATH_KEYWORDS[name], uid)
        options = InstanceChanges.of(
            request, unpseudonymized=RETRIEVE_UNPSEUDONYMIZED, allowed_groups=self.allowed_groups
        )
        negotiated = self.negotiate(request.headers.get("Accept", ""))
        server = self.server(ae_title)
        study_uid = uids["study_uid"]
        series_uid = uids.get("series_uid", "")
        sop_uid = uids.get("sop_uid", "")
        selection = StudySelection("", study_uid, (series_uid,) if series_uid else (), sop_uid)
        pseudonymizer = options.pseudonymizer()
        operator = DicomOperator(server)
        try:
            study = find_study(operator, selection, pseudonymized=pseudonymizer is not None)
            if sop_uid:
                _check_instance_exists(operator, study, series_uid, sop_uid)
        except DicomError as err:
            return dicom_error_response(err, request)
        if options.project is not None and study.patient_id:
            try:
                options.project.claim_pseudonym(study.patient_id, options.pseudonym)
            except PseudonymConflict as err:
                return Response({"detail": err.message}, status=409)
        fetch = self.fetch_of(study)
        if fetch is None:
            raise NotFound(self.nothing_to_send)
        what = f"{_LEVEL_NAMES[selection.level]} {sop_uid or series_uid or study_uid}"
        stream = InstanceStream(
            operator, fetch, depth=QUEUE_SIZE, budget_bytes=QUEUE_BYTES, expected=study.counts
        )
        body = self.body(
            stream, options.modifier(pseudonymizer), f"{what} of {server.name}", negotiated
        )
        stream.start()
        try:
            # Waiting for the first instance keeps the status line open for the usual failures.
            first = body.first()
        except BaseException as err:
            body.close()
            if isinstance(err, Exception):
                return self.failed_before_start(request, server, what, err)
            raise
        if first is None:
            body.close()
            raise body.nothing_sent(server)
        logger.info(
            "%s retrieves the %s%s.",
            request.user,
            what,
            " pseudonymized" if pseudonymizer else "",
        )
        chunks = body.chunks(first)
        # Under ASGI Django would collect a synchronous iterator completely before sending it.
        asgi = isinstance(request._request, ASGIRequest)  # pyright: ignore[reportPrivateUsage]
        response = _ClosingResponse(
            async_chunks(chunks, stream) if asgi else chunks,
            on_close=body.close,
            content_type=body.content_type,
        )
        # Patient data must not linger in shared caches; a buffering proxy would hold the
        # stream back until it is complete.
        response["Cache-Control"] = "no-store"
        response["X-Accel-Buffering"] = "no"
        return response

    def fetch_of(self, study: StudyToTransfer) -> StudySelection | None:
        """What to fetch of what the PACS holds; None: nothing."""
        return study.fetch

    def failed_before_start(
        self, request: Request, server: DicomServer, what: str, error: Exception
    ) -> Response:
        """The answer to a failure before the first part: the response has not started."""
        if isinstance(error, DicomError):
            return dicom_error_response(error, request)
        if isinstance(error, ConversionError):
            return Response(
                {
                    "detail": f"An instance cannot be sent in Explicit VR Little Endian: {error}. "
                    "Accept transfer-syntax=* to get the instances as stored."
                },
                status=406,
            )
        # Data the PACS sent that ADIT could not handle (an instance without UIDs, say), or a
        # disk too full to hold a large instance.
        logger.warning("WADO-RS of %s of %s failed on its start", what, server.name, exc_info=True)
        reason = readable_error(error)
        detail = f"Could not retrieve the {what} from {server.name}: {reason}"
        return Response({"detail": detail}, status=502)

    def negotiate(self, accept: str) -> frozenset[str]:
        raise NotImplementedError

    def body(
        self,
        stream: InstanceStream,
        modify: InstanceModifier,
        what: str,
        negotiated: frozenset[str],
    ) -> StreamedBody:
        raise NotImplementedError


class _ClosingResponse(StreamingHttpResponse):
    """A streamed response that ends the fetch when Django closes it, even one never
    iterated (a client gone before the first chunk): closing a generator that has not
    started runs none of its code."""

    def __init__(self, *args, on_close: Callable[[], None], **kwargs):
        super().__init__(*args, **kwargs)
        self._on_close = on_close

    def close(self) -> None:
        try:
            self._on_close()
        finally:
            super().close()


def _check_instance_exists(
    operator: DicomOperator, study: StudyToTransfer, series_uid: str, sop_uid: str
) -> None:
    """One C-FIND (or QIDO) for the instance: a fetch of an instance the PACS does not hold
    would only fail in the PACS's words (and be tried again first)."""
    filters = {"PatientID": study.patient_id} if study.patient_id else {}
    if not list(
        operator.find_images(study.study_uid, series_uid, SOPInstanceUID=sop_uid, **filters)
    ):
        raise StudyNotFoundError(f"No instance found with SOP Instance UID {sop_uid}.")


@extend_schema_view(
    get=dicomweb_operation(
        "WADO-RS instances", 'multipart/related; type="application/dicom"', CHANGES
    )
)
class InstancesRetrieval(Retrieval):
    def negotiate(self, accept: str) -> frozenset[str]:
        return accepted_syntaxes(accept)

    def body(self, stream, modify, what, negotiated) -> StreamedBody:
        return MultipartInstances(stream, modify, what, negotiated)


@extend_schema_view(get=dicomweb_operation("WADO-RS metadata", DICOM_JSON, CHANGES))
class MetadataRetrieval(Retrieval):
    def negotiate(self, accept: str) -> frozenset[str]:
        check_json_accepted(accept)
        return frozenset()

    def body(self, stream, modify, what, negotiated) -> StreamedBody:
        return MetadataArray(stream, modify, what)
