"""STOW-RS (PS3.18 10.5): instances a client posts as ``multipart/related`` go to a server the
user's group may store to, by C-STORE or STOW-RS through the core's operator.

The body is read from the request stream in chunks and parsed part by part; a part above
``SPOOL_ABOVE`` bytes waits on disk, not in memory. Every instance goes into one store call
fed by a generator, so a whole request travels on one association. The parts are read and
decoded on a thread of their own, a few instances ahead of the store (``read_ahead``): while
the destination stores one instance, the next is made ready, and memory holds no more than
those few.

Each instance is judged on its own: a part that is no readable DICOM file, an instance of
another study than the path names, one the destination refuses: each is listed in the
FailedSOPSequence with its FailureReason (PS3.18 I.2.2) while the others are stored. The
answer is 200 when all were stored, 202 when some failed, 409 when none was stored (Table
10.5.3-1). A PACS that cannot be reached or refuses the association before anything was
stored is an error of the whole request (503 with Retry-After, 502, 504).

With ``pseudonym``, every instance is pseudonymized before it is stored (the core's
Pseudonymizer: new UIDs, the pseudonym as PatientID and PatientName), keyed by the secret of
``project`` (a project of one of the user's groups, so the UIDs are the same in every upload
of the project) or else by a secret of this request alone.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message

from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_view
from pydicom import Dataset
from pydicom.sequence import Sequence
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.request import Request

from adit.core import validators
from adit.core.api.errors import dicom_error_response
from adit.core.dicom import spool
from adit.core.dicom.dimse import SOP_CLASS_NOT_SUPPORTED, StoreResult
from adit.core.dicom.errors import DicomError, RetriableDicomError
from adit.core.dicom.files import read_instance
from adit.core.dicom.multipart import MultipartError, Part, iter_parts
from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.read_ahead import ReadAhead
from adit.core.models import PseudonymConflict

from .api import STORE, BadParameter, DicomWebView
from .changes import InstanceChanges
from .dicom_json import DICOM_JSON, to_json
from .schema import CHANGES, dicomweb_operation

logger = logging.getLogger(__name__)

# How much of the request is read at a time.
CHUNK_SIZE = 64 * 1024
# A part longer than this waits in a temporary file instead of in memory.
SPOOL_ABOVE = 4 * 1024 * 1024
INSTANCE_TYPE = "application/dicom"
# How many instances (and how many bytes of them) may wait read ahead of the store. Reading a
# part takes a fraction of what storing it does, so the store needs just the next one ready
# when the destination answers, and one more for a part that takes longer; more would cost
# memory for nothing (cli bench dicomweb). A part of up to SPOOL_ABOVE waits alone.
READ_AHEAD_DEPTH = 2
READ_AHEAD_BYTES = 2 * 1024 * 1024
# How long a request waits for the reading thread to end when the store ends before it.
READ_AHEAD_STOP_SECONDS = 5

# Failure reasons (PS3.18 Table I.2-2).
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
# An instance of another study than the request's path names. PS3.18 names such a mismatch
# a conflict (Table 10.5.3-1) but gives it no failure reason of its own; Table I.2-2 lets a
# server add codes, and this one (in the "cannot understand" class, echoing HTTP's 409) is
# the one dcm4chee-arc sends, so clients written against that archive know it.
STUDY_MISMATCH = 0xC409

# How many failure reasons the Warning header spells out (the body lists every instance).
_WARNINGS_SHOWN = 3
_PREAMBLE_LENGTH = 128
_PREFIX_END = _PREAMBLE_LENGTH + 4
_FILE_META_GROUP = b"\x02\x00"  # little endian, as the file meta information always is
_REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


class UnsupportedMediaType(APIException):
    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
    default_detail = "The request's media type cannot be stored."


def request_boundary(content_type: str) -> str:
    """The boundary of a STOW-RS request's ``multipart/related`` body.

    Raises:
        UnsupportedMediaType: If the body is no ``multipart/related`` of ``application/dicom``.
        ParseError: If the Content-Type names no usable boundary.
    """
    message = Message()
    message["content-type"] = content_type
    expected = f'multipart/related; type="{INSTANCE_TYPE}"'
    if message.get_content_type() != "multipart/related":
        got = validators.shown(content_type) if content_type else "none"
        raise UnsupportedMediaType(f"The request must be {expected}; its Content-Type is {got}.")
    part_type = message.get_param("type")
    if part_type is not None and str(part_type).strip().lower() != INSTANCE_TYPE:
        shown = validators.shown(str(part_type))
        raise UnsupportedMediaType(
            f'The parts must be instances, type="{INSTANCE_TYPE}", not {shown}: bulk data '
            "and metadata cannot be stored."
        )
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str) or not 0 < len(boundary) <= 70:
        raise ParseError(
            "The Content-Type names no usable boundary (1 to 70 characters) of the multipart "
            f"body: {validators.shown(content_type)}."
        )
    return boundary


@dataclass(frozen=True)
class Stored:
    """An instance handed to the destination, with its UIDs as stored (and as sent, when they
    were changed)."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    original: tuple[str, str, str] | None = None  # study, series and SOP instance UID as sent


