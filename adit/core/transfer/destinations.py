"""Where a transfer task puts the instances: a DICOM server, or a folder (plain files, a
password-protected ZIP per study, or NIfTI files converted by dcm2niix).

Each destination consumes a stream of instances and holds at most one of them at a time.
Files are written under a temporary name and renamed when complete, so a task that runs again
after a crash replaces its earlier output instead of doubling it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom import Dataset

from adit.core.dicom.errors import DicomError
from adit.core.dicom.files import encode_instance, write_instance
from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.query import Level, Query, count_of
from adit.core.dicom.syntaxes import ConversionError, convert_to_explicit_little_endian
from adit.core.models import DicomFolder, DicomServer
from adit.core.transfer import folder_layout
from adit.core.transfer.archive import EncryptedZipWriter
from adit.core.transfer.folder_layout import StudyLayout
from adit.core.transfer.modify import SeriesKey, series_key
from adit.core.transfer.nifti import convert_series_to_nifti

if TYPE_CHECKING:
    from adit.core.jobs.processing import TaskLog

# dcm2niix makes no images of these (documents, key objects, presentation states).
NON_IMAGE_MODALITIES = frozenset({"SR", "KO", "PR", "DOC"})


class Destination:
    """Consumes the task's instances; used as a context manager around ``consume``."""

    def __enter__(self) -> Destination:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        return None

    def consume(self, instances: Iterable[Dataset]) -> int:
        """Takes every instance; returns how many it took."""
        raise NotImplementedError

    def verify(self, log: TaskLog, expected: dict[SeriesKey, int], source_name: str) -> None:
        """Checks afterwards that the destination holds what the source holds (``expected``
        instances per series, as named at the destination); raises DicomError if not.

        Files written to a folder are complete or absent (see ``write_instance``), and the
        fetch already compared what arrived with the source, so only servers are asked.
        """


def destination_for(
    node: DicomServer | DicomFolder,
    layout: StudyLayout,
    log: TaskLog,
    *,
    job_folder: str = "",
    encrypt_archive: bool = False,
    archive_password: str = "",
    convert_to_nifti: bool = False,
) -> Destination:
    """The destination for one study.

    Args:
        layout: Names the study's files below ``job_folder`` (folders only).
        job_folder: The folder of the job inside a destination folder.
        encrypt_archive: The study goes into one ZIP encrypted with ``archive_password``
            (folders only).
        convert_to_nifti: The study is converted with dcm2niix (folders only).
    """
    if isinstance(node, DicomServer):
        if encrypt_archive or convert_to_nifti:
            log.warning(
                "Archive password and NIfTI conversion apply to folder destinations only; "
                f"the study goes to {node.name} as DICOM."
            )
        return ServerDestination(node, log)
    root = Path(node.path)
    if encrypt_archive:
        return ZipDestination(root, job_folder, layout, archive_password)
    if convert_to_nifti:
        return NiftiDestination(root, job_folder, layout, log)
    return FolderDestination(root, job_folder, layout)


class ServerDestination(Destination):
    """C-STORE (one association for the stream) or STOW-RS, then a check by query that the
    server holds every instance the source holds.

    The check compares counts per series first (one C-FIND answer per series) and lists the
    instances of a series only when its count differs, to name exactly what is missing.
    """

    def __init__(self, server: DicomServer, log: TaskLog):
        self.server = server
        self.log = log
        self.operator = DicomOperator(server)
        self.sent: dict[SeriesKey, set[str]] = {}

    def consume(self, instances: Iterable[Dataset]) -> int:
        def recorded() -> Iterator[Dataset]:
            for dataset in instances:
                self.sent.setdefault(series_key(dataset), set()).add(str(dataset.SOPInstanceUID))
                yield dataset

        result = self.operator.store(recorded())
        for syntax, count in result.converted.items():
            self.log.info(
                f"{count} instance(s) in {syntax} went to {self.server.name} as Explicit VR "
                "Little Endian (decoded without loss): it does not accept them as they are."
            )
        if result.refused:
            shown = "; ".join(result.refused[:3])
            more = f" and {len(result.refused) - 3} more" if len(result.refused) > 3 else ""
            raise DicomError(
                f"{len(result.refused)} instance(s) could not be stored, the others were: "
                f"{shown}{more}."
            )
        return result.stored

    def verify(
        self,
        log: TaskLog,
        expected: dict[SeriesKey, int],
        source_name: str,
        list_source_uids: Callable[[SeriesKey], set[str]] | None = None,
    ) -> None:
        """See ``Destination.verify``. ``list_source_uids`` names the instances of a series
        that did not pass through ADIT (a direct C-MOVE) when some are missing."""
        server = self.server
        if not expected:
            return
        can_query = (
            server.study_root_find_support
            or server.patient_root_find_support
            or server.dicomweb_qido_support
        )
        if not can_query:
            log.warning(f"Could not check what arrived: {server.name} offers no C-FIND or QIDO-RS.")
            return
        held_counts = self._held_counts({(patient, study) for patient, study, _ in expected})
        total = sum(expected.values())
        missing_count = 0
        missing: list[str] = []
        for key, count in expected.items():
            if held_counts.get(key) == count:
                continue
            held = self._held_uids(key)
            known = self.sent.get(key)
            if known is None and list_source_uids is not None:
                known = list_source_uids(key)
            absent = sorted((known or set()) - held)
            if not absent and len(held) >= count:
                continue  # the server counts differently, but everything is there
            missing += absent
            missing_count += max(len(absent), count - len(held))
        if missing_count:
            shown = ", ".join(missing[:5]) or "their UIDs are unknown"
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise DicomError(
                f"{server.name} holds only {total - missing_count} of the {total} instance(s) "
                f"that {source_name} holds of the study; missing: {shown}{more}."
            )
        log.info(f"Checked: {server.name} holds all {total} instance(s) that {source_name} holds.")

    def _held_counts(self, studies: set[tuple[str, str]]) -> dict[SeriesKey, int]:
        """Instances per series as the server reports them (series it leaves uncounted are
        missing here and get checked instance by instance)."""
        counts: dict[SeriesKey, int] = {}
        for patient_id, study_uid in studies:
            query = Query.create(Level.SERIES, PatientID=patient_id, StudyInstanceUID=study_uid)
            for series in self.operator.find(query):
                count = count_of(series, "NumberOfSeriesRelatedInstances")
                if count is not None:
                    counts[(patient_id, study_uid, str(series.SeriesInstanceUID))] = count
        return counts

    def _held_uids(self, key: SeriesKey) -> set[str]:
        patient_id, study_uid, series_uid = key
        query = Query.create(
            Level.IMAGE,
            PatientID=patient_id,
            StudyInstanceUID=study_uid,
            SeriesInstanceUID=series_uid,
        )
        return {str(image.SOPInstanceUID) for image in self.operator.find(query)}


