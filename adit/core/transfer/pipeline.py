"""Transfer of one study (or some of its series) from a PACS to a server or a folder.

Instances stream through a short pipeline: the source's fetch delivers them on one thread into
a bounded queue, and this thread modifies (pseudonymizes) each one and hands it to the
destination. Fetching and storing thus overlap, memory stays bounded by the queue whatever the
study size, and a cancel is noticed between two instances.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.conf import settings
from pydicom import Dataset

from adit.core.dicom.errors import DicomError
from adit.core.dicom.instance_stream import InstanceStream
from adit.core.dicom.operator import DicomOperator, SeriesCounts
from adit.core.jobs.processing import TaskOutcome, TaskProcessor
from adit.core.jobs.statuses import TaskStatus
from adit.core.models import DicomServer, PseudonymConflict
from adit.core.transfer.destinations import (
    Destination,
    SeriesKey,
    ServerDestination,
    destination_for,
    series_key,
)
from adit.core.transfer.pseudonymizer import Pseudonymizer

if TYPE_CHECKING:
    from adit.core.transfer.models import TransferJob, TransferTask


@dataclass
class StudyToTransfer:
    """What the source PACS says about the study, and which of its series go."""

    patient_id: str
    study_uid: str
    study_date: str
    study_time: str
    modalities: list[str]
    series: list[Dataset]  # those that go
    whole_study: bool  # every series goes: one fetch for the study
    # SeriesInstanceUID -> instances the source holds, for the series that go.
    counts: SeriesCounts
    # Modality -> instances the source holds that stay behind (excluded when pseudonymizing).
    left_out: dict[str, int] = field(default_factory=dict)
    description: str = ""

    @property
    def expected_instances(self) -> int:
        return sum(self.counts.values())

    @property
    def series_uids(self) -> list[str] | None:
        """The series to fetch one by one; None: the whole study in one fetch."""
        if self.whole_study:
            return None
        return [str(series.SeriesInstanceUID) for series in self.series]


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
        task.record_study(study.study_date, study.description, study.modalities)
        if pseudonymizer is not None:
            try:
                self._claim_pseudonym(job, study, source)
            except PseudonymConflict as conflict:
                self.log.info(f"Refused: {conflict.message}")
                return TaskOutcome(TaskStatus.FAILURE, conflict.message)
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
        destination.verify(self.log, modify.expected_at_destination(study.counts), source.name)
        self.log.info(f"{transferred} instance(s) transferred.")
        return self._outcome(study)

    def _outcome(self, study: StudyToTransfer) -> TaskOutcome:
        if self.log.warnings:
            return TaskOutcome(TaskStatus.WARNING, self.log.warnings[-1])
        message = "Transfer task completed successfully."
        if study.left_out:
            message += f" {_left_out_text(study.left_out)}"
        return TaskOutcome(TaskStatus.SUCCESS, message)

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

        def list_at_source(key: SeriesKey) -> set[str]:
            return set(operator.expected_instances(key[0], key[1], key[2]))

        expected = {
            (study.patient_id, study.study_uid, uid): count for uid, count in study.counts.items()
        }
        moved_before = 0
        # One move for the whole study when it all goes, else one per chosen series.
        targets = [None] if study.whole_study else [str(s.SeriesInstanceUID) for s in series_list]
        for series_uid in targets:

            def progress(moved: int, before: int = moved_before) -> None:
                self.control.check()
                self.control.progress(before + moved)

            moved_before += operator.move_to(
                destination.ae_title, study.patient_id, study.study_uid, series_uid, progress
            )
            self.control.check()
        self.control.progress(moved_before, force=True)
        ServerDestination(destination, self.log).verify(
            self.log, expected, operator.server.name, list_at_source
        )
        self.log.info(f"{moved_before} instance(s) transferred.")
        return self._outcome(study)

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

    def _claim_pseudonym(self, job: TransferJob, study: StudyToTransfer, source: DicomServer):
        """Records the pseudonym for the patient the source has the study under, which may
        differ from the task's (a merged or renamed patient); before anything is stored."""
        if not study.patient_id:
            raise DicomError(
                f"The study {study.study_uid} has no PatientID at {source.name}, so ADIT cannot "
                f"tell whose pseudonym {self.task.pseudonym} would be; it is not transferred."
            )
        job.claim_pseudonym(study.patient_id, self.task.pseudonym)

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
        all_series = operator.find_counted_series(patient_id, task.study_uid)
        by_uid = {str(item.SeriesInstanceUID): item for item in all_series}
        chosen = all_series
        if task.series_uids:
            missing = [uid for uid in task.series_uids if uid not in by_uid]
            if missing:
                raise DicomError(f"No series found with Series Instance UID {', '.join(missing)}.")
            chosen = [by_uid[uid] for uid in task.series_uids]
        kept = [item for item in chosen if str(item.get("Modality", "")) not in excluded]
        left_out: dict[str, int] = {}
        for item in chosen:
            if item not in kept:
                modality = str(item.get("Modality", ""))
                count = int(item.NumberOfSeriesRelatedInstances)
                left_out[modality] = left_out.get(modality, 0) + count
                self.log.info(
                    f"Series {item.SeriesInstanceUID} ({modality}, {count} instance(s)) left "
                    "out: its modality is excluded when pseudonymizing."
                )
        return StudyToTransfer(
            patient_id=patient_id,
            study_uid=task.study_uid,
            study_date=str(found.get("StudyDate", "")),
            study_time=str(found.get("StudyTime", "")),
            modalities=sorted({str(item.get("Modality", "")) for item in kept} - {""}),
            series=kept,
            whole_study=len(kept) == len(all_series),
            counts={
                str(item.SeriesInstanceUID): int(item.NumberOfSeriesRelatedInstances)
                for item in kept
            },
            left_out=left_out,
            description=str(found.get("StudyDescription", "")),
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
        stream = InstanceStream(
            operator,
            study.patient_id,
            study.study_uid,
            study.series_uids,
            depth=settings.TRANSFER_PIPELINE_DEPTH,
            on_wait=self.control.check,  # a cancel is noticed even while the PACS is slow
            expected=study.counts,
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
    """Pseudonymizes and stamps one instance; says whether it goes to the destination.

    It remembers where each of the source's series lands (pseudonymization gives it new UIDs)
    and what it left out, so the check at the destination can compare with the source.
    """

    def __init__(self, task: TransferTask, job: TransferJob, pseudonymizer: Pseudonymizer | None):
        self.pseudonymizer = pseudonymizer
        self.excluded = set(settings.EXCLUDE_MODALITIES) if pseudonymizer else set()
        self.trial_protocol_id = job.trial_protocol_id
        self.trial_protocol_name = job.trial_protocol_name
        self.study_uid_at_destination = ""
        self.series_at_destination: dict[str, SeriesKey] = {}
        self.dropped: dict[str, int] = {}  # source series UID -> instances left out

    def __call__(self, dataset: Dataset) -> bool:
        source_series = str(dataset.get("SeriesInstanceUID", ""))
        if str(dataset.get("Modality", "")) in self.excluded:
            # The series' own Modality disagreed with its instances'.
            self.dropped[source_series] = self.dropped.get(source_series, 0) + 1
            return False
        if self.pseudonymizer is not None:
            self.pseudonymizer.pseudonymize(dataset)
        else:
            if self.trial_protocol_id:
                dataset.ClinicalTrialProtocolID = self.trial_protocol_id
            if self.trial_protocol_name:
                dataset.ClinicalTrialProtocolName = self.trial_protocol_name
        self.study_uid_at_destination = str(dataset.StudyInstanceUID)
        if source_series not in self.series_at_destination:
            self.series_at_destination[source_series] = series_key(dataset)
        return True

    def expected_at_destination(self, counts: SeriesCounts) -> dict[SeriesKey, int]:
        """How many instances each series must have at the destination: as many as the source
        holds, less those left out on purpose."""
        expected: dict[SeriesKey, int] = {}
        for uid, count in counts.items():
            key = self.series_at_destination.get(uid)
            if key is not None:
                expected[key] = count - self.dropped.get(uid, 0)
        return expected


def _left_out_text(left_out: dict[str, int]) -> str:
    parts = ", ".join(f"{count} {modality}" for modality, count in sorted(left_out.items()))
    return (
        f"Left out: {parts} instance(s), as the modalities {', '.join(sorted(left_out))} are "
        "excluded when pseudonymizing (setting EXCLUDE_MODALITIES)."
    )