@dataclass(frozen=True)
class Failed:
    sop_class_uid: str  # "" when the part could not be read
    sop_instance_uid: str
    reason: int
    detail: str


class Upload:
    """The instances of one request, read part by part, checked and changed, and what
    became of each.

    The parts are read and checked on a thread of their own once the upload is entered
    (``with upload:``), ahead of the store; the store's thread changes them (pseudonymizes,
    which may look up the project's pseudonyms in the database) and hands them on. Leaving
    the upload stops that thread and frees what it had read and nobody took.
    """

    def __init__(self, parts: Iterator[Part], study_uid: str | None, changes: InstanceChanges):
        self.parts = parts
        self.study_uid = study_uid
        self.changes = changes
        pseudonymizer = changes.pseudonymizer()
        self.modify = (
            changes.modifier(pseudonymizer)
            if pseudonymizer or changes.trial_protocol_id or changes.trial_protocol_name
            else None
        )
        self.handed: list[Stored] = []
        self.failed: list[Failed] = []
        self.parts_read = 0
        self._patients: set[str] = set()
        self._read = ReadAhead(
            self._outcomes(),
            _size_of,
            depth=READ_AHEAD_DEPTH,
            budget_bytes=READ_AHEAD_BYTES,
            name="stow-parts",
        )

    def __enter__(self) -> Upload:
        self._read.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._read.stop(wait=READ_AHEAD_STOP_SECONDS)

    def instances(self) -> Iterator[Dataset]:
        """The instances to store, in the order of their parts; the others are in ``failed``.

        Raises:
            MultipartError: If the body is malformed or cut short.
            RetriableDicomError: If a part could not be kept on disk.
        """
        for outcome in self._read:
            if isinstance(outcome, Failed):
                self.failed.append(outcome)
                continue
            dataset = outcome
            original = _uids(dataset)
            if self.modify is not None and not self._modified(dataset):
                continue
            stored = Stored(
                str(dataset.SOPClassUID),
                str(dataset.SOPInstanceUID),
                str(dataset.StudyInstanceUID),
                str(dataset.SeriesInstanceUID),
                original if self.modify is not None else None,
            )
            self.handed.append(stored)
            yield dataset

    def _outcomes(self) -> Iterator[Dataset | Failed]:
        """Each part's instance, or why it cannot be stored; on the reading thread."""
        for part in self._parts():
            yield self._accepted(part)

    def _parts(self) -> Iterator[Part]:
        try:
            for part in self.parts:
                self.parts_read += 1
                yield part
        except OSError as err:  # a spooled part that did not fit on the disk
            raise RetriableDicomError(
                f"ADIT could not keep part {self.parts_read + 1} of the request on disk: "
                f"{err.strerror or err}."
            ) from err

    def _accepted(self, part: Part) -> Dataset | Failed:
        """The part's instance, or why it cannot be stored."""
        number = self.parts_read
        part_type = part.content_type.split(";")[0].strip().lower()
        if part_type and part_type != INSTANCE_TYPE:
            if part.file is not None:
                part.file.close()
            return Failed(
                "", "", CANNOT_UNDERSTAND, f"part {number} is {part_type}, not an instance"
            )
        try:
            dataset = _read_instance(part)
        except Exception as err:  # pydicom raises many kinds for a broken file
            return Failed(
                "", "", CANNOT_UNDERSTAND, f"part {number} is no readable DICOM file ({err})"
            )
        sop_class = _uid_of(dataset, "SOPClassUID")
        sop_instance = _uid_of(dataset, "SOPInstanceUID")
        for keyword in _REQUIRED_UIDS:
            if not _uid_of(dataset, keyword):
                value = validators.shown(str(dataset.get(keyword, "")))
                spool.release(dataset)
                return Failed(
                    sop_class,
                    sop_instance,
                    CANNOT_UNDERSTAND,
                    f"part {number} has no valid {keyword} ({value})",
                )
        study = str(dataset.StudyInstanceUID)
        if self.study_uid is not None and study != self.study_uid:
            spool.release(dataset)
            return Failed(
                sop_class,
                sop_instance,
                STUDY_MISMATCH,
                f"instance {sop_instance} belongs to study {study}, not to the study "
                f"{self.study_uid} the request is for",
            )
        return dataset

    def _modified(self, dataset: Dataset) -> bool:
        """Pseudonymizes (or stamps) the instance; False (and a failure) if it must not be
        stored."""
        assert self.modify is not None
        sop_class, sop_instance = str(dataset.SOPClassUID), str(dataset.SOPInstanceUID)
        try:
            if self.changes.pseudonym:
                self._claim(str(dataset.get("PatientID", "")).strip())
            kept = self.modify(dataset)
        except ValidationError as err:
            detail = " ".join(err.messages)
        except Exception as err:  # a value the pseudonymizer cannot process: never stored
            detail = f"it cannot be pseudonymized ({err})"
        else:
            if kept:
                return True
            modality = validators.shown(str(dataset.get("Modality", "")))
            detail = (
                f"its modality {modality} is not stored pseudonymized (it may show names in "
                "its pixels or text)"
            )
        self._fail(
            sop_class, sop_instance, PROCESSING_FAILURE, f"instance {sop_instance}: {detail}"
        )
        return False

    def _claim(self, patient_id: str) -> None:
        """Gives the request's pseudonym to the patient, who must be the only one under it.

        Raises:
            ValidationError: If the pseudonym is another patient's (in the project, or in the
                request), or the patient has another one in the project.
        """
        if patient_id in self._patients:
            return
        project = self.changes.project
        if project is not None:
            if not patient_id:
                raise ValidationError(
                    "it has no PatientID, which a pseudonym of a project is recorded for"
                )
            try:
                project.claim_pseudonym(patient_id, self.changes.pseudonym)
            except PseudonymConflict as err:
                raise ValidationError(err.message) from None
        elif self._patients:
            raise ValidationError(
                f"it is of another patient than the first instance of the request; the "
                f"pseudonym {self.changes.pseudonym} can stand for one patient only"
            )
        self._patients.add(patient_id)

    def _fail(self, sop_class: str, sop_instance: str, reason: int, detail: str) -> None:
        self.failed.append(Failed(sop_class, sop_instance, reason, detail))

    def settle(self, result: StoreResult, error: Exception | None) -> list[Stored]:
        """The instances the destination took; those it did not are added to ``failed``, and
        after an error so are the parts not read yet."""
        # The store takes the instances in order: the first stored + refused were handled.
        handled = result.stored + len(result.refused)
        stored: list[Stored] = []
        for index, instance in enumerate(self.handed):
            sent_uid = instance.original[2] if instance.original else instance.sop_instance_uid
            refused = result.refused_statuses.get(instance.sop_instance_uid)
            if index < handled and refused is None:
                stored.append(instance)
            elif refused is not None:
                what = (
                    "its SOP class"
                    if refused == SOP_CLASS_NOT_SUPPORTED
                    else "its transfer syntax, and it cannot be converted without loss"
                )
                detail = f"the destination does not accept instance {sent_uid}: {what}"
                self._fail(instance.sop_class_uid, sent_uid, refused, detail)
            else:
                assert error is not None
                self._fail(instance.sop_class_uid, sent_uid, _reason_of(error), str(error))
        if error is not None and not isinstance(error, MultipartError):
            self._fail_unread(error)
        return stored

    def _fail_unread(self, error: Exception) -> None:
        """Lists the instances of the parts the store did not take when it failed, so the
        answer names every instance of the request."""
        try:
            for outcome in self._read:
                if isinstance(outcome, Failed):
                    self.failed.append(outcome)
                    continue
                uid = str(outcome.SOPInstanceUID)
                self._fail(str(outcome.SOPClassUID), uid, _reason_of(error), str(error))
                spool.release(outcome)
        except (MultipartError, DicomError):
            pass  # the rest of a malformed body names no instance