class _FolderWriter(Destination):
    """Writes below ``<root>/<job folder>`` in the layout's paths."""

    def __init__(self, root: Path, job_folder: str, layout: StudyLayout):
        self.root = root
        self.job_folder = job_folder
        self.layout = layout

    def study_path(self, first_instance: Dataset) -> Path:
        path = self.root.joinpath(self.job_folder, *self.layout.study_parts(first_instance))
        _check_inside(path, self.root)
        return path


class FolderDestination(_FolderWriter):
    def consume(self, instances: Iterable[Dataset]) -> int:
        count = 0
        for dataset in instances:
            patient, study, series, _ = self.layout.parts(dataset)
            path = folder_layout.instance_path(
                self.root, self.job_folder, patient, study, series, str(dataset.SOPInstanceUID)
            )
            write_instance(dataset, path)
            count += 1
        return count


class ZipDestination(_FolderWriter):
    """One AES-encrypted ZIP per study: <job folder>/<patient>/<study folder>.zip."""

    def __init__(self, root: Path, job_folder: str, layout: StudyLayout, password: str):
        super().__init__(root, job_folder, layout)
        assert password, "an archive without a password would put the data in the open"
        self.password = password
        self.writer: EncryptedZipWriter | None = None
        # The archive is opened with the first instance (it names the study folder) and
        # completed, or removed after a failure, when the destination's with-block ends.
        self.open_archive = ExitStack()

    def consume(self, instances: Iterable[Dataset]) -> int:
        count = 0
        for dataset in instances:
            if self.writer is None:
                path = self.study_path(dataset).with_suffix(".zip")
                self.writer = self.open_archive.enter_context(
                    EncryptedZipWriter(path, self.password)
                )
            _, study, series, file_name = self.layout.parts(dataset)
            self.writer.add(f"{study}/{series}/{file_name}", encode_instance(dataset))
            count += 1
        return count

    def __exit__(self, exc_type, exc, tb) -> None:
        self.open_archive.__exit__(exc_type, exc, tb)


class NiftiDestination(_FolderWriter):
    """Writes the instances to a scratch folder per series, then converts each image series
    with dcm2niix into the study folder."""

    def __init__(self, root: Path, job_folder: str, layout: StudyLayout, log: TaskLog):
        super().__init__(root, job_folder, layout)
        self.log = log
        self.scratch = tempfile.TemporaryDirectory(prefix="adit-nifti-")
        self.series: dict[str, tuple[Path, str, str]] = {}  # uid -> folder, name, modality
        self.output: Path | None = None

    def consume(self, instances: Iterable[Dataset]) -> int:
        count = 0
        for dataset in instances:
            if self.output is None:
                self.output = self.study_path(dataset)
            uid = str(dataset.SeriesInstanceUID)
            _, _, series_folder, file_name = self.layout.parts(dataset)
            if uid not in self.series:
                folder = Path(self.scratch.name) / str(len(self.series))
                self.series[uid] = (folder, series_folder, str(dataset.get("Modality", "")))
            folder = self.series[uid][0]
            try:
                # dcm2niix decodes fewer compressed syntaxes than pydicom (no 12-bit JPEG); its
                # scratch input is not what the user keeps, so it may as well be uncompressed.
                convert_to_explicit_little_endian(dataset)
            except ConversionError:
                pass  # dcm2niix may still manage, else it says why
            write_instance(dataset, folder / file_name)
            count += 1
        self._convert()
        return count

    def _convert(self) -> None:
        written = 0
        for uid, (folder, name, modality) in self.series.items():
            if modality in NON_IMAGE_MODALITIES:
                self.log.info(f"Series {uid} ({modality}) has no images to convert to NIfTI.")
                continue
            assert self.output is not None
            result = convert_series_to_nifti(folder, self.output, name)
            for warning in result.warnings:
                self.log.warning(f"Series {uid}: {warning}")
            written += len(result.files)
            self.log.info(f"Series {uid} converted to {len(result.files)} NIfTI/JSON file(s).")
        if self.series and not written:
            self.log.warning("NIfTI conversion skipped: no series could be converted.")

    def __exit__(self, exc_type, exc, tb) -> None:
        self.scratch.cleanup()


def _check_inside(path: Path, root: Path) -> None:
    if not path.resolve().is_relative_to(root.resolve()):
        raise folder_layout.UnsafePathError(f"{path} lies outside the destination folder {root}.")
