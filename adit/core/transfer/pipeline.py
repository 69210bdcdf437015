"""Transfer of one study (or some of its series, or one instance) from a PACS to a server or
a folder: find -> stream -> modify -> store -> verify.

``transfer_study`` takes plain values (a ``TransferRequest``) and reports progress to the
control it is given, so anything can transfer a study: a task of any transfer job, a
partition of a mass transfer, an API call. ``TransferProcessor`` only builds the request
from its task and turns the result into the task's outcome.

Instances stream through a short pipeline: the source's fetch delivers them on one thread into
a bounded stream, and this thread modifies (pseudonymizes) each one and hands it to the
destination. Fetching and storing thus overlap, memory stays bounded whatever the study size,
and a cancel is noticed between two instances.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from django.conf import settings
from pydicom import Dataset

from adit.core import association_slots
from adit.core.dicom.errors import DicomError
from adit.core.dicom.instance_stream import InstanceStream
from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.selection import StudySelection
from adit.core.encryption import DecryptionError
from adit.core.jobs.processing import TaskLog, TaskOutcome, TaskProcessor
from adit.core.jobs.statuses import TaskStatus
from adit.core.models import DicomFolder, DicomServer, PseudonymConflict
from adit.core.transfer import folder_layout
from adit.core.transfer.destinations import Destination, ServerDestination, destination_for
from adit.core.transfer.folder_layout import StudyLayout
from adit.core.transfer.modify import InstanceModifier, SeriesKey
from adit.core.transfer.pseudonymizer import Pseudonymizer
from adit.core.transfer.study import (
    StudyToTransfer,
    excluded_modalities,
    find_study,
    left_out_text,
)

if TYPE_CHECKING:
    from adit.core.transfer.models import TransferJob, TransferTask


class TransferControl(Protocol):
    """Asked between two instances whether to go on, and told the progress (the engine's
    TaskControl is one)."""

    def check(self) -> None: ...

    def progress(self, done: int, total: int | None = None, force: bool = False) -> None: ...


@dataclass(frozen=True)
class TransferOptions:
    """How a study is changed and written on its way.

    Attributes:
        pseudonym: Not empty: the study is pseudonymized under this PatientID/PatientName.
        secret: The key of every pseudonymized value (the project's, to keep UIDs stable
            across jobs of a project).
        claim_pseudonym: Called with (PatientID at the source, pseudonym) before anything is
            stored; raises PseudonymConflict when the pair contradicts what was recorded.
        encrypt_archive: A folder destination gets one ZIP per study, encrypted with
            ``archive_password`` (which must then be given).
        job_folder: The folder inside a destination folder that the study goes below.
    """

    pseudonym: str = ""
    secret: str = ""
    shift_dates: bool = False
    claim_pseudonym: Callable[[str, str], None] | None = None
    trial_protocol_id: str = ""
    trial_protocol_name: str = ""
    encrypt_archive: bool = False
    archive_password: str = ""
    convert_to_nifti: bool = False
    job_folder: str = "adit"

    def pseudonymizer(self) -> Pseudonymizer | None:
        if not self.pseudonym:
            return None
        assert self.secret, "pseudonymized UIDs need a secret"
        return Pseudonymizer(
            self.pseudonym,
            self.secret,
            shift_dates=self.shift_dates,
            trial_protocol_id=self.trial_protocol_id,
            trial_protocol_name=self.trial_protocol_name,
        )


@dataclass(frozen=True)
class TransferRequest:
    """Transfer this (study, series or instance) from there to there, so."""

    source: DicomServer
    destination: DicomServer | DicomFolder
    selection: StudySelection
    options: TransferOptions = TransferOptions()


@dataclass
class TransferResult:
    study: StudyToTransfer
    transferred: int
    study_uid_at_destination: str  # "" when nothing was transferred

    @property
    def message(self) -> str:
        """The success message, naming what stayed behind on purpose."""
        message = "Transfer task completed successfully."
        if self.study.left_out:
            message += f" {left_out_text(self.study.left_out)}"
        return message


def transfer_study(
    request: TransferRequest,
    control: TransferControl,
    log: TaskLog,
    on_study_found: Callable[[StudyToTransfer], None] | None = None,
) -> TransferResult:
    """Finds the study at the source, streams what goes through the modification into the
    destination and checks that the destination holds what the source holds.

    Args:
        on_study_found: Told what the source holds once it was asked, before any instance
            moves (a task records the study's date and description with it).

    Raises:
        PseudonymConflict: The pseudonym contradicts what was recorded; nothing was stored.
        DicomError: The study could not be found, fetched, stored or verified.
        Whatever ``control.check`` raises to stop the transfer.
    """
    options = request.options
    source, selection = request.source, request.selection
    operator = DicomOperator(source)
    pseudonymizer = options.pseudonymizer()
    study = find_study(operator, selection, pseudonymized=pseudonymizer is not None, log=log)
    control.check()
    if on_study_found is not None:
        on_study_found(study)
    if pseudonymizer is not None:
        _claim_pseudonym(options, study, source)
    log.info(
        f"Transferring study {study.study_uid} of patient {study.patient_id} from "
        f"{source.name} to {request.destination.name}"
        + (f" as {options.pseudonym}" if options.pseudonym else "")
        + "."
    )
    control.progress(0, study.expected_instances, force=True)

    modify = InstanceModifier(
        pseudonymizer,
        excluded_modalities=excluded_modalities(pseudonymizer is not None),
        trial_protocol_id=options.trial_protocol_id,
        trial_protocol_name=options.trial_protocol_name,
    )
    # The source's own C-MOVE goes by study or series, not by instance.
    direct_to = (
        None if study.sop_uid else _direct_move_destination(source, request.destination, modify)
    )
    if direct_to is not None:
        moved = _move_directly(operator, study, direct_to, control, log)
        return TransferResult(study, moved, study.study_uid if moved else "")

    layout = StudyLayout(options.pseudonym or study.patient_id, study.modalities)
    destination = destination_for(
        request.destination,
        layout,
        log,
        job_folder=options.job_folder,
        encrypt_archive=options.encrypt_archive,
        archive_password=options.archive_password,
        convert_to_nifti=options.convert_to_nifti,
    )
    # The fetch and the store run at the same time: their association slots are taken
    # together, so that no transfer holds one while it waits for the other.
    with association_slots.reserved(_streaming_servers(source, request.destination)), destination:
        transferred = destination.consume(
            _modified_instances(operator, study, modify, control, destination)
        )
    control.progress(transferred, force=True)
    if transferred == 0:
        log.warning("The study has no instances to transfer.")
    destination.verify(log, modify.expected_at_destination(study.counts), source.name)
    log.info(f"{transferred} instance(s) transferred.")
    return TransferResult(study, transferred, modify.study_uid_at_destination)


def _streaming_servers(source: DicomServer, node: DicomServer | DicomFolder) -> list[DicomServer]:
    """The servers a study streams between over associations of ADIT: the source unless it
    fetches by WADO-RS, the destination if it stores by C-STORE (the same server twice for a
    transfer within one PACS)."""
    servers = []
    if source.supports_dimse and not source.dicomweb_wado_support:
        servers.append(source)
    if isinstance(node, DicomServer) and node.store_scp_support and node.supports_dimse:
        servers.append(node)
    return servers


def _claim_pseudonym(options: TransferOptions, study: StudyToTransfer, source: DicomServer):
    """Records the pseudonym for the patient the source has the study under, which may
    differ from the one asked for (a merged or renamed patient); before anything is stored."""
    if not study.patient_id:
        raise DicomError(
            f"The study {study.study_uid} has no PatientID at {source.name}, so ADIT cannot "
            f"tell whose pseudonym {options.pseudonym} would be; it is not transferred."
        )
    if options.claim_pseudonym is not None:
        options.claim_pseudonym(study.patient_id, options.pseudonym)


def _modified_instances(
    operator: DicomOperator,
    study: StudyToTransfer,
    modify: InstanceModifier,
    control: TransferControl,
    destination: Destination,
) -> Iterator[Dataset]:
    """Yields each fetched instance once modified; stops the fetch when the consumer (the
    destination) stops early, and re-raises a fetch failure here."""
    fetch = study.fetch
    if fetch is None:
        return
    stream = InstanceStream(
        operator,
        fetch,
        depth=settings.TRANSFER_PIPELINE_DEPTH,
        on_wait=control.check,  # a cancel is noticed even while the PACS is slow
        expected=study.counts,
    )
    stream.start()
    done = 0
    try:
        for dataset in stream:
            control.check()
            if modify(dataset):
                yield dataset
                done += 1
                control.progress(done)
    finally:
        stream.stop(wait=settings.DICOM_DIMSE_TIMEOUT + 5)


# -- straight from PACS to PACS -------------------------------------------------------------


def _direct_move_destination(
    source: DicomServer, node: DicomServer | DicomFolder, modify: InstanceModifier
) -> DicomServer | None:
    """The destination server, when the study may go there by the source's own C-MOVE:
    nothing is to be changed in the instances, and the source knows the destination."""
    if modify.changes_instances:
        return None
    if not (source.moves_to_destinations and source.supports_dimse):
        return None
    if not (source.study_root_move_support or source.patient_root_move_support):
        return None
    if not isinstance(node, DicomServer):
        return None
    if not (node.store_scp_support and node.supports_dimse):
        return None
    return node


def _move_directly(
    operator: DicomOperator,
    study: StudyToTransfer,
    destination: DicomServer,
    control: TransferControl,
    log: TaskLog,
) -> int:
    """The source C-MOVEs the study (or each chosen series) to the destination; the check
    afterwards compares the destination's counts per series with the source's."""
    log.info(
        f"{operator.server.name} moves the study straight to {destination.name} "
        f"({destination.ae_title}) by C-MOVE."
    )

    def list_at_source(key: SeriesKey) -> set[str]:
        return set(operator.expected_instances(key[0], key[1], key[2]))

    expected = {
        (study.patient_id, study.study_uid, uid): count for uid, count in study.counts.items()
    }
    moved_before = 0
    # One move for the whole study when it all goes, else one per chosen series.
    targets: list[str | None] = [None] if study.whole_study else list(study.counts)
    for series_uid in targets:

        def progress(moved: int, before: int = moved_before) -> None:
            control.check()
            control.progress(before + moved)

        moved_before += operator.move_to(
            destination.ae_title, study.patient_id, study.study_uid, series_uid, progress
        )
        control.check()
    control.progress(moved_before, force=True)
    ServerDestination(destination, log).verify(log, expected, operator.server.name, list_at_source)
    log.info(f"{moved_before} instance(s) transferred.")
    return moved_before


# -- the task of a transfer job ---------------------------------------------------------------


class TransferProcessor(TaskProcessor):
    """Transfers the study of any TransferTask, whatever app it belongs to."""

    task: TransferTask
    # Every instance passes through the worker (but for a direct C-MOVE; a task cannot know
    # before it runs).
    occupies_a_core = True

    def process(self) -> TaskOutcome:
        task = self.task
        try:
            result = transfer_study(
                self.transfer_request(), self.control, self.log, on_study_found=self._record_study
            )
        except PseudonymConflict as conflict:
            self.log.info(f"Refused: {conflict.message}")
            return TaskOutcome(TaskStatus.FAILURE, conflict.message)
        at_destination = result.study_uid_at_destination
        if at_destination and at_destination != task.study_uid:
            type(task).objects.filter(pk=task.pk).update(pseudonymized_study_uid=at_destination)
        if self.log.warnings:
            return TaskOutcome(TaskStatus.WARNING, self.log.warnings[-1])
        return TaskOutcome(TaskStatus.SUCCESS, result.message)

    def _record_study(self, study: StudyToTransfer) -> None:
        self.task.record_study(study.study_date, study.study_description, study.modalities)

    def transfer_request(self) -> TransferRequest:
        task = self.task
        job: TransferJob = task.job
        source = task.source.concrete()
        if not isinstance(source, DicomServer):
            raise DicomError(f"The source {source.name} is not a DICOM server.")
        destination = task.destination.concrete()
        selection = StudySelection(task.patient_id, task.study_uid, tuple(task.series_uids))
        return TransferRequest(
            source=source,
            destination=destination,
            selection=selection,
            options=TransferOptions(
                pseudonym=task.pseudonym,
                secret=job.secret,
                shift_dates=job.shift_dates,
                claim_pseudonym=job.claim_pseudonym,
                trial_protocol_id=job.trial_protocol_id,
                trial_protocol_name=job.trial_protocol_name,
                # Kept for a server too, which then says they apply to folders only.
                encrypt_archive=job.encrypt_archive,
                archive_password=_archive_password(job, destination),
                convert_to_nifti=job.convert_to_nifti,
                job_folder=folder_layout.job_folder_name(
                    job._meta.app_label, job.pk, job.created, job.owner.get_username()
                ),
            ),
        )


def _archive_password(job: TransferJob, destination: DicomServer | DicomFolder) -> str:
    """The job's ZIP password; never "" for a job that asked for encrypted ZIPs in a folder,
    because writing them without one would put the data in the open."""
    if not job.encrypt_archive or isinstance(destination, DicomServer):
        return ""
    try:
        password = job.archive_password
    except DecryptionError as err:
        message = f"The archive password of job {job.pk} cannot be decrypted. {err}"
        raise DicomError(message) from err
    if not password:
        raise DicomError(
            f"Job {job.pk} writes password-protected ZIPs, but its password was deleted when the "
            "job ended; start a new job with a password instead of running this one again."
        )
    return password