def _read_instance(part: Part) -> Dataset:
    """The part's instance: a DICOM file, or one without its preamble and DICM prefix (as
    dicomweb-client and pydicom write them by default), which then starts with the file meta
    information's group 0002."""
    if part.file is not None:
        head = part.file.read(_PREFIX_END)
        part.file.seek(0)
    else:
        head = part.body[:_PREFIX_END]
    lacks_preamble = head[_PREAMBLE_LENGTH:_PREFIX_END] != b"DICM"
    if lacks_preamble and not head.startswith(_FILE_META_GROUP):
        raise ValueError("neither the DICM prefix nor file meta information was found")
    if part.file is not None:
        return spool.spooled_file(part.file, force=lacks_preamble)
    return read_instance(part.body, force=lacks_preamble)


def _size_of(outcome: Dataset | Failed) -> int:
    return spool.estimated_size(outcome) if isinstance(outcome, Dataset) else 0


def _uid_of(dataset: Dataset, keyword: str) -> str:
    """The UID, or "" if it is missing or malformed (never sent on, never echoed)."""
    try:
        value = str(dataset.get(keyword, "") or "")
    except Exception:  # a value pydicom cannot decode
        return ""
    return value if validators.is_valid_uid(value) else ""


def _uids(dataset: Dataset) -> tuple[str, str, str]:
    return (
        str(dataset.StudyInstanceUID),
        str(dataset.SeriesInstanceUID),
        str(dataset.SOPInstanceUID),
    )


