"""Direct download of one study from a PACS as a ZIP archive streamed to the browser.

The study never lies complete in memory or on disk: a thread fetches it instance by instance
(WADO-RS, C-GET or C-MOVE, whatever the server offers) into a small bounded queue, and the
response turns each instance into a ZIP entry as soon as it is taken from the queue. A slow
client therefore slows the fetch down instead of filling memory.

The archive is written without ever seeking back (entries carry data descriptors, ZIP64 where
needed), so its bytes can leave as they are produced. Failures are handled in two phases:

* Until the first instance has arrived nothing is sent, so an unreachable server or an unknown
  study becomes an HTTP error (502) with a readable message.
* Afterwards the status line has gone out; an error then ends the archive with an
  ``error.txt`` entry and a proper central directory, so the user gets an archive that says
  it is incomplete instead of a silently truncated one.

Entry paths follow the folder layout of transfers to a folder, without the job folder::

    <pseudonym or PatientID>/<StudyDate-StudyTime-modalities>/<series>/<SOPInstanceUID>.dcm
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from urllib.parse import quote

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.handlers.asgi import ASGIRequest
from django.core.validators import RegexValidator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.http import require_GET
from pydicom import Dataset

from adit.core import folder_layout
from adit.core.destinations import encode_instance
from adit.core.dicom.errors import DicomError, RetriableDicomError
from adit.core.dicom.instance_stream import InstanceStream, StreamStopped
from adit.core.dicom.operator import DicomOperator
from adit.core.models import DicomNode, DicomServer
from adit.core.pseudonymizer import Pseudonymizer
from adit.core.validators import validate_query_value, validate_uid

logger = logging.getLogger(__name__)

# Instances fetched ahead of the client: bounds a download's memory to a few instances.
QUEUE_SIZE = 8
ERROR_ENTRY = "error.txt"

# A Code String (VR CS) as PACS name modalities: "CT", "MR", "OT", "RTSTRUCT", ...
_MODALITY = re.compile(r"^[A-Za-z0-9_ ]{1,16}\Z")
# Modalities of ModalitiesInStudy come comma-separated from a results page or joined with
# DICOM's value separator when copied straight from a PACS answer.
_MODALITY_SEPARATORS = re.compile(r"[,\\]")


class DownloadForm(forms.Form):
    """The study to download, as the search results page names it."""

    study_uid = forms.CharField(validators=[validate_uid])
    patient_id = forms.CharField(max_length=64, required=False, validators=[validate_query_value])
    study_date = forms.CharField(
        required=False,
        validators=[RegexValidator(r"^\d{8}\Z", "A study date has 8 digits (YYYYMMDD).")],
    )
    study_time = forms.CharField(
        required=False,
        validators=[
            RegexValidator(r"^\d{2,6}(\.\d{1,6})?\Z", "A study time has up to 6 digits (HHMMSS).")
        ],
    )
    modalities = forms.CharField(max_length=200, required=False)
    pseudonym = forms.CharField(max_length=64, required=False, validators=[validate_query_value])

    def clean_modalities(self) -> list[str]:
        text = self.cleaned_data["modalities"]
        modalities = [part.strip() for part in _MODALITY_SEPARATORS.split(text) if part.strip()]
        for modality in modalities:
            if not _MODALITY.match(modality):
                raise ValidationError(f"Not a modality: {modality!r}.")
        return modalities


@require_GET
def download_study(request: HttpRequest, server_id: int, study_uid: str) -> HttpResponseBase:
    """Streams the study ``study_uid`` of the server ``server_id`` as a ZIP attachment.

    Query parameters (as the search results page links them): ``patient_id``,
    ``study_date`` (YYYYMMDD), ``study_time`` (HHMMSS), ``modalities`` and ``pseudonym``.
    With a pseudonym every instance is pseudonymized and series of the modalities in
    ``settings.EXCLUDE_MODALITIES`` are left out.

    Returns:
        The streamed archive; or a plain text answer with status 403 (no permission to
        download, or to download without a pseudonym), 404 (server not available to the user
        as a source, or nothing left to download), 400 (invalid parameters) or 502 (the PACS
        failed before the first instance arrived).
    """
    user = request.user
    if not user.has_perm("selective_transfer.can_download_study"):
        return _text("You are not allowed to download studies.", 403)

    node = DicomNode.objects.accessible_by_user(user, "source").filter(pk=server_id).first()
    server = node.concrete() if node is not None else None
    if not isinstance(server, DicomServer):
        return _text(f"There is no DICOM server {server_id} you may download from.", 404)

    # The UID from the path goes last so that a query parameter cannot replace it.
    form = DownloadForm({**request.GET.dict(), "study_uid": study_uid})
    if not form.is_valid():
        return _text(_form_errors(form), 400)
    params = form.cleaned_data
    pseudonym: str = params["pseudonym"]
    if not pseudonym and not user.has_perm("selective_transfer.can_transfer_unpseudonymized"):
        return _text(
            "A pseudonym is required: you are not allowed to download unpseudonymized studies.",
            403,
        )

    pseudonymizer = None
    if pseudonym:
        try:
            # No job holds a secret for a download; one per request keeps the replaced UIDs
            # consistent within the archive and unlinkable to any other download.
            pseudonymizer = Pseudonymizer(pseudonym, secrets.token_urlsafe(32))
        except ValueError as err:
            return _text(str(err), 400)

    operator = DicomOperator(server)
    modalities: list[str] = params["modalities"]
    series_uids = None
    if pseudonymizer is not None:
        try:
            series_uids, modalities = _kept_series(operator, study_uid, params["patient_id"])
        except DicomError as err:
            return _pacs_error(server, study_uid, err)
        if not series_uids:
            excluded = ", ".join(settings.EXCLUDE_MODALITIES)
            return _text(
                "Nothing to download: the study holds only series of modalities left out "
                f"when pseudonymizing ({excluded}).",
                404,
            )

    fetcher = InstanceStream(
        operator, params["patient_id"], study_uid, series_uids, depth=QUEUE_SIZE
    )
    archive = _StudyArchive(fetcher, pseudonymizer, pseudonym or params["patient_id"], modalities)
    fetcher.start()
    try:
        # Waiting for the first instance keeps the status line open for the usual failures.
        first_entry = archive.first_entry()
    except (DicomError, OSError) as err:
        fetcher.stop()
        return _pacs_error(server, study_uid, _explained(operator, study_uid, params, err))
    except BaseException:
        fetcher.stop()
        raise

    logger.info(
        "%s downloads study %s from %s%s.",
        user,
        study_uid,
        server.name,
        " pseudonymized" if pseudonymizer else "",
    )
    chunks = archive.chunks(first_entry)
    # Under ASGI Django would collect a synchronous iterator completely before sending it.
    content = _asynchronous(chunks, fetcher.stop) if isinstance(request, ASGIRequest) else chunks
    response = StreamingHttpResponse(content, content_type="application/zip")
    stem = f"study_{pseudonym or params['patient_id'] or archive.patient}"
    study_date = params["study_date"] or archive.study_date
    if study_date:
        stem += f"_{study_date}"
    response["Content-Disposition"] = _attachment(f"{folder_layout.sanitize_part(stem)}.zip")
    # Patient data must not linger in shared caches; and a buffering proxy would hold the
    # stream back until it is complete.
    response["Cache-Control"] = "no-store"
    response["X-Accel-Buffering"] = "no"
    return response


def _text(message: str, status: int) -> HttpResponse:
    return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")


def _attachment(filename: str) -> str:
    """Content-Disposition for ``filename`` (sanitized already: no quotes, no backslashes)."""
    # Header values are Latin-1 at best: a patient ID with other letters goes in RFC 6266's
    # encoded form, next to an ASCII approximation for clients that do not read it.
    plain = filename.encode("ascii", "replace").decode("ascii").replace("?", "_")
    header = f'attachment; filename="{plain}"'
    if plain != filename:
        header += f"; filename*=UTF-8''{quote(filename)}"
    return header


def _form_errors(form: DownloadForm) -> str:
    return "\n".join(
        f"{name}: {' '.join(str(message) for message in messages)}"
        for name, messages in form.errors.items()
    )


def _pacs_error(server: DicomServer, study_uid: str, error: BaseException) -> HttpResponse:
    logger.warning("Download of study %s from %s failed: %s", study_uid, server.name, error)
    return _text(f"Could not download the study from {server.name}: {error}", 502)


def _explained(
    operator: DicomOperator, study_uid: str, params: dict, error: Exception
) -> Exception:
    """``error``, or a plain "not found" if that is why the fetch failed.

    PACS answer a retrieve of an unknown study in their own words (Orthanc: "Unable to
    Process"); one query on the failure path tells the user what really happened.
    """
    if isinstance(error, RetriableDicomError) or not isinstance(error, DicomError):
        # Network trouble: a query would only fail the same way, after its own retries.
        return error
    filters = {"PatientID": params["patient_id"]} if params["patient_id"] else {}
    try:
        if not list(operator.find_studies(limit=1, StudyInstanceUID=study_uid, **filters)):
            return DicomError(f"No study found with Study Instance UID {study_uid}.")
    except DicomError:
        pass  # the server cannot be asked either; the fetch's error says more
    return error


def _kept_series(
    operator: DicomOperator, study_uid: str, patient_id: str
) -> tuple[list[str], list[str]]:
    """UIDs of the series whose modality may leave pseudonymized, and their modalities."""
    # A PACS that only offers patient root queries needs the patient for a series query.
    filters = {"PatientID": patient_id} if patient_id else {}
    series = list(operator.find_series(study_uid, **filters))
    if not series:
        raise DicomError(f"No study found with Study Instance UID {study_uid}.")
    excluded = set(settings.EXCLUDE_MODALITIES)
    kept = [item for item in series if str(item.get("Modality", "")) not in excluded]
    modalities = sorted({str(item.get("Modality", "")) for item in kept} - {""})
    return [str(item.SeriesInstanceUID) for item in kept], modalities


class _StudyArchive:
    """Turns the fetched instances into the entries of the study's ZIP archive."""

    def __init__(
        self,
        fetcher: InstanceStream,
        pseudonymizer: Pseudonymizer | None,
        patient: str,
        modalities: list[str],
    ):
        self.fetcher = fetcher
        self.pseudonymizer = pseudonymizer
        self.excluded = set(settings.EXCLUDE_MODALITIES) if pseudonymizer else set()
        self.patient = patient
        self.modalities = modalities
        self.study_date = ""
        self._study_folder = ""
        # Entries get the time of the download; DICOM dates may precede what ZIP can store.
        self._timestamp = time.localtime()[:6]

    def first_entry(self) -> tuple[str, bytes]:
        """Waits for the first instance and prepares its entry.

        Raises:
            DicomError: If the study cannot be fetched or holds nothing to download.
        """
        entry = self._next_entry()
        if entry is None and not self.fetcher.delivered:
            raise DicomError(f"No study found with Study Instance UID {self.fetcher.study_uid}.")
        if entry is None:
            raise DicomError("The study holds no instances to download.")
        return entry

    def chunks(self, first_entry: tuple[str, bytes]) -> Iterator[bytes]:
        """The bytes of the archive, one chunk per entry, beginning with ``first_entry``."""
        sink = _ChunkSink()
        written = 0
        try:
            with zipfile.ZipFile(
                sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True
            ) as archive:
                entry: tuple[str, bytes] | None = first_entry
                try:
                    while entry is not None:
                        self._write(archive, *entry)
                        written += 1
                        yield sink.take()
                        entry = self._next_entry()
                except StreamStopped:
                    return
                except Exception as err:
                    # The status line is sent already: the archive itself must say it is
                    # incomplete, and must still be readable.
                    logger.warning(
                        "Study download failed after %d instance(s): %s",
                        written,
                        err,
                        exc_info=not isinstance(err, DicomError),
                    )
                    message = f"Error during study download: {err or type(err).__name__}\n"
                    self._write(archive, ERROR_ENTRY, message.encode())
                else:
                    logger.info("Study download complete: %d instance(s).", written)
            yield sink.take()
        finally:
            self.fetcher.stop()

    def _next_entry(self) -> tuple[str, bytes] | None:
        while (dataset := self.fetcher.next_instance()) is not None:
            # Only kept series are fetched; this catches a PACS whose series level
            # Modality disagreed with its instances.
            if str(dataset.get("Modality", "")) in self.excluded:
                continue
            return self._entry(dataset)
        return None

    def _entry(self, dataset: Dataset) -> tuple[str, bytes]:
        if self.pseudonymizer is not None:
            self.pseudonymizer.pseudonymize(dataset)
        if not self._study_folder:
            # Named from the first instance as stored, like the study folders of transfers.
            self.study_date = str(dataset.get("StudyDate", ""))
            self._study_folder = folder_layout.study_folder_of(dataset, self.modalities)
            self.patient = self.patient or str(dataset.get("PatientID", "")).strip()
        name = "/".join(
            (
                folder_layout.sanitize_part(self.patient),
                self._study_folder,
                folder_layout.series_folder_of(dataset),
                folder_layout.instance_file_name(dataset),
            )
        )
        return name, encode_instance(dataset)

    def _write(self, archive: zipfile.ZipFile, name: str, data: bytes) -> None:
        info = zipfile.ZipInfo(name, date_time=self._timestamp)
        info.compress_type = zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16  # rw-r--r-- when unpacked on Unix
        archive.writestr(info, data)


class _ChunkSink:
    """A write-only file for ZipFile that collects what is written until it is taken.

    It has no ``tell`` or ``seek``, which makes ZipFile write every entry front to back (with
    a data descriptor after the data) instead of going back to patch the local headers.
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


async def _asynchronous(chunks: Iterator[bytes], stop: Callable[[], None]) -> AsyncIterator[bytes]:
    """The chunks for an ASGI server, each made on a worker thread.

    Django's ASGI handler collects a synchronous iterator into a list before sending it, which
    would hold the whole study in memory. When the client disconnects Django cancels this
    generator; ``stop`` then ends the fetch, as closing the synchronous one would.
    """
    try:
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            yield chunk
    finally:
        stop()
