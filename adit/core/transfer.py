"""Transfer of one study (or some of its series) from a PACS to a server or a folder.

Instances stream through a short pipeline: the source's fetch delivers them on one thread into
a bounded queue, and this thread modifies (pseudonymizes) each one and hands it to the
destination. Fetching and storing thus overlap, memory stays bounded by the queue whatever the
study size, and a cancel is noticed between two instances.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from pydicom import Dataset

from .destinations import Destination, ServerDestination, destination_for
from .dicom.errors import DicomError
from .dicom.instance_stream import InstanceStream
from .dicom.operator import DicomOperator
from .dicom.query import as_list
from .models import DicomServer
from .processing import TaskOutcome, TaskProcessor
from .pseudonymizer import Pseudonymizer
from .statuses import TaskStatus

if TYPE_CHECKING:
    from .models import TransferJob, TransferTask


@dataclass
class StudyToTransfer:
    """What the source PACS says about the study, and which of its series go."""

    patient_id: str
    study_uid: str
    study_date: str
    study_time: str
    modalities: list[str]
    series: list[Dataset] | None  # None: the whole study in one fetch
    expected_instances: int | None


class TransferProcessor(TaskProcessor):
    """Fetch -> modify -> store for every TransferTask, whatever app it belongs to."""

    task: TransferTask

    def process(self) -> TaskOutcome:
        task = self.task
        job: TransferJob = task.job
        source = task.source.concrete()
        if not isinstance(source, DicomServer):
            raise DicomError(f"The source {source.name} is not a DICOM server.")
        operator = DicomOperator(source)
        pseudonymizer = self._pseudonymizer(job)
        study = self._find_study(operator, exclude=bool(pseudonymizer))
        self.log.info(
            f"Transferring study {study.study_uid} of patient {study.patient_id} from "
            f"{source.name} to {task.destination.name}"
            + (f" as {task.pseudonym}" if task.pseudonym else "")
            + "."
        )
        self.control.progress(0, study.expected_instances, force=True)

        direct_to = self._direct_move_destination(source, job, pseudonymizer)
        if direct_to is not None:
            return self._move_directly(operator, study, direct_to)

        destination = destination_for(task, study, self.log)
        modify = _Modifier(task, job, pseudonymizer)
        with destination:
            transferred = destination.consume(
                self._modified_instances(operator, study, modify, destination)
            )
        self.control.progress(transferred, force=True)
        if modify.study_uid_at_destination and modify.study_uid_at_destination != task.study_uid:
            type(task).objects.filter(pk=task.pk).update(
                pseudonymized_study_uid=modify.study_uid_at_destination
            )
        if transferred == 0:
            self.log.warning("The study has no instances to transfer.")
        destination.verify(self.log)
        self.log.info(f"{transferred} instance(s) transferred.")
        return self._outcome()

    def _outcome(self) -> TaskOutcome:
        if self.log.warnings:
            return TaskOutcome(TaskStatus.WARNING, self.log.warnings[-1])
        return TaskOutcome(TaskStatus.SUCCESS, "Transfer task completed successfully.")

    # -- straight from PACS to PACS ---------------------------------------------------------

    def _direct_move_destination(
        self, source: DicomServer, job: TransferJob, pseudonymizer: Pseudonymizer | None
    ) -> DicomServer | None:
        """The destination server, when the study may go there by the source's own C-MOVE:
        nothing is to be changed in the instances, and the source knows the destination."""
        if pseudonymizer or job.trial_protocol_id or job.trial_protocol_name:
            return None
        if not (source.moves_to_destinations and source.supports_dimse):
            return None
        if not (source.study_root_move_support or source.patient_root_move_support):
            return None
        destination = self.task.destination.concrete()
        if not isinstance(destination, DicomServer):
            return None
        if not (destination.store_scp_support and destination.supports_dimse):
            return None
        return destination

    def _move_directly(
        self, operator: DicomOperator, study: StudyToTransfer, destination: DicomServer
    ) -> TaskOutcome:
        """The source C-MOVEs the study (or each chosen series) to the destination; the check
        afterwards compares the destination's counts per series with the source's."""
        self.log.info(
            f"{operator.server.name} moves the study straight to {destination.name} "
            f"({destination.ae_title}) by C-MOVE."
        )
        series_list = study.series
        if series_list is None:
            series_list = list(operator.find_series(study.study_uid))
        check = ServerDestination(destination)

        def list_at_source(key: tuple[str, str, str]) -> set[str]:
            return set(operator.expected_instances(key[0], key[1], key[2]))

        for series in series_list:
            key = (study.patient_id, study.study_uid, str(series.SeriesInstanceUID))
            count = series.get("NumberOfSeriesRelatedInstances")
            if count in (None, ""):  # the source does not count: list what must arrive
                count = len(list_at_source(key))
            check.expect_moved(key, int(count), list_at_source)

        moved_before = 0
        # One move for the whole study when it all goes, else one per chosen series.
        targets = (
            [None] if study.series is None else [str(s.SeriesInstanceUID) for s in series_list]
        )
        for series_uid in targets:

            def progress(moved: int, before: int = moved_before) -> None:
                self.control.check()
                self.control.progress(before + moved)

            moved_before += operator.move_to(
                destination.ae_title, study.patient_id, study.study_uid, series_uid, progress
            )
            self.control.check()
        self.control.progress(moved_before, force=True)
        check.verify(self.log)
        self.log.info(f"{moved_before} instance(s) transferred.")
        return self._outcome()

    # -- what to fetch ----------------------------------------------------------------------

    def _pseudonymizer(self, job: TransferJob) -> Pseudonymizer | None:
        if not self.task.pseudonym:
            return None
        return Pseudonymizer(
            self.task.pseudonym,
            job.secret,
            shift_dates=job.shift_dates,
            trial_protocol_id=job.trial_protocol_id,
            trial_protocol_name=job.trial_protocol_name,
        )

    def _find_study(self, operator: DicomOperator, exclude: bool) -> StudyToTransfer:
        task = self.task
        studies = list(
            operator.find_studies(PatientID=task.patient_id, StudyInstanceUID=task.study_uid)
            if task.patient_id
            else []
        )
        if not studies:  # the patient may have been merged or renamed since
            studies = list(operator.find_studies(StudyInstanceUID=task.study_uid))
        if not studies:
            raise DicomError(f"No study found with Study Instance UID {task.study_uid}.")
        if len(studies) > 1:
            raise DicomError(f"Multiple studies found with Study Instance UID {task.study_uid}.")
        found = studies[0]
        patient_id = str(found.get("PatientID", ""))
        if task.patient_id and patient_id != task.patient_id:
            self.log.warning(
                f"Mismatching patient IDs: the task names {task.patient_id}, "
                f"{operator.server.name} has the study under {patient_id}."
            )
        self.control.check()

        excluded = set(settings.EXCLUDE_MODALITIES) if exclude else set()
        series: list[Dataset] | None = None
        if task.series_uids or excluded:
            all_series = list(operator.find_series(task.study_uid))
            by_uid = {str(item.SeriesInstanceUID): item for item in all_series}
            if task.series_uids:
                missing = [uid for uid in task.series_uids if uid not in by_uid]
                if missing:
                    raise DicomError(
                        f"No series found with Series Instance UID {', '.join(missing)}."
                    )
                series = [by_uid[uid] for uid in task.series_uids]
            else:
                series = all_series
            kept = [item for item in series if str(item.get("Modality", "")) not in excluded]
            for item in series:
                if item not in kept:
                    self.log.info(
                        f"Series {item.SeriesInstanceUID} ({item.get('Modality')}) left out: "
                        "its modality is excluded when pseudonymizing."
                    )
            series = kept
            modalities = sorted({str(item.get("Modality", "")) for item in series} - {""})
            counts = [item.get("NumberOfSeriesRelatedInstances") for item in series]
            expected = sum(int(count) for count in counts) if None not in counts else None
        else:
            modalities = as_list(found.get("ModalitiesInStudy"))
            count = found.get("NumberOfStudyRelatedInstances")
            expected = int(count) if count not in (None, "") else None

        return StudyToTransfer(
            patient_id=patient_id,
            study_uid=task.study_uid,
            study_date=str(found.get("StudyDate", "")),
            study_time=str(found.get("StudyTime", "")),
            modalities=modalities,
            series=series,
            expected_instances=expected,
        )

    # -- the pipeline -----------------------------------------------------------------------

    def _modified_instances(
        self,
        operator: DicomOperator,
        study: StudyToTransfer,
        modify: _Modifier,
        destination: Destination,
    ) -> Iterator[Dataset]:
        """Yields each fetched instance once modified; stops the fetch when the consumer (the
        destination) stops early, and re-raises a fetch failure here."""
        series_uids = None
        if study.series is not None:
            series_uids = [str(series.SeriesInstanceUID) for series in study.series]
        stream = InstanceStream(
            operator,
            study.patient_id,
            study.study_uid,
            series_uids,
            depth=settings.TRANSFER_PIPELINE_DEPTH,
            on_wait=self.control.check,  # a cancel is noticed even while the PACS is slow
        )
        stream.start()
        done = 0
        try:
            for dataset in stream:
                self.control.check()
                if modify(dataset):
                    yield dataset
                    done += 1
                    self.control.progress(done)
        finally:
            stream.stop(wait=settings.DICOM_DIMSE_TIMEOUT + 5)


class _Modifier:
    """Pseudonymizes and stamps one instance; says whether it goes to the destination."""

    def __init__(self, task: TransferTask, job: TransferJob, pseudonymizer: Pseudonymizer | None):
        self.pseudonymizer = pseudonymizer
        self.excluded = set(settings.EXCLUDE_MODALITIES) if pseudonymizer else set()
        self.trial_protocol_id = job.trial_protocol_id
        self.trial_protocol_name = job.trial_protocol_name
        self.study_uid_at_destination = ""

    def __call__(self, dataset: Dataset) -> bool:
        if str(dataset.get("Modality", "")) in self.excluded:
            return False
        if self.pseudonymizer is not None:
            self.pseudonymizer.pseudonymize(dataset)
        else:
            if self.trial_protocol_id:
                dataset.ClinicalTrialProtocolID = self.trial_protocol_id
            if self.trial_protocol_name:
                dataset.ClinicalTrialProtocolName = self.trial_protocol_name
        self.study_uid_at_destination = str(dataset.StudyInstanceUID)
        return True