def _reason_of(error: Exception) -> int:
    # What may pass when tried again is said in the class a client retries ("out of
    # resources"); anything else is a processing failure.
    return OUT_OF_RESOURCES if isinstance(error, RetriableDicomError) else PROCESSING_FAILURE


def _body_chunks(request: Request) -> Iterator[bytes]:
    """The request body as it is read, never all of it at once (``request.body`` would be,
    and is refused above DATA_UPLOAD_MAX_MEMORY_SIZE). Read by the upload's reading thread
    only: under ASGI, Django has received the whole body into a (spooled) temporary file
    before the view runs, so reading it blocks on nothing of the event loop's."""
    stream = request._request  # Django's request, which is file-like
    while chunk := stream.read(CHUNK_SIZE):
        yield chunk


@extend_schema_view(
    post=dicomweb_operation(
        "STOW-RS store",
        DICOM_JSON,
        CHANGES,
        request={'multipart/related; type="application/dicom"': OpenApiTypes.BINARY},
    )
)
class StoreInstances(DicomWebView):
    permissions = {"POST": STORE}
    roles = {"POST": "destination"}

    def post(self, request: Request, ae_title: str, study_uid: str | None = None):
        if study_uid is not None:
            try:
                validators.validate_uid(study_uid)
            except ValidationError as err:
                raise BadParameter("StudyInstanceUID", " ".join(err.messages)) from None
        boundary = request_boundary(request.META.get("CONTENT_TYPE", ""))
        changes = InstanceChanges.of(request)
        server = self.server(ae_title)

        parts = iter_parts(_body_chunks(request), boundary, spool_above=SPOOL_ABOVE)
        result = StoreResult()
        error: Exception | None = None
        with Upload(parts, study_uid, changes) as upload:
            try:
                DicomOperator(server).store(upload.instances(), result)
            except (DicomError, MultipartError) as err:
                error = err
            except Exception as err:  # an instance that could not be sent (encoded, say)
                logger.exception("STOW-RS to %s stopped at an instance it could not send.", server)
                error = err
            stored = upload.settle(result, error)
        if error is not None and not stored:
            if isinstance(error, MultipartError):
                raise ParseError(f"The request body is malformed: {error}")
            if isinstance(error, DicomError):
                return dicom_error_response(error, request)
        if not stored and not upload.failed:
            raise ParseError("The request holds no instance.")
        logger.info(
            "STOW-RS to %s: %d instance(s) stored, %d failed.",
            server.name,
            len(stored),
            len(upload.failed),
        )
        return self._answer(request, ae_title, stored, upload, error)

    def _answer(
        self,
        request: Request,
        ae_title: str,
        stored: list[Stored],
        upload: Upload,
        error: Exception | None,
    ) -> HttpResponse:
        root = reverse("dicom_web:studies", kwargs={"ae_title": ae_title})
        answer = Dataset()
        studies = {instance.study_uid for instance in stored}
        answer.RetrieveURL = (
            request.build_absolute_uri(f"{root}/{next(iter(studies))}") if len(studies) == 1 else ""
        )
        if upload.failed:
            answer.FailedSOPSequence = Sequence([_failed_item(f) for f in upload.failed])
        if stored:
            answer.ReferencedSOPSequence = Sequence(
                [_stored_item(instance, request.build_absolute_uri(root)) for instance in stored]
            )
        if not upload.failed and error is None:
            code = status.HTTP_200_OK
        elif stored:
            code = status.HTTP_202_ACCEPTED
        else:
            code = status.HTTP_409_CONFLICT
        response = HttpResponse(
            json.dumps(to_json(answer), ensure_ascii=False).encode(),
            status=code,
            content_type=DICOM_JSON,
        )
        warnings = [failed.detail for failed in upload.failed[:_WARNINGS_SHOWN]]
        if error is not None:
            warnings.insert(0, f"The store stopped: {error}")
        if warnings:
            response["Warning"] = ", ".join(_warning(text) for text in warnings)
        return response


