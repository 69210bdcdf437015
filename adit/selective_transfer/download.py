"""Direct download of one study from a PACS as a ZIP archive streamed to the browser.

The study never lies complete in memory or on disk: a thread fetches it instance by instance
(WADO-RS, C-GET or C-MOVE, whatever the server offers) into a small bounded queue, and the
response turns each instance into a ZIP entry as soon as it is taken from the queue. A slow
client therefore slows the fetch down instead of filling memory.

The archive is written without ever seeking back (entries carry data descriptors, ZIP64 where
needed), so its bytes can leave as they are produced. Failures are handled in two phases:

* Until the first instance has arrived nothing is sent, so an unknown study (404) or an
  unreachable server (502) becomes an ADIT page with a readable message.
* Afterwards the status line has gone out; an error then ends the archive with an
  ``error.txt`` entry and a proper central directory, so the user gets an archive that says
  it is incomplete instead of a silently truncated one.

Entry paths follow the folder layout of transfers to a folder, without the job folder::

    <pseudonym or PatientID>/<StudyDate-StudyTime-modalities>/<series>/<SOPInstanceUID>.dcm
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import zipfile
from collections.abc import Iterator
from urllib.parse import quote

from django import forms
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, QueryDict, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.utils.log import log_response

from adit.core.access import NodeNotUsable, usable_server
from adit.core.dicom.errors import DicomError, RetriableDicomError
from adit.core.dicom.files import encode_instance
from adit.core.dicom.instance_stream import InstanceStream, async_chunks
from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.read_ahead import StreamStopped
from adit.core.dicom.selection import StudySelection
from adit.core.jobs.processing import readable_error
from adit.core.models import DicomServer
from adit.core.transfer import folder_layout
from adit.core.transfer.folder_layout import StudyLayout
from adit.core.transfer.modify import InstanceModifier
from adit.core.transfer.pseudonymizer import Pseudonymizer
from adit.core.transfer.study import StudyNotFoundError, excluded_modalities, find_study
from adit.core.validators import (
    MAX_PSEUDONYM_LENGTH,
    validate_pseudonym,
    validate_query_value,
    validate_uid,
)

logger = logging.getLogger(__name__)

# Instances fetched ahead of the client: bounds a download's memory to a few instances, and
# to these bytes (a larger instance waits on disk); a web process serves many downloads.
QUEUE_SIZE = 8
QUEUE_BYTES = 32 * 2**20
ERROR_ENTRY = "error.txt"

BACK_HINT = "Search again on the Selective Transfer page and use the download button of a study."


class DownloadForm(forms.Form):
    """The study to download, as a row of the search results names it, and the pseudonym."""

    source = forms.IntegerField(label="DICOM server", min_value=1)
    # Not stripped: "1.2.3\n" is not the UID 1.2.3.
    study_uid = forms.CharField(
        label="Study Instance UID", max_length=64, strip=False, validators=[validate_uid]
    )
    patient_id = forms.CharField(
        label="Patient ID", max_length=64, required=False, validators=[validate_query_value]
    )
    pseudonym = forms.CharField(
        max_length=MAX_PSEUDONYM_LENGTH,
        required=False,
        strip=False,  # a pseudonym with spaces around it is an error, not another pseudonym
        validators=[validate_pseudonym],
    )

    @classmethod
    def from_post(cls, post: QueryDict) -> DownloadForm:
        """The form of a download button's POST: ``study`` (the row, a JSON object) and the
        ``pseudonym`` of the transfer form. A ``study`` that is no JSON object of texts and
        numbers binds nothing, so the form names the missing fields."""
        try:
            row = json.loads(post.get("study", ""))
        except ValueError:
            row = None
        fields = [name for name in cls.base_fields if name != "pseudonym"]
        data = {
            name: str(value)
            for name, value in (row.items() if isinstance(row, dict) else ())
            if name in fields and isinstance(value, str | int) and not isinstance(value, bool)
        }
        return cls({**data, "pseudonym": post.get("pseudonym", "")})


def download_study(request: HttpRequest) -> HttpResponseBase:
    """Streams a study of a PACS as a ZIP attachment, for the download button of a results row.

    POST fields: ``study``, the row as JSON (``source``, ``study_uid``, ``patient_id``), and
    ``pseudonym``. A POST, so that neither the real patient ID nor the pseudonym lands in a URL
    (server logs, browser history) next to the other. With a pseudonym every instance is
    pseudonymized and series of the modalities in ``settings.EXCLUDE_MODALITIES`` are left out.

    Returns:
        The streamed archive; or a page that says what is wrong, with status 405 (not a POST),
        403 (no permission to download, or to download without a pseudonym), 400 (invalid
        fields), 404 (server not available to the user as a source, the PACS has no such
        study, or nothing is left to download) or 502 (the PACS failed before the first
        instance arrived).
    """
    if request.method != "POST":
        response = _refused(
            request,
            "Downloads start with the download button of a study in the search results.",
            405,
        )
        response["Allow"] = "POST"
        return response
    user = request.user
    if not user.has_perm("selective_transfer.can_download_study"):
        return _refused(request, "You are not allowed to download studies.", 403)

    form = DownloadForm.from_post(request.POST)
    if not form.is_valid():
        return _refused(request, "The download cannot start:", 400, errors=form)
    params = form.cleaned_data
    study_uid: str = params["study_uid"]
    try:
        server = usable_server(user, "source", pk=params["source"], use="download from")
    except NodeNotUsable as err:
        return _refused(request, err.message, 404)
    pseudonym: str = params["pseudonym"]
    if not pseudonym and not user.has_perm("selective_transfer.can_transfer_unpseudonymized"):
        return _refused(
            request,
            "A pseudonym is required: you are not allowed to download unpseudonymized studies. "
            "Type a pseudonym in the Transfer part of the page, then press the download button "
            "again.",
            403,
        )

    pseudonymizer = None
    if pseudonym:
        try:
            # No job holds a secret for a download; one per request keeps the replaced UIDs
            # consistent within the archive and unlinkable to any other download.
            pseudonymizer = Pseudonymizer(pseudonym, secrets.token_urlsafe(32))
        except ValueError as err:
            return _refused(request, str(err), 400)

    operator = DicomOperator(server)
    try:
        selection = StudySelection(params["patient_id"], study_uid)
        study = find_study(operator, selection, pseudonymized=pseudonymizer is not None)
    except DicomError as err:
        return _pacs_error(request, server, study_uid, err)
    fetch = study.fetch
    if fetch is None:
        excluded = ", ".join(settings.EXCLUDE_MODALITIES)
        return _refused(
            request,
            "Nothing to download: the study holds only series of modalities left out "
            f"when pseudonymizing ({excluded}).",
            404,
        )

    fetcher = InstanceStream(
        operator,
        fetch,
        depth=QUEUE_SIZE,
        budget_bytes=QUEUE_BYTES,
        expected=study.counts,
    )
    modify = InstanceModifier(
        pseudonymizer, excluded_modalities=excluded_modalities(pseudonymizer is not None)
    )
    layout = StudyLayout(pseudonym or params["patient_id"], study.modalities)
    archive = _StudyArchive(fetcher, modify, layout)
    fetcher.start()
    try:
        # Waiting for the first instance keeps the status line open for the usual failures.
        first_entry = archive.first_entry()
    except (DicomError, OSError) as err:
        fetcher.stop()
        return _pacs_error(request, server, study_uid, _explained(operator, study_uid, params, err))
    except Exception as err:
        # Data the PACS sent that ADIT could not handle (an instance without UIDs, say): the
        # same answer as once the archive streams (error.txt), here as a page.
        fetcher.stop()
        logger.warning(
            "Download of study %s failed on its first instance", study_uid, exc_info=True
        )
        return _refused(
            request,
            f"Could not download the study from {server.name}: {readable_error(err)}",
            502,
        )
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
    content = async_chunks(chunks, fetcher) if isinstance(request, ASGIRequest) else chunks
    response = StreamingHttpResponse(content, content_type="application/zip")
    stem = f"study_{pseudonym or params['patient_id'] or archive.patient}"
    if archive.study_date:
        stem += f"_{archive.study_date}"
    response["Content-Disposition"] = _attachment(f"{folder_layout.sanitize_part(stem)}.zip")
    # Patient data must not linger in shared caches; and a buffering proxy would hold the
    # stream back until it is complete.
    response["Cache-Control"] = "no-store"
    response["X-Accel-Buffering"] = "no"
    return response


def _refused(
    request: HttpRequest, message: str, status: int, errors: forms.Form | None = None
) -> HttpResponse:
    """An ADIT page that says why the download did not start and leads back to the search."""
    context = {"message": message, "form": errors, "back_hint": BACK_HINT}
    return render(request, "selective_transfer/download_refused.html", context, status=status)


def _attachment(filename: str) -> str:
    """Content-Disposition for ``filename`` (sanitized already: no quotes, no backslashes)."""
    # Header values are Latin-1 at best: a patient ID with other letters goes in RFC 6266's
    # encoded form, next to an ASCII approximation for clients that do not read it.
    plain = filename.encode("ascii", "replace").decode("ascii").replace("?", "_")
    header = f'attachment; filename="{plain}"'
    if plain != filename:
        header += f"; filename*=UTF-8''{quote(filename)}"
    return header


def _pacs_error(
    request: HttpRequest, server: DicomServer, study_uid: str, error: BaseException
) -> HttpResponse:
    if isinstance(error, StudyNotFoundError):
        return _refused(request, f"{server.name} does not hold this study: {error}", 404)
    reason = readable_error(error)
    response = _refused(request, f"Could not download the study from {server.name}: {reason}", 502)
    # The PACS failed, not ADIT: a warning, instead of the error Django logs for a 5xx.
    log_response(
        "Download of study %s from %s failed: %s",
        study_uid,
        server.name,
        reason,
        response=response,
        request=request,
        level="warning",
    )
    return response


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
            return StudyNotFoundError(f"No study found with Study Instance UID {study_uid}.")
    except DicomError:
        pass  # the server cannot be asked either; the fetch's error says more
    return error


class _StudyArchive:
    """Turns the fetched instances into the entries of the study's ZIP archive."""

    def __init__(self, fetcher: InstanceStream, modify: InstanceModifier, layout: StudyLayout):
        self.fetcher = fetcher
        self.modify = modify
        self.layout = layout
        # Entries get the time of the download; DICOM dates may precede what ZIP can store.
        self._timestamp = time.localtime()[:6]

    def first_entry(self) -> tuple[str, bytes]:
        """Waits for the first instance and prepares its entry.

        Raises:
            DicomError: If the study cannot be fetched or holds nothing to download.
        """
        entry = self._next_entry()
        if entry is None and not self.fetcher.delivered:
            raise StudyNotFoundError(
                f"No study found with Study Instance UID {self.fetcher.study_uid}."
            )
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
                    message = f"Error during study download: {readable_error(err)}\n"
                    self._write(archive, ERROR_ENTRY, message.encode())
                else:
                    logger.info("Study download complete: %d instance(s).", written)
            yield sink.take()
        finally:
            self.fetcher.stop()

    @property
    def patient(self) -> str:
        return self.layout.patient

    @property
    def study_date(self) -> str:
        return self.layout.study_date

    def _next_entry(self) -> tuple[str, bytes] | None:
        while (dataset := self.fetcher.next_instance()) is not None:
            if self.modify(dataset):
                return self.layout.entry(dataset), encode_instance(dataset)
        return None

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
