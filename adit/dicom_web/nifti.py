"""NIfTI over WADO-RS, as upstream's ``…/nifti`` endpoints serve it: the image series of a
study (or one series, or one instance) converted by dcm2niix with the core's converter, sent
as ``multipart/related; type="application/octet-stream"``, a part per file in the order JSON
sidecar, image (``.nii.gz``), ``.bval``, ``.bvec``, each named by its Content-Disposition.

Series are fetched one after the other, and each is converted as soon as it is complete, so
its files leave while the next series arrives. dcm2niix reads and writes files: a series'
DICOM files and its NIfTI files wait in a scratch folder until they are sent, then go; only
one series at a time is there. Series without images (SR, KO, PR, DOC) are not fetched at
all; a series dcm2niix cannot convert is left out with a warning in the log, as upstream does.
The query parameters (``pseudonym`` …) and the failures are those of every retrieval (see
``wado``).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from drf_spectacular.utils import extend_schema_view
from pydicom import Dataset
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response

from adit.core.dicom import spool
from adit.core.dicom.files import write_instance
from adit.core.dicom.instance_stream import InstanceStream
from adit.core.dicom.selection import StudySelection
from adit.core.dicom.syntaxes import ConversionError, convert_to_explicit_little_endian
from adit.core.models import DicomServer
from adit.core.transfer import folder_layout
from adit.core.transfer.destinations import NON_IMAGE_MODALITIES
from adit.core.transfer.modify import InstanceModifier
from adit.core.transfer.nifti import (
    Dcm2niixNotFoundError,
    NiftiConversionError,
    convert_series_to_nifti,
)
from adit.core.transfer.study import StudyToTransfer

from . import wado
from .api import NotAcceptable
from .schema import CHANGES, dicomweb_operation
from .wado import media_ranges

logger = logging.getLogger(__name__)

OCTET_STREAM = "application/octet-stream"
_ANY_MEDIA = {"*/*", "multipart/*"}
_FILE_PART_TYPES = {OCTET_STREAM, "application/*", "*/*"}
# Parts of one volume in upstream's order; dcm2niix names them alike but for the extension.
_FILE_ORDER = (".json", ".nii.gz", ".nii", ".bval", ".bvec")


def check_files_accepted(header: str) -> None:
    """Raises NotAcceptable unless the client accepts a multipart body of files."""
    if not header.strip():
        return
    for media in media_ranges(header):
        if media.media_type in _ANY_MEDIA:
            return
        part_type = media.parameters.get("type", OCTET_STREAM).lower()
        if media.media_type == "multipart/related" and part_type in _FILE_PART_TYPES:
            return
    raise NotAcceptable(
        f'NIfTI files are sent as multipart/related; type="{OCTET_STREAM}", which the request '
        "does not accept."
    )


class Unconvertible(APIException):
    status_code = 422
    default_detail = "The data cannot be converted to NIfTI."


class NiftiFiles(wado.MultipartBody):
    """The files dcm2niix makes of each series, a part per file, series after series."""

    def __init__(self, stream: InstanceStream, modify: InstanceModifier, what: str):
        super().__init__(stream, modify, what, OCTET_STREAM)
        self.scratch = Path(tempfile.mkdtemp(prefix="adit-nifti-"))
        self.series_uid: str | None = None  # the series being collected
        self.series_name = ""
        self.converted = 0  # series that gave files
        self.problems: list[str] = []

    def first(self) -> bytes | None:
        """Waits for the files of the first series dcm2niix converts (so that a missing
        dcm2niix is an HTTP error); None if no series gives any."""
        while (dataset := self._next_instance()) is not None:
            chunk = self.piece(dataset, first=True)
            if chunk:
                return chunk
        return self._convert_series() or None

    def piece(self, dataset: Dataset, *, first: bool) -> bytes:
        """The files of the series before ``dataset``'s when ``dataset`` begins another one
        (else nothing yet): the instance itself waits in the scratch folder."""
        uid = str(dataset.SeriesInstanceUID)
        files = b""
        if uid != self.series_uid:
            files = self._convert_series()
            self.series_uid = uid
            self.series_name = folder_layout.series_folder_of(dataset)
        try:
            # dcm2niix decodes fewer compressed syntaxes than pydicom; its input is scratch.
            convert_to_explicit_little_endian(dataset)
        except ConversionError:
            pass  # dcm2niix may still manage, else it says why
        write_instance(dataset, self.scratch / "dicom" / folder_layout.instance_file_name(dataset))
        spool.release(dataset)
        return files

    def ending(self) -> bytes:
        return self._convert_series() + super().ending()

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def nothing_sent(self, server: DicomServer) -> APIException:
        if not self.problems:
            return super().nothing_sent(server)
        return Unconvertible(
            f"No NIfTI file could be made of the {self.what}: {' '.join(self.problems)}"
        )

    def _convert_series(self) -> bytes:
        """The parts of the files of the series collected so far; empties the scratch folder.

        Raises:
            Dcm2niixNotFoundError: dcm2niix is not installed (no series could be converted).
        """
        if self.series_uid is None:
            return b""
        uid, self.series_uid = self.series_uid, None
        dicom, output = self.scratch / "dicom", self.scratch / "nifti"
        try:
            result = convert_series_to_nifti(dicom, output, self.series_name)
        except NiftiConversionError as err:
            if isinstance(err, Dcm2niixNotFoundError):
                raise  # a deployment problem, not one of this series
            logger.warning("NIfTI of %s: series %s left out: %s", self.what, uid, err)
            self.problems.append(str(err))
            result = None
        try:
            if result is None:
                return b""
            for warning in result.warnings:
                logger.info("NIfTI of %s, series %s: %s", self.what, uid, warning)
            if not result.files:
                self.problems.extend(result.warnings)
                return b""
            self.converted += 1
            return b"".join(self._part(path) for path in sorted(result.files, key=_file_order))
        finally:
            shutil.rmtree(dicom, ignore_errors=True)
            shutil.rmtree(output, ignore_errors=True)

    def _part(self, path: Path) -> bytes:
        data = path.read_bytes()
        head = (
            f"--{self.boundary}\r\nContent-Type: {OCTET_STREAM}\r\n"
            f'Content-Disposition: attachment; filename="{path.name}"\r\n'
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode("ascii")  # dcm2niix's names are sanitized to ASCII (see core nifti)
        return b"".join((head, data, b"\r\n"))


def _file_order(path: Path) -> tuple[str, int]:
    for rank, extension in enumerate(_FILE_ORDER):
        if path.name.endswith(extension):
            return path.name.removesuffix(extension), rank
    return path.name, len(_FILE_ORDER)


@extend_schema_view(
    get=dicomweb_operation(
        "NIfTI files (dcm2niix)", 'multipart/related; type="application/octet-stream"', CHANGES
    )
)
class NiftiRetrieval(wado.Retrieval):
    nothing_to_send = (
        "Nothing to convert to NIfTI: no series with images (series of "
        f"{', '.join(sorted(NON_IMAGE_MODALITIES))} hold none, and pseudonymized retrievals "
        "leave out series of some modalities)."
    )

    def fetch_of(self, study: StudyToTransfer) -> StudySelection | None:
        """The image series, one after the other: each complete before the next begins."""
        series = tuple(
            str(item.SeriesInstanceUID)
            for item in study.series
            if str(item.get("Modality", "")) not in NON_IMAGE_MODALITIES
            and str(item.SeriesInstanceUID) in study.counts
        )
        if not series:
            return None
        return StudySelection(study.patient_id, study.study_uid, series, study.sop_uid)

    def failed_before_start(
        self, request: Request, server: DicomServer, what: str, error: Exception
    ) -> Response:
        if isinstance(error, Dcm2niixNotFoundError):
            logger.error("NIfTI conversion is not available: %s", error)
            return Response(
                {"detail": f"This ADIT cannot convert to NIfTI at the moment: {error}"},
                status=503,
            )
        return super().failed_before_start(request, server, what, error)

    def negotiate(self, accept: str) -> frozenset[str]:
        check_files_accepted(accept)
        return frozenset()

    def body(self, stream, modify, what, negotiated) -> wado.StreamedBody:
        return NiftiFiles(stream, modify, what)