def _failed_item(failed: Failed) -> Dataset:
    item = Dataset()
    if failed.sop_class_uid:
        item.ReferencedSOPClassUID = failed.sop_class_uid
    if failed.sop_instance_uid:
        item.ReferencedSOPInstanceUID = failed.sop_instance_uid
    item.FailureReason = failed.reason
    return item


def _stored_item(instance: Stored, root_url: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = instance.sop_class_uid
    item.ReferencedSOPInstanceUID = instance.sop_instance_uid
    item.RetrieveURL = (
        f"{root_url}/{instance.study_uid}/series/{instance.series_uid}"
        f"/instances/{instance.sop_instance_uid}"
    )
    if instance.original is not None:
        # The UIDs the client sent, so it can tell which stored instance is which of its own.
        original = Dataset()
        original.StudyInstanceUID, original.SeriesInstanceUID, original.SOPInstanceUID = (
            instance.original
        )
        change = Dataset()
        change.ModifiedAttributesSequence = Sequence([original])
        change.AttributeModificationDateTime = datetime.datetime.now(datetime.UTC).strftime(
            "%Y%m%d%H%M%S"
        )
        change.ModifyingSystem = "ADIT"
        change.ReasonForTheAttributeModification = "COERCE"
        item.OriginalAttributesSequence = Sequence([change])
    return item


def _warning(text: str) -> str:
    """A Warning header value (RFC 9111 5.5, as PS3.18 8.4.3 uses it): Latin-1, no quotes."""
    cleaned = "".join(c if c.isprintable() and c != '"' else " " for c in text)
    cleaned = cleaned.encode("latin-1", "replace").decode("latin-1")
    if len(cleaned) > 300:
        cleaned = cleaned[:297] + "..."
    return f'299 ADIT "{cleaned}"'
